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
    settings = app.extensions["linescore"]["settings"]
    token = settings.api_token
    telemetry = app.extensions["linescore"]["telemetry"]  # looked up once, not per request
    log_access = settings.access_log

    @app.before_request
    def start() -> None:
        g.started = time.perf_counter()
        g.request_id = request_id()
        if token is not None and needs_token(request.path):
            check_token(token.get_secret_value())

    @app.after_request
    def finish(response: Response) -> Response:
        seconds = time.perf_counter() - g.started
        served = request._get_current_object()  # one context lookup, not one per field
        rule, method, status = served.url_rule, served.method, response.status_code
        endpoint = rule.rule if rule else "unmatched"
        telemetry.observe_request(
            endpoint, method if method in KNOWN_METHODS else "OTHER", status, seconds
        )
        headers, request_id = response.headers, g.request_id
        headers[REQUEST_ID] = request_id
        headers["X-Linescore-Worker"] = worker  # which worker answered, for operators
        if log_access and access_log.isEnabledFor(logging.INFO):
            path = served.path
            fields = {
                "request_id": request_id,
                "method": method,
                "path": path,
                "endpoint": endpoint,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "bytes_in": served.content_length or 0,
                "bytes_out": response.calculate_content_length() or 0,
                "remote_addr": served.remote_addr,
                "user_agent": served.environ.get("HTTP_USER_AGENT", ""),
                "worker": worker,
            }
            # handle(makeRecord()) is what info() does, less its walk up the stack for the
            # caller's file and line, which no access line shows.
            access_log.handle(
                access_log.makeRecord(
                    ACCESS,
                    logging.INFO,
                    __file__,
                    0,
                    "%s %s %d",
                    (method, path, status),
                    None,
                    extra={"fields": fields},
                )
            )
        return response
