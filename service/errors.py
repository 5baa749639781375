"""The one error type of linescore: every failure carries an HTTP status and the field at fault.

``problem()`` renders any of them as RFC 9457 problem details; the HTTP layer only serialises it.
"""


class LinescoreError(Exception):
    """An error with an HTTP status, a short title and a JSON pointer to the offending field."""

    status: int = 500
    title: str = "Internal error"

    headers: tuple[tuple[str, str], ...] = ()  # extra response headers

    def __init__(self, detail: str, *, pointer: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.pointer = pointer

    def problem(self) -> dict:
        body = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.pointer:
            body["pointer"] = self.pointer
        return body


class BadRequestError(LinescoreError):
    """The body cannot be parsed at all (not JSON, not a readable array file)."""

    status = 400
    title = "Malformed request"

    def __init__(self, detail: str, *, pointer: str = "/") -> None:  # the whole body is at fault
        super().__init__(detail, pointer=pointer)


class UnauthorizedError(LinescoreError):
    """No or a wrong bearer token, when the service requires one (LINESCORE_API_TOKEN)."""

    status = 401
    title = "Unauthorized"
    headers = (("WWW-Authenticate", 'Bearer realm="linescore"'),)


class RequestTimeoutError(LinescoreError):
    """The client stopped sending its body for longer than LINESCORE_CLIENT_TIMEOUT."""

    status = 408
    title = "Request timeout"


class PayloadTooLargeError(LinescoreError):
    status = 413
    title = "Payload too large"


class UnsupportedMediaTypeError(LinescoreError):
    status = 415
    title = "Unsupported media type"


class InvalidInputError(LinescoreError):
    """The request is well formed but a value breaks the input contract."""

    status = 422
    title = "Invalid input"


class NotFoundError(LinescoreError):
    status = 404
    title = "Not found"


class ArtifactError(LinescoreError):
    """A model artifact is missing, unreadable or fails its checksum: no readiness."""

    status = 503
    title = "Model not available"


class NotReadyError(LinescoreError):
    status = 503
    title = "Not ready"
