"""The latency floor: a bare Flask app under linescore's own gunicorn worker and settings.

It answers ``{"status": "ok"}`` on /livez, /readyz and POST /v1/score (reading the body), with
no hooks, metrics or access log, so the service's latency minus this app's is what linescore adds
on top of Flask, gunicorn and the loopback. Run: ``python -m bench.floor --port 8081``
(``bench.server.start_floor`` starts it like ``linescore serve``).
"""

import argparse
import os
import sys

from flask import Flask, Response, request

from service.cli import GLIBC_MALLOC
from service.config import Settings
from service.server import LinescoreServer, prepare_environment

OK = b'{"status":"ok"}'


class AlwaysReady:
    """What the worker asks of the app's runtime before it takes connections: nothing to load."""

    state = "ready"


def create_floor_app() -> Flask:
    app = Flask("floor", static_folder=None)
    app.extensions["linescore"] = {"runtime": AlwaysReady()}

    def ok() -> Response:
        return Response(OK, mimetype="application/json")

    app.get("/livez")(ok)
    app.get("/readyz", endpoint="readyz")(ok)

    @app.post("/v1/score")
    def score() -> Response:
        request.get_data()
        return ok()

    return app


class FloorServer(LinescoreServer):
    """``linescore serve``'s gunicorn options, worker class and hooks, around the bare app."""

    def load(self) -> Flask:
        return create_floor_app()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if "MALLOC_ARENA_MAX" not in os.environ:  # glibc's settings, as `linescore serve` sets them
        for name, value in GLIBC_MALLOC.items():
            os.environ.setdefault(name, value)
        os.execv(sys.executable, [sys.executable, "-m", "bench.floor", *sys.argv[1:]])
    settings = Settings.from_environ({**os.environ, "LINESCORE_WORKERS": str(args.workers)})
    metrics_dir = prepare_environment(settings)
    settings = settings.model_copy(update={"prometheus_multiproc_dir": metrics_dir})
    FloorServer(settings, f"127.0.0.1:{args.port}").run()


if __name__ == "__main__":
    main()
