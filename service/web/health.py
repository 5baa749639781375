"""Kubernetes probes: /livez (the process answers) and /readyz (this worker can take work)."""

from flask import Blueprint, Response

from service.codec import encode
from service.web import context

blueprint = Blueprint("health", __name__)


@blueprint.get("/livez")
def livez() -> Response:
    return Response(encode({"status": "alive"}), mimetype="application/json")


@blueprint.get("/readyz")
def readyz() -> Response:
    """200 only when the model is warm and the server is not draining after SIGTERM."""
    runtime = context.runtime()
    draining = context.drain().is_set
    status = "draining" if draining else "ready" if runtime.ready else "not ready"
    body = {"status": status, "model": runtime.state}
    if runtime.error:
        body["error"] = runtime.error
    ok = runtime.ready and not draining
    return Response(encode(body), status=200 if ok else 503, mimetype="application/json")
