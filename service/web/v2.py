"""/v2: the Open Inference Protocol (KServe v2, Triton's REST API) beside /v1.

Only HTTP translation lives here; the tensor codec is :mod:`service.oip` and scoring goes through
the same data plane as /v1. Errors are the project's problem details; under /v2 they also carry
the ``error`` member that OIP clients (tritonclient) read (service.web.problems).
"""

from importlib.metadata import version as package_version

from flask import Blueprint, Response, request

from service import oip
from service.codec import JSON, Detection, encode
from service.errors import NotFoundError, NotReadyError, UnsupportedMediaTypeError
from service.pipeline import stage
from service.web import context

blueprint = Blueprint("v2", __name__, url_prefix="/v2")


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


def check_taking_work() -> None:
    """A 503 problem with the reason unless this worker should be sent work (as /readyz)."""
    if not context.taking_work():
        if context.drain().is_set:
            raise NotReadyError("server is draining")
        served_version()  # raises with the loading or failure reason


@blueprint.get("")
def server_metadata() -> Response:
    return json_response(oip.server_metadata(package_version("linescore")))


@blueprint.get("/health/live")
def live() -> Response:
    return json_response({"live": True})


@blueprint.get("/health/ready")
def ready() -> Response:
    """Like /readyz: the model is warm and the server is not draining after SIGTERM."""
    check_taking_work()
    return json_response({"ready": True})


@blueprint.get("/models/<name>", defaults={"version": None})
@blueprint.get("/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None) -> Response:
    return json_response(oip.model_metadata(checked_model(name, version)))


@blueprint.get("/models/<name>/ready", defaults={"version": None})
@blueprint.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None) -> Response:
    checked_model(name, version)
    check_taking_work()
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
        len(detections), outcome.scored, outcome.timings, outcome.decisions, outcome.novel
    )
    if header_length is None:
        return Response(body, mimetype=JSON)
    return Response(body, mimetype=oip.OCTET_STREAM, headers={oip.HEADER: str(header_length)})
