"""Per-request plumbing: request ids, bearer-token auth, metrics and one JSON access line."""

import hmac
import logging
import os
import re
import time
import uuid

from flask import Flask, Response, g, request

from service.errors import UnauthorizedError
from service.logs import ACCESS
from service.web import context

REQUEST_ID = "X-Request-ID"
SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
OPEN_PREFIXES = ("/v2/health/",)  # probes stay open even when a token is required
PROTECTED_PREFIXES = ("/v1/", "/v2")
KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}  # a bounded label

access_log = logging.getLogger(ACCESS)


def request_id() -> str:
    """The caller's X-Request-ID if it is a short plain token, else a new one."""
    given = request.headers.get(REQUEST_ID, "")
    return given if SAFE_REQUEST_ID.match(given) else uuid.uuid4().hex


def needs_token(path: str) -> bool:
    return path.startswith(PROTECTED_PREFIXES) and not path.startswith(OPEN_PREFIXES)


def check_token(expected: str) -> None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        raise UnauthorizedError("a valid 'Authorization: Bearer <token>' header is required")


def register(app: Flask) -> None:
    worker = str(os.getpid())
    token = app.extensions["linescore"]["settings"].api_token

    @app.before_request
    def start() -> None:
        g.started = time.perf_counter()
        g.request_id = request_id()
        if token is not None and needs_token(request.path):
            check_token(token.get_secret_value())

    @app.after_request
    def finish(response: Response) -> Response:
        seconds = time.perf_counter() - g.started
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        method = request.method if request.method in KNOWN_METHODS else "OTHER"
        context.telemetry().observe_request(endpoint, method, response.status_code, seconds)
        response.headers[REQUEST_ID] = g.request_id
        response.headers["X-Linescore-Worker"] = worker  # which worker answered, for operators
        access_log.info(
            "%s %s %d",
            request.method,
            request.path,
            response.status_code,
            extra={
                "fields": {
                    "request_id": g.request_id,
                    "method": request.method,
                    "path": request.path,
                    "endpoint": endpoint,
                    "status": response.status_code,
                    "duration_ms": round(seconds * 1000, 3),
                    "bytes_in": request.content_length or 0,
                    "bytes_out": response.calculate_content_length() or 0,
                    "remote_addr": request.remote_addr,
                    "user_agent": request.user_agent.string,
                    "worker": worker,
                }
            },
        )
        return response
