"""Kubernetes probes: /livez (the process answers) and /readyz (this worker can score)."""

from flask import Blueprint, Response

from service.codec import encode
from service.web import context

blueprint = Blueprint("health", __name__)


@blueprint.get("/livez")
def livez() -> Response:
    return Response(encode({"status": "alive"}), mimetype="application/json")


@blueprint.get("/readyz")
def readyz() -> Response:
    runtime = context.runtime()
    body = {"status": "ready" if runtime.ready else "not ready", "model": runtime.state}
    if runtime.error:
        body["error"] = runtime.error
    return Response(encode(body), status=200 if runtime.ready else 503, mimetype="application/json")
