"""Operations endpoints: Prometheus metrics and the OpenAPI contract."""

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.web import context

blueprint = Blueprint("ops", __name__)


@blueprint.get("/metrics")
def metrics() -> Response:
    return Response(context.telemetry().exposition(), mimetype=CONTENT_TYPE_LATEST)


@blueprint.get("/openapi.yaml")
def openapi() -> Response:
    return Response(context.openapi_document(), mimetype="application/yaml")
