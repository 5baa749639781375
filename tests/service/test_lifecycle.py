"""The server's life over real gunicorn: start refused without a model, never ready with a bad
artifact, drain and graceful stop on SIGTERM, a killed worker replaced, stalled clients cut off."""

import io
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import numpy as np
import pytest
import requests

from service.manifest import newest_model_dir
from tests.live import LINESCORE, ROOT, free_port, live_server

PACKAGED = newest_model_dir(ROOT / "models")


def npy_batch(size: int) -> bytes:
    cutouts = np.random.default_rng(size).normal(size=(size, 9, 32)).astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, cutouts)
    return buffer.getvalue()


def post_batch(url: str, body: bytes, session: requests.Session | None = None) -> requests.Response:
    return (session or requests).post(
        f"{url}/v1/score/batch",
        data=body,
        headers={"Content-Type": "application/x-npy"},
        timeout=60,
    )


def refused_start(env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [str(LINESCORE), "serve", "--port", str(free_port())]
    return subprocess.run(
        command, env={**env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("missing dir", "does not exist"),
        ("empty dir", "no manifest.json in"),
        ("empty root", "no model versions"),
        ("blank token", "invalid settings: Value error, LINESCORE_API_TOKEN is blank"),
        ("zero workers", "invalid settings: Input should be greater than or equal to 1"),
    ],
)
def test_no_model_fails_at_start_with_a_clear_message(tmp_path, setting, message):
    env = {
        "missing dir": {"LINESCORE_MODEL_DIR": str(tmp_path / "nowhere")},
        "empty dir": {"LINESCORE_MODEL_DIR": str(tmp_path)},
        "empty root": {"LINESCORE_MODELS_ROOT": str(tmp_path)},
        "blank token": {"LINESCORE_API_TOKEN": " \n"},
        "zero workers": {"LINESCORE_WORKERS": "0"},
    }[setting]
    started = time.monotonic()
    result = refused_start(env)
    assert result.returncode != 0
    assert time.monotonic() - started < 30
    assert result.stderr.strip().splitlines()[-1].startswith("linescore: cannot serve:")
    assert message in result.stderr


@pytest.mark.parametrize("damage", ["corrupted", "swapped"])
def test_a_bad_artifact_never_becomes_ready_and_the_log_names_it(tmp_path, damage):
    model = tmp_path / "models" / PACKAGED.name
    shutil.copytree(PACKAGED, model)
    svm = model / "svm.joblib"
    if damage == "corrupted":
        data = bytearray(svm.read_bytes())
        data[len(data) // 2] ^= 0xFF
        svm.write_bytes(bytes(data))
    else:
        shutil.copyfile(model / "umap.joblib", svm)
    env = {"LINESCORE_MODEL_DIR": str(model)}
    with live_server(tmp_path, env=env, workers=1, ready=False) as live:
        deadline = time.monotonic() + 8
        states = []
        while time.monotonic() < deadline:  # well past the ~1.2 s a good model needs
            try:
                reply = requests.get(f"{live.url}/readyz", timeout=2)
                states.append((reply.status_code, reply.json()))
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        assert requests.get(f"{live.url}/livez", timeout=2).status_code == 503  # restart me
    assert states and all(status == 503 for status, _ in states)
    body = states[-1][1]
    assert body["model"] == "failed" and "svm.joblib" in body["error"]
    assert "svm.joblib" in live.log() and "SHA-256" in live.log()


class Traffic:
    """Clients posting batches in a loop on kept-alive connections until stopped, keeping every
    outcome: when it was answered and its status, and when each request was sent
    (``started``, in the same order)."""

    def __init__(self, url: str, body: bytes, clients: int = 2) -> None:
        self.url, self.body = url, body
        self.outcomes: list[tuple[float, int | str]] = []
        self.started: list[float] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run) for _ in range(clients)]

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stopping.is_set():
                sent = time.monotonic()
                try:
                    status: int | str = post_batch(self.url, self.body, session).status_code
                except requests.RequestException as error:
                    status = type(error).__name__
                with self.lock:  # the two lists stay in step across clients
                    self.started.append(sent)
                    self.outcomes.append((time.monotonic(), status))

    def __enter__(self) -> "Traffic":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=120)


def test_sigterm_drains_then_stops_without_failing_a_request(tmp_path):
    env = {"LINESCORE_DRAIN_SECONDS": "4", "LINESCORE_GRACEFUL_TIMEOUT": "20"}
    with live_server(tmp_path, env=env) as live:
        with Traffic(live.url, npy_batch(4096)) as traffic:
            time.sleep(1.0)
            sent_term = time.monotonic()
            live.process.send_signal(signal.SIGTERM)
            readiness = []
            while time.monotonic() - sent_term < 2.0:  # a load balancer's probes
                asked = time.monotonic() - sent_term
                readiness.append((asked, requests.get(f"{live.url}/readyz", timeout=5).status_code))
        # the clients stopped ~2 s into the 4 s drain, as a load balancer would (each sent one
        # batch or more after SIGTERM: batches take about a second here)
        exit_code = live.process.wait(timeout=60)
        stopped = time.monotonic() - sent_term
    # draining shows at once: every probe asked 0.1 s after SIGTERM or later hears 503 (how soon
    # a probe is answered depends on when a worker is free, as for any request)
    assert [status for asked, status in readiness if asked >= 0.1] == [503] * sum(
        1 for asked, _ in readiness if asked >= 0.1
    )
    assert readiness and readiness[-1][1] == 503
    assert exit_code == 0 and stopped < 4 + 20
    # served while draining: requests sent after SIGTERM (not only the batches in flight then)
    sent_while_draining = [
        status
        for sent, (_, status) in zip(traffic.started, traffic.outcomes, strict=True)
        if sent > sent_term
    ]
    assert len(sent_while_draining) >= 2 and set(sent_while_draining) == {200}, sent_while_draining
    assert [status for _, status in traffic.outcomes] == [200] * len(traffic.outcomes)
    assert "draining for 4.0 s" in live.log()


def test_in_flight_batches_finish_after_sigterm(tmp_path):
    """Each batch's body is half sent when SIGTERM arrives, so both are surely in flight."""
    body = npy_batch(4096)
    head = (
        f"POST /v1/score/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-npy\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with live_server(tmp_path, env={"LINESCORE_GRACEFUL_TIMEOUT": "20"}) as live:
        port = int(live.url.rsplit(":", 1)[1])
        clients = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(2)]
        for client in clients:
            client.sendall(head + body[: len(body) // 2])
        time.sleep(0.5)  # each idle worker has accepted one and is reading its body
        live.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        replies = []
        for client in clients:
            client.sendall(body[len(body) // 2 :])
            replies.append(client.makefile("rb").readline())
            client.close()
        assert live.process.wait(timeout=30) == 0
    assert replies == [b"HTTP/1.1 200 OK\r\n"] * 2


def worker_ready_gauge(url: str) -> float:
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    line = next(line for line in metrics.splitlines() if line.startswith("linescore_worker_ready"))
    return float(line.split()[-1])


def answering_worker(url: str) -> int:
    return int(requests.get(f"{url}/readyz", timeout=10).headers["X-Linescore-Worker"])


def test_a_killed_worker_is_replaced_while_traffic_continues(tmp_path):
    with live_server(tmp_path) as live, Traffic(live.url, npy_batch(512)) as traffic:
        time.sleep(0.5)
        victim = answering_worker(live.url)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        seen, deadline = set(), time.monotonic() + 60
        while len(seen - {victim}) < 2 and time.monotonic() < deadline:
            seen.add(answering_worker(live.url))  # a worker answers only once it is warm
        assert len(seen - {victim}) == 2, live.log()[-3000:]  # the survivor and its replacement
        assert worker_ready_gauge(live.url) == 2
        time.sleep(1.0)
    statuses = [status for _, status in traffic.outcomes]
    after = [status for at, status in traffic.outcomes if at > killed_at + 0.5]
    assert statuses.count(200) >= len(statuses) - 1  # at most the one batch the victim held
    assert after and set(after) == {200}


def stalled_reply(port: int, head: bytes) -> tuple[bytes, float]:
    """Send only ``head`` and wait: what the server answers before closing, and when."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled:
        stalled.sendall(head)
        started, received = time.monotonic(), b""
        try:
            while chunk := stalled.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
        return received, time.monotonic() - started


def test_stalled_clients_are_cut_off_and_free_their_worker(tmp_path):
    with live_server(tmp_path, env={"LINESCORE_CLIENT_TIMEOUT": "1"}, workers=1) as live:
        port = int(live.url.rsplit(":", 1)[1])
        headers_only, waited = stalled_reply(port, b"POST /v1/score HTTP/1.1\r\nHost: x\r\n")
        assert headers_only == b"" and 0.5 < waited < 5
        slow_body, waited = stalled_reply(
            port,
            b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{",
        )
        assert slow_body.startswith(b"HTTP/1.1 408") and 0.5 < waited < 5
        assert b"application/problem+json" in slow_body
        reply = requests.post(f"{live.url}/v1/score", json={"cutout": [[0.5] * 32] * 9}, timeout=5)
        assert reply.status_code == 200


def test_a_request_running_past_the_request_timeout_has_its_worker_replaced(tmp_path):
    """A body trickling in a byte at a time keeps its thread busy (each read is quick, so the
    client timeout never fires); the master replaces the worker once the request has run
    LINESCORE_REQUEST_TIMEOUT, and the replacement serves."""
    env = {"LINESCORE_REQUEST_TIMEOUT": "3", "LINESCORE_CLIENT_TIMEOUT": "5"}
    with live_server(tmp_path, env=env, workers=1) as live:
        port = int(live.url.rsplit(":", 1)[1])
        first = answering_worker(live.url)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as trickle:
            trickle.sendall(
                b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n["
            )
            started = time.monotonic()
            try:
                while time.monotonic() - started < 20:
                    trickle.sendall(b" ")
                    time.sleep(0.25)
            except OSError:  # the worker holding it was killed
                pass
            cut_after = time.monotonic() - started
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                replacement = answering_worker(live.url)
                break
            except requests.RequestException:
                time.sleep(0.2)
    assert 2.5 < cut_after < 6, cut_after  # about the request timeout, not twice it
    assert replacement != first
    assert "WORKER TIMEOUT" in live.log()
