"""The application factory. gunicorn calls ``create_app()`` in each worker after fork."""

import os
import time
from importlib.resources import files

from flask import Flask, g, request

from service.config import Settings
from service.runtime import ModelRuntime
from service.telemetry import Telemetry
from service.web import health, ops, problems, v1


def create_app(settings: Settings | None = None, runtime: ModelRuntime | None = None) -> Flask:
    settings = settings or Settings.from_environ()
    app = Flask("linescore")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    telemetry = Telemetry(settings.prometheus_multiproc_dir)
    if runtime is None:
        runtime = ModelRuntime(settings, on_ready=lambda ready: telemetry.ready.set(int(ready)))
        runtime.start()
    telemetry.ready.set(int(runtime.ready))
    worker = str(os.getpid())
    app.extensions["linescore"] = {
        "settings": settings,
        "runtime": runtime,
        "telemetry": telemetry,
        "openapi": files("service").joinpath("openapi.yaml").read_bytes(),
    }
    for blueprint in (health.blueprint, v1.blueprint, ops.blueprint):
        app.register_blueprint(blueprint)
    problems.register(app)

    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def count(response):
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        telemetry.observe_request(
            endpoint, request.method, response.status_code, time.perf_counter() - g.started
        )
        response.headers["X-Linescore-Worker"] = worker  # which worker answered, for operators
        return response

    return app
