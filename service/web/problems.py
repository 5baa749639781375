"""Every error leaves as RFC 9457 ``application/problem+json``, whatever raised it."""

import logging

from flask import Flask, Response, g, request
from werkzeug.exceptions import ClientDisconnected, HTTPException, MethodNotAllowed

from service.codec import encode
from service.errors import LinescoreError, RequestTimeoutError

PROBLEM = "application/problem+json"
log = logging.getLogger(__name__)


OIP_PREFIX = "/v2"


def problem_response(
    problem: dict, headers: tuple[tuple[str, str], ...] | dict[str, str] | None = None
) -> Response:
    problem = {**problem, "instance": request.path}
    if "request_id" in g:
        problem["request_id"] = g.request_id
    if request.path.startswith(OIP_PREFIX):  # Open Inference Protocol clients show only `error`
        problem["error"] = problem["detail"]
    return Response(encode(problem), status=problem["status"], mimetype=PROBLEM, headers=headers)


def register(app: Flask) -> None:
    @app.errorhandler(LinescoreError)
    def linescore_error(error: LinescoreError) -> Response:
        return problem_response(error.problem(), error.headers)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        problem = {
            "type": "about:blank",
            "title": error.name,
            "status": error.code,
            "detail": error.description,
        }
        if error.code == 413:
            problem["pointer"] = "/"
        allow = None
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            allow = {"Allow": ", ".join(error.valid_methods)}
        return problem_response(problem, allow)

    @app.errorhandler(ClientDisconnected)
    def body_cut_short(error: ClientDisconnected) -> Response:
        """A body that stopped arriving: a client slower than the socket timeout gets a 408."""
        if isinstance(error.__context__, TimeoutError):
            late = RequestTimeoutError("the request body stopped arriving", pointer="/")
            return problem_response(late.problem())
        return http_error(error)

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(
            {
                "type": "about:blank",
                "title": "Internal error",
                "status": 500,
                "detail": "an unexpected error occurred; it has been logged",
            }
        )
