"""A real ``linescore serve`` on loopback for the benchmark (or the bare floor app of
:mod:`bench.floor` under the same gunicorn worker), and load-generating clients.

Clients run in their own processes (spawned) with persistent (kept-alive) HTTP/1.1 connections
from ``http.client``, so client work does not share a GIL with the measurement of other clients
and adds as little as a Python client can to each latency.
"""

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINESCORE = Path(sys.executable).parent / "linescore"
SERVE = [str(LINESCORE), "serve"]
FLOOR = [sys.executable, "-m", "bench.floor"]  # the bare app, same worker and settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    ready_seconds: float

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def start(
    env_overrides: dict[str, str | None],
    workers: int = 2,
    timeout: float = 180,
    command: list[str] = SERVE,
    cwd: Path = ROOT,
) -> Server:
    """Start the server (``command``: :data:`SERVE` or :data:`FLOOR`, run in ``cwd``); ready
    once /readyz answered 200 on 10 fresh connections in a row. An override of None removes
    the variable."""
    port = free_port()
    env = {k: v for k, v in {**os.environ, **env_overrides}.items() if v is not None}
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, "--port", str(port), "--workers", str(workers)],
        env=env,
        cwd=cwd,  # ROOT: where ``python -m bench.floor`` finds the bench package
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    streak = 0
    while streak < 10:
        if process.poll() is not None or time.perf_counter() - started > timeout:
            process.kill()
            raise RuntimeError("server did not become ready")
        try:
            streak = streak + 1 if get(port, "/readyz")[0] == 200 else 0
        except OSError:
            streak = 0
        if not streak:
            time.sleep(0.02)
    return Server(process, port, time.perf_counter() - started)


@contextmanager
def serving(
    env_overrides: dict[str, str | None], workers: int = 2, command: list[str] = SERVE
) -> Iterator[Server]:
    """A started server (see :func:`start`), stopped when the block ends."""
    live = start(env_overrides, workers, command=command)
    try:
        yield live
    finally:
        live.stop()


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def timed(call: Callable[[], None], seconds: float, warmup: int) -> list[float]:
    """Latencies in seconds of ``call`` made ``warmup`` times untimed, then for ``seconds``."""
    for _ in range(warmup):
        call()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        begin = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - begin)
    return latencies


@dataclass(frozen=True)
class Target:
    """One request to repeat on a kept-alive connection: a POST of ``body``, or a GET."""

    port: int
    path: str
    content_type: str | None = None
    body: bytes | None = None

    def caller(self) -> tuple[http.client.HTTPConnection, Callable[[], None]]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        method = "GET" if self.body is None else "POST"
        headers = {} if self.content_type is None else {"Content-Type": self.content_type}

        def call() -> None:
            connection.request(method, self.path, self.body, headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{self.path} answered {response.status}")

        return connection, call


def client(args: tuple[int, str, str, bytes, float, int]) -> list[float]:
    """POST the same body ``warmup`` times, then for ``seconds``; latencies in seconds."""
    port, path, content_type, body, seconds, warmup = args
    connection, call = Target(port, path, content_type, body).caller()
    try:
        return timed(call, seconds, warmup)
    finally:
        connection.close()


def interleaved(args: tuple[list[Target], float, int, int]) -> list[list[float]]:
    """Latencies of each target, one kept-alive connection each, taking turns in blocks of
    ``block`` requests for ``seconds`` in all (after ``warmup`` requests each): targets
    compared this way see the same machine, whatever else runs on it."""
    targets, seconds, block, warmup = args
    callers = [target.caller() for target in targets]
    latencies: list[list[float]] = [[] for _ in targets]
    try:
        for _, call in callers:
            timed(call, 0, warmup)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for (_, call), times in zip(callers, latencies, strict=True):
                for _ in range(block):
                    begin = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - begin)
        return latencies
    finally:
        for connection, _ in callers:
            connection.close()
