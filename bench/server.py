"""A real ``linescore serve`` on loopback for the benchmark, and load-generating clients.

Clients run in their own processes (spawned) with persistent (kept-alive) HTTP/1.1 connections,
so client work does not share a GIL with the measurement of other clients.
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

LINESCORE = Path(sys.executable).parent / "linescore"


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


def start(env_overrides: dict[str, str | None], workers: int = 2, timeout: float = 180) -> Server:
    """Start the server; ready once /readyz answered 200 on 10 fresh connections in a row.
    An override of None removes the variable."""
    port = free_port()
    env = {k: v for k, v in {**os.environ, **env_overrides}.items() if v is not None}
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(LINESCORE), "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
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
def serving(env_overrides: dict[str, str | None], workers: int = 2) -> Iterator[Server]:
    """A started server (see :func:`start`), stopped when the block ends."""
    live = start(env_overrides, workers)
    try:
        yield live
    finally:
        live.stop()


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def session_client(args: tuple[int, str, str, bytes, float, int]) -> list[float]:
    """As :func:`client`, from a ``requests.Session``: what a Python user of the API runs."""
    import requests

    port, path, content_type, body, seconds, warmup = args
    url, headers = f"http://127.0.0.1:{port}{path}", {"Content-Type": content_type}
    with requests.Session() as session:

        def post() -> None:
            response = session.post(url, data=body, headers=headers, timeout=60)
            if response.status_code != 200:
                raise RuntimeError(f"{path} answered {response.status_code}")

        return timed(post, seconds, warmup)


def timed(post: Callable[[], None], seconds: float, warmup: int) -> list[float]:
    """Latencies in seconds of ``post`` called ``warmup`` times untimed, then for ``seconds``."""
    for _ in range(warmup):
        post()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        begin = time.perf_counter()
        post()
        latencies.append(time.perf_counter() - begin)
    return latencies


def client(args: tuple[int, str, str, bytes, float, int]) -> list[float]:
    """POST the same body ``warmup`` times, then for ``seconds``; latencies in seconds."""
    port, path, content_type, body, seconds, warmup = args
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": content_type}

    def post() -> None:
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}")

    try:
        return timed(post, seconds, warmup)
    finally:
        connection.close()
