"""Kubernetes probes: /livez (the process answers) and /readyz (this worker can take work)."""

from flask import Blueprint, Response

from service.codec import encode
from service.web import context

blueprint = Blueprint("health", __name__)


@blueprint.get("/livez")
def livez() -> Response:
    """503 once the model has failed to load: only a restart can bring this worker back."""
    runtime = context.runtime()
    if runtime.state == "failed":
        body = {"status": "failed", "model": runtime.state, "error": runtime.error}
        return Response(encode(body), status=503, mimetype="application/json")
    return Response(encode({"status": "alive"}), mimetype="application/json")


@blueprint.get("/readyz")
def readyz() -> Response:
    """200 only when the model is warm and the server is not draining after SIGTERM."""
    runtime = context.runtime()
    ok = context.taking_work()
    status = "ready" if ok else "draining" if context.drain().is_set else "not ready"
    body = {"status": status, "model": runtime.state}
    if runtime.error:
        body["error"] = runtime.error
    return Response(encode(body), status=200 if ok else 503, mimetype="application/json")
