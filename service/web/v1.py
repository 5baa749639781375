"""/v1: score one detection, score a batch (JSON or binary), render one, describe the model."""

from flask import Blueprint, Response, request

from service import codec, render
from service.codec import Detection
from service.dataplane import Outcome
from service.errors import UnsupportedMediaTypeError
from service.pipeline import stage
from service.web import context

blueprint = Blueprint("v1", __name__, url_prefix="/v1")


def json_body() -> bytes:
    if request.mimetype != codec.JSON:
        raise UnsupportedMediaTypeError(
            f"content type {request.mimetype or '(none)'} is not {codec.JSON}", pointer="/"
        )
    return request.get_data()


def run(detections: list[Detection], timings: dict[str, float]) -> Outcome:
    outcome = context.runtime().score(detections)  # a 503 problem until this worker is ready
    outcome.timings.update(timings)
    return outcome


def respond(payload: dict, outcome: Outcome, size: int) -> Response:
    with stage(outcome.timings, "encode"):
        body = codec.encode(payload)
    context.telemetry().observe_scoring(
        size, outcome.scored, outcome.timings, outcome.decisions, outcome.novel
    )
    return Response(body, mimetype=codec.JSON)


def score_single() -> tuple[Detection, Outcome]:
    """One JSON detection, decoded and scored: what /score and /render share."""
    timings: dict[str, float] = {}
    with stage(timings, "decode"):
        detection = codec.decode_single(json_body())
    return detection, run([detection], timings)


@blueprint.post("/score")
def score_one() -> Response:
    _, outcome = score_single()
    result = {**outcome.results[0], "model_version": context.runtime().plane.model_version}
    return respond(result, outcome, 1)


@blueprint.post("/score/batch")
def score_batch() -> Response:
    timings: dict[str, float] = {}
    with stage(timings, "decode"):
        detections = codec.decode_batch(
            request.get_data(), request.mimetype, context.settings().max_batch
        )
    outcome = run(detections, timings)
    payload = {"model_version": context.runtime().plane.model_version, "results": outcome.results}
    return respond(payload, outcome, len(detections))


@blueprint.post("/render")
def render_one() -> Response:
    """Score one detection as /score does, answer with a PNG of its cutout and map place."""
    detection, outcome = score_single()
    bundle = context.runtime().plane.scorer.bundle
    with stage(outcome.timings, "encode"):
        body = render.render_png(bundle, detection.cutout, outcome.results[0])
    context.telemetry().observe_scoring(
        1, outcome.scored, outcome.timings, outcome.decisions, outcome.novel
    )
    return Response(body, mimetype=render.PNG)


@blueprint.get("/model")
def model() -> Response:
    runtime = context.runtime()
    manifest = runtime.plane.scorer.bundle.manifest
    heldout = manifest.get("heldout", {}).get("metrics", {})
    body = {
        "name": manifest["name"],
        "version": manifest["version"],
        "created": manifest["created"],
        "model_dir": str(runtime.plane.scorer.bundle.model_dir),
        "input_contract": manifest["input_contract"],
        "normalization": manifest["normalization"],
        "thresholds": manifest["thresholds"],
        "stage2": manifest.get("stage2", {"used": True, "why": "fit with the model (no gate)"}),
        "umap_input": manifest["umap"]["input"],
        "novelty_threshold": runtime.plane.scorer.bundle.novelty.threshold,  # the one in use
        "max_batch": context.settings().max_batch,
        "artifacts": manifest["artifacts"],
        "heldout_metrics": {
            key: heldout[key]
            for key in (
                "baseline",
                "cnn_alone",
                "cnn_at_0.5",
                "cnn_band_called_fake",
                "ensemble",
                "ensemble_minus",
                "by_snr",
            )
            if key in heldout
        },
        "libraries": manifest["libraries"],
    }
    return Response(codec.encode(body), mimetype=codec.JSON)
