"""The packaged gunicorn configuration (``gunicorn -c python:service.gunicorn_conf``).

The app is created in each worker after fork (no preload: ONNX Runtime sessions and numba state
are not fork-safe). Thread pools are capped through the environment before any worker imports
numpy, numba or ONNX Runtime, so two workers on two cores do not fight. This module imports
nothing heavy: it runs in the master.
"""

import os
import tempfile

THREADS_PER_WORKER = os.environ.setdefault("LINESCORE_THREADS", "1")
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(variable, THREADS_PER_WORKER)
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="linescore-metrics-")
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

wsgi_app = "service.web.app:create_app()"
bind = ["127.0.0.1:8080"]
workers = 2
# Sync workers accept a connection only when idle, so the kernel spreads batches over the
# workers (bench/RESULTS.md); gthread workers also accept while busy and queued a second
# client's batches behind the first on one worker half of the time. A probe waits at most one
# batch (~40 ms at 1024 cutouts).
worker_class = "sync"
preload_app = False
timeout = 60
graceful_timeout = 30
control_socket_disable = True  # no gunicornc; nothing written outside /tmp (read-only root)
accesslog = "-"
errorlog = "-"
loglevel = "info"


def on_starting(server) -> None:
    """A fresh start: drop metric files a previous run left in a fixed multiprocess dir."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def child_exit(server, worker) -> None:
    """Drop a dead worker's live gauges from the shared metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
