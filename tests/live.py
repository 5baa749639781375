"""Real servers for tests: ``linescore serve`` (real gunicorn) in a subprocess on a free port."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
LINESCORE = Path(sys.executable).parent / "linescore"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, process: subprocess.Popen, seconds: float = 120) -> float:
    """Seconds until /readyz answered 200 on 10 fresh connections in a row (every worker)."""
    started, streak = time.monotonic(), 0
    while streak < 10:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        if time.monotonic() - started > seconds:
            raise TimeoutError("server never became ready")
        try:
            streak = streak + 1 if requests.get(f"{url}/readyz", timeout=2).ok else 0
        except (requests.ConnectionError, requests.Timeout):  # workers take connections once loaded
            streak = 0
        time.sleep(0.05 if streak else 0.2)
    return time.monotonic() - started


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()


@contextmanager
def live_server(
    log_dir: Path, env: dict[str, str] | None = None, workers: int = 2, ready: bool = True
) -> Iterator[LiveServer]:
    """Serve the packaged model (or what ``env`` says) with no drain delay unless ``env`` sets one.

    With ``ready=False`` it yields as soon as the process is started, for tests of failures.
    """
    port = free_port()
    environment = {
        **os.environ,
        "LINESCORE_MODELS_ROOT": str(ROOT / "models"),
        "LINESCORE_DRAIN_SECONDS": "0",
        **(env or {}),
    }
    log_path = Path(log_dir) / f"server-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(LINESCORE), "serve", "--port", str(port), "--workers", str(workers)],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        if ready:
            wait_until_ready(server.url, process)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
