"""The application factory. The server calls ``create_app()`` in each worker after fork."""

from importlib.resources import files

from flask import Flask

from service.config import Settings
from service.drain import DrainFlag
from service.runtime import ModelRuntime
from service.telemetry import Telemetry
from service.web import health, hooks, ops, problems, v1, v2


def create_app(
    settings: Settings | None = None,
    runtime: ModelRuntime | None = None,
    drain: DrainFlag | None = None,
) -> Flask:
    settings = settings or Settings.from_environ()
    app = Flask("linescore", static_folder=None)  # no route serves files from a path
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    telemetry = Telemetry(settings.prometheus_multiproc_dir)
    if runtime is None:
        runtime = ModelRuntime(settings, on_ready=lambda ready: telemetry.ready.set(int(ready)))
        runtime.start()
    telemetry.ready.set(int(runtime.ready))
    app.extensions["linescore"] = {
        "settings": settings,
        "runtime": runtime,
        "telemetry": telemetry,
        "drain": drain or DrainFlag(),
        "openapi": files("service").joinpath("openapi.yaml").read_bytes(),
    }
    for blueprint in (health.blueprint, v1.blueprint, v2.blueprint, ops.blueprint):
        app.register_blueprint(blueprint)
    hooks.register(app)
    problems.register(app)
    return app
