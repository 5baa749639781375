"""/v2: the Open Inference Protocol (KServe v2, Triton's REST API) beside /v1.

Only HTTP translation lives here; the tensor codec is :mod:`service.oip` and scoring goes through
the same data plane as /v1. Errors keep the project's problem details and add the ``error``
member that OIP clients (tritonclient) read.
"""

import logging
from importlib.metadata import version as package_version

from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from service import oip
from service.codec import JSON, Detection, encode
from service.errors import LinescoreError, NotFoundError, NotReadyError, UnsupportedMediaTypeError
from service.pipeline import stage
from service.web import context, problems

blueprint = Blueprint("v2", __name__, url_prefix="/v2")
SERVER_VERSION = package_version("linescore")
log = logging.getLogger(__name__)


def oip_problem(problem: dict, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """tritonclient shows only ``error``, so it repeats the detail beside the problem members."""
    return problems.problem_response({**problem, "error": problem["detail"]}, headers)


@blueprint.errorhandler(LinescoreError)
def linescore_error(error: LinescoreError) -> Response:
    return oip_problem(error.problem(), error.headers)


@blueprint.errorhandler(HTTPException)
def http_error(error: HTTPException) -> Response:
    """Werkzeug's errors inside /v2, such as a body over the size limit."""
    problem = {
        "type": "about:blank",
        "title": error.name,
        "status": error.code,
        "detail": error.description,
    }
    if error.code == 413:
        problem["pointer"] = "/"
    return oip_problem(problem)


@blueprint.errorhandler(Exception)
def unexpected(error: Exception) -> Response:
    """Anything else is a bug: logged here, a plain 500 problem for the client."""
    log.exception("unhandled error on %s %s", request.method, request.path)
    return linescore_error(LinescoreError("an unexpected error occurred; it has been logged"))


def json_response(payload: dict) -> Response:
    return Response(encode(payload), mimetype=JSON)


def served_version() -> str:
    """The loaded model's version; a 503 problem with the reason until this worker is warm."""
    return context.runtime().plane.model_version


def checked_model(name: str, version: str | None) -> str:
    """The served version, once the path is known to name this model (and that version)."""
    if name != oip.MODEL:
        raise NotFoundError(f"unknown model '{name}': this server serves '{oip.MODEL}'")
    served = served_version()
    if version is not None and version != served:
        raise NotFoundError(f"model version '{version}' is not served; the loaded one is {served}")
    return served


@blueprint.get("")
def server_metadata() -> Response:
    return json_response(oip.server_metadata(SERVER_VERSION))


@blueprint.get("/health/live")
def live() -> Response:
    return json_response({"live": True})


@blueprint.get("/health/ready")
def ready() -> Response:
    """Like /readyz: the model is warm and the server is not draining after SIGTERM."""
    if context.drain().is_set:
        raise NotReadyError("server is draining")
    served_version()  # a 503 with the reason until the model is loaded and warm
    return json_response({"ready": True})


@blueprint.get("/models/<name>", defaults={"version": None})
@blueprint.get("/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None) -> Response:
    return json_response(oip.model_metadata(checked_model(name, version)))


@blueprint.get("/models/<name>/ready", defaults={"version": None})
@blueprint.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None) -> Response:
    checked_model(name, version)
    return json_response({"name": name, "ready": True})


@blueprint.post("/models/<name>/infer", defaults={"version": None})
@blueprint.post("/models/<name>/versions/<version>/infer")
def infer(name: str, version: str | None) -> Response:
    """The body's format is told by the binary extension's header, not by its content type."""
    served = checked_model(name, version)
    timings: dict[str, float] = {}
    with stage(timings, "decode"):
        if request.content_encoding not in (None, "identity"):
            raise UnsupportedMediaTypeError(
                f"content encoding {request.content_encoding} is not supported; send it as is",
                pointer="/",
            )
        parsed = oip.decode_request(
            request.get_data(), request.headers.get(oip.HEADER), context.settings().max_batch
        )
    detections = [Detection(None, cutout) for cutout in parsed.cutouts]
    outcome = context.runtime().score(detections)
    outcome.timings.update(timings)
    with stage(outcome.timings, "encode"):
        body, header_length = oip.encode_response(parsed, oip.columns(outcome.results), served)
    context.telemetry().observe_scoring(
        len(detections), outcome.scored, outcome.timings, outcome.decisions
    )
    if header_length is None:
        return Response(body, mimetype=JSON)
    return Response(body, mimetype=oip.OCTET_STREAM, headers={oip.HEADER: str(header_length)})
