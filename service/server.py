"""``linescore serve``: gunicorn with the packaged configuration, a drain phase and bounded sockets.

- The app is created in each worker after fork (no preload): ONNX Runtime sessions and numba state
  are not fork-safe. Thread pools are capped through the environment before any worker imports
  numpy, numba or ONNX Runtime, so two workers on two cores do not fight.
- SIGTERM first *drains*: a flag shared with every worker turns /readyz to 503 so load balancers
  stop routing here, while requests are still served; after ``drain_seconds`` gunicorn stops
  gracefully (in-flight requests finish within ``graceful_timeout``). While draining, idle
  kept-alive connections are closed and every answer says ``Connection: close``, so clients
  reconnect to a pod that is not stopping. A second SIGTERM skips the rest of the drain; SIGINT
  (Ctrl-C) stops at once.
- HTTP/1.1 keep-alive (gunicorn's threaded worker), keeping what sync workers gave: a worker
  listens for new connections only while it has no request in progress, so an idle worker takes
  the next one (and a probe on a new connection never queues behind a batch on a busy worker);
  a connection kept alive is closed after ``keepalive`` idle seconds, at most
  ``max_connections`` per worker.
- Client sockets time out after ``client_timeout``: a stalled upload frees its thread instead of
  holding it until the worker is replaced at ``request_timeout``.
- The model directory is checked in the master before any worker starts, so a missing or empty
  one fails at start with a clear message. Checksums are verified by each worker as it loads.

This module imports nothing heavy: it runs in the master.
"""

import errno
import os
import selectors
import socket
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.glogging import Logger
from gunicorn.workers.gthread import TConn, ThreadWorker
from pydantic import ValidationError

from service.config import Settings
from service.drain import DrainFlag
from service.errors import ArtifactError
from service.logs import logconfig_dict
from service.manifest import read_manifest, resolve_model_dir

HEARTBEAT_SECONDS = 0.1  # idle heartbeats at most this often (the master allows seconds)
CAPPED_POOLS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


class DrainingArbiter(Arbiter):
    """gunicorn's master, with a drain phase between SIGTERM and the graceful stop."""

    def __init__(self, app: "LinescoreServer") -> None:
        super().__init__(app)
        self.drain = app.drain
        self.drain_seconds = app.settings.drain_seconds
        self.drain_ends: float | None = None

    def handle_term(self) -> None:
        if self.drain.is_set or self.drain_seconds == 0:
            raise StopIteration
        self.log.info(
            "SIGTERM: draining for %.1f s (/readyz answers 503, requests still served)",
            self.drain_seconds,
        )
        self.drain.set()
        self.drain_ends = time.monotonic() + self.drain_seconds

    def manage_workers(self) -> None:
        """Called by the main loop at least once a second: ends the drain when it is due."""
        if self.drain_ends is not None and time.monotonic() >= self.drain_ends:
            self.log.info("drain over: stopping gracefully")
            raise StopIteration
        super().manage_workers()


class TimedSocket(socket.socket):
    """A client socket whose blocking mode keeps a timeout.

    The threaded worker switches sockets between non-blocking (kept alive, in its poller) and
    blocking (read by a thread); plain blocking would let a stalled client hold a thread forever.
    """

    timeout_seconds: float

    @classmethod
    def adopt(cls, client: socket.socket, timeout_seconds: float) -> "TimedSocket":
        timed = cls(client.family, client.type, client.proto, fileno=client.detach())
        timed.timeout_seconds = timeout_seconds
        return timed

    def setblocking(self, flag: bool) -> None:
        self.settimeout(self.timeout_seconds if flag else 0.0)


def request_waiting(sock: socket.socket) -> bool:
    """Whether bytes (or the peer's close) wait on a non-blocking socket, without reading."""
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset: the base class closes it when it tries to serve it
    return True


class LinescoreWorker(ThreadWorker):
    """gunicorn's threaded worker (keep-alive) with the guarantees of the old sync worker.

    - Connections are taken only once the model is ready (or failed, to say why): a replacement
      that accepted while loading would answer 503 to traffic the other worker could serve.
    - New connections are accepted only while no request is in progress here; the kernel offers
      each one to every listening worker, so an idle worker takes it.
    - A request running past ``request_timeout`` (counted from when it got a thread) has the
      master replace the worker, as a stuck sync worker was (the threaded worker's loop would
      beat on).
    - A request that shares the worker with another in progress closes its connection after its
      answer, so kept-alive connections do not pile up on one worker while another is idle.
    - Draining: idle kept-alive connections are closed, and every answer closes its connection.
    """

    def init_process(self) -> None:
        self.started: set[int] = set()  # connections with a request in progress here
        self.running: dict[int, float] = {}  # ... and since when a thread has been on each
        self.stamp: float | None = None  # the dated-back heartbeat last written, if it was one
        self.beat = 0.0  # when the last plain heartbeat was written
        super().init_process()

    @property
    def settings(self) -> Settings:
        return self.app.settings

    @property
    def draining(self) -> bool:
        return self.app.drain.is_set

    def run(self) -> None:
        runtime = self.wsgi.extensions["linescore"]["runtime"]
        while runtime.state == "loading" and self.alive:
            self.notify()  # the master's heartbeat: loading is not hanging
            time.sleep(0.05)
        super().run()

    def notify(self) -> None:
        """The heartbeat, dated back to when the oldest running request got its thread: the
        master replaces this worker once one request has run ``request_timeout``, as it did a
        sync worker. Time queued behind other requests does not count.

        gunicorn beats on every wake-up of the poller, twice per request under load: a file
        timestamp written each time (a system call). Here a beat that would write what is
        already there, or come within :data:`HEARTBEAT_SECONDS` of the last one, is skipped."""
        oldest = min(tuple(self.running.values()), default=None)  # threads add to it
        if oldest is not None:
            if oldest != self.stamp:
                os.utime(self.tmp.fileno(), (oldest, oldest))  # gunicorn's clock: monotonic
                self.stamp = oldest
            return
        now = time.monotonic()
        if self.stamp is not None or now - self.beat >= HEARTBEAT_SECONDS:
            super().notify()
            self.stamp, self.beat = None, now

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled and not self.started)

    def accept(self, listener) -> None:
        """Take a connection into the poller; it gets a thread once its request arrives, so a
        silent client (a TCP check, a preconnect) holds no thread and does not make this worker
        look busy. It is closed if nothing arrives within ``client_timeout``."""
        if self.started:  # became busy within this round of events: leave it to an idle worker
            return
        try:
            client, address = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        util.close_on_exec(client)
        conn = TConn(
            self.cfg,
            TimedSocket.adopt(client, self.settings.client_timeout),
            address,
            listener.getsockname(),
        )
        conn.timeout = time.monotonic() + self.settings.client_timeout
        self.pending_conns.append(conn)
        self.poller.register(
            conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn)
        )

    def enqueue_req(self, conn: TConn) -> None:
        self.started.add(id(conn))
        self.set_accept_enabled(False)
        super().enqueue_req(conn)

    def handle(self, conn: TConn):
        """In a request thread: the request's clock starts when it gets the thread."""
        self.running[id(conn)] = time.monotonic()
        try:
            return super().handle(conn)
        finally:
            self.running.pop(id(conn), None)

    def finish_request(self, conn: TConn, fs) -> None:
        self.started.discard(id(conn))
        super().finish_request(conn, fs)

    def handle_request(self, req, conn: TConn) -> bool:
        """Answered with ``Connection: close`` while draining, and when another request is in
        progress here: connections that contend for this worker (say, after a restarted worker
        left them all on the other) reconnect and are taken by an idle worker."""
        if self.draining or len(self.started) > 1:
            req.must_close = True
        return super().handle_request(req, conn)

    def murder_keepalived(self, force: bool = False) -> None:
        """While draining, close every idle kept-alive connection, but first serve any whose
        next request has already arrived (it is answered with ``Connection: close``); not at
        the final cleanup (``force``), when the graceful time is over."""
        if self.draining and not force:
            for conn in [c for c in self.keepalived_conns if request_waiting(c.sock)]:
                self.on_client_socket_readable(conn, conn.sock)
        super().murder_keepalived(force=force or self.draining)


def on_starting(server: Arbiter) -> None:
    """A fresh start: drop metric files a previous run left in a fixed multiprocess dir."""
    settings = server.app.settings
    for stale in settings.prometheus_multiproc_dir.glob("*.db"):
        stale.unlink()
    auth = "a bearer token" if settings.api_token else "no token (LINESCORE_API_TOKEN unset)"
    server.log.info("serving %s; /v1 and /v2 need %s", settings.model_dir, auth)


def child_exit(server: Arbiter, worker) -> None:
    """Drop a dead worker's live gauges from the shared metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


class AppAccessLogger(Logger):
    """gunicorn's logger, less its access line: the app writes its own (``linescore.access``),
    and gunicorn's would build every field of it per request only for a disabled logger."""

    def access(self, resp, req, environ, request_time) -> None:
        pass


class LinescoreServer(BaseApplication):
    """The gunicorn application: options from :class:`Settings`, the Flask app made per worker."""

    def __init__(self, settings: Settings, bind: str) -> None:
        self.settings = settings
        self.bind = bind
        self.drain = DrainFlag()
        super().__init__()

    def options(self) -> dict:
        settings = self.settings
        return {
            "bind": [self.bind],
            "workers": settings.workers,
            # Keep-alive, and an idle worker takes each new connection (bench/CHOICES.md).
            "worker_class": f"{__name__}.LinescoreWorker",
            "threads": settings.http_threads,
            "worker_connections": settings.max_connections,
            "keepalive": settings.keepalive,
            "preload_app": False,
            "timeout": settings.request_timeout,
            "graceful_timeout": settings.graceful_timeout,
            "control_socket_disable": True,  # no control socket: nothing written outside /tmp
            "accesslog": None,  # the app writes one JSON access line per request instead
            "logger_class": AppAccessLogger,
            "logconfig_dict": logconfig_dict(),
            "on_starting": on_starting,
            "child_exit": child_exit,
        }

    def load_config(self) -> None:
        for key, value in self.options().items():
            self.cfg.set(key, value)

    def load(self):
        from service.web.app import create_app

        return create_app(self.settings, drain=self.drain)

    def run(self) -> None:
        DrainingArbiter(self).run()


def prepare_environment(settings: Settings) -> Path:
    """Cap the workers' thread pools and give them a metrics dir, before any worker exists.

    Both must be in the environment: the workers' libraries read it when they are imported.
    """
    for variable in CAPPED_POOLS:
        os.environ.setdefault(variable, str(settings.threads))
    directory = settings.prometheus_multiproc_dir or tempfile.mkdtemp(prefix="linescore-metrics-")
    os.makedirs(directory, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return Path(directory)


def serve(bind: str, workers: int | None = None) -> None:
    """Run until stopped; exit 1 with one clear line if the settings or the model are unusable.

    The model directory is resolved once, here, so every worker (and every replacement) serves
    the same version even if a newer one lands under the models root meanwhile.
    """
    overrides = {} if workers is None else {"LINESCORE_WORKERS": str(workers)}
    try:
        settings = Settings.from_environ({**os.environ, **overrides})
        model_dir = resolve_model_dir(settings.model_dir, settings.models_root)
        read_manifest(model_dir)
    except ValidationError as error:
        sys.exit(f"linescore: cannot serve: invalid settings: {error.errors()[0]['msg']}")
    except ArtifactError as error:
        sys.exit(f"linescore: cannot serve: {error.detail}")
    metrics_dir = prepare_environment(settings)
    settings = settings.model_copy(
        update={"model_dir": model_dir, "prometheus_multiproc_dir": metrics_dir}
    )
    LinescoreServer(settings, bind).run()
