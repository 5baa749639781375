"""HTTP/1.1 keep-alive on real gunicorn: one connection carries many requests, an idle worker
still takes each new connection, and the drain closes idle connections without cutting any."""

import http.client
import json
import signal
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

from tests.live import live_server
from tests.service.test_lifecycle import npy_batch

SINGLE = json.dumps({"cutout": [[1.0] * 32] * 9, "detectid": 7})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("keepalive")) as live:
        yield live


def connect(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


def ask(
    connection: http.client.HTTPConnection, method: str, path: str, body: str | bytes = b""
) -> http.client.HTTPResponse:
    types = {str: "application/json", bytes: "application/x-npy"}
    headers = {"Content-Type": types[type(body)]} if body else {}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    return response


def test_one_connection_carries_many_requests(server):
    connection = connect(server.url)
    answers = [ask(connection, "POST", "/v1/score", SINGLE) for _ in range(5)]
    socket_after_first = connection.sock
    answers += [ask(connection, "GET", "/readyz") for _ in range(3)]
    assert [a.status for a in answers] == [200] * 8
    assert {a.getheader("Connection") for a in answers} == {"keep-alive"}
    assert connection.sock is socket_after_first  # never reconnected
    assert len({a.getheader("X-Linescore-Worker") for a in answers}) == 1
    connection.close()


def test_an_idle_worker_takes_a_new_connection_while_the_other_scores(server):
    batch_connection = connect(server.url)
    ask(batch_connection, "GET", "/readyz")  # connected: the batch below starts at once
    batch: dict = {}

    def post_batch() -> None:
        answer = ask(batch_connection, "POST", "/v1/score/batch", npy_batch(4096))
        batch.update(worker=answer.getheader("X-Linescore-Worker"), done=time.monotonic())

    poster = threading.Thread(target=post_batch)
    poster.start()
    time.sleep(0.1)  # the batch (about half a second of scoring) is in progress
    probe = requests.get(f"{server.url}/readyz", timeout=10)
    probed = time.monotonic()
    poster.join(timeout=60)
    assert probe.status_code == 200 and batch
    assert probed < batch["done"]  # answered while the batch was still being scored
    assert probe.headers["X-Linescore-Worker"] != batch["worker"]
    batch_connection.close()


def test_the_drain_closes_idle_connections_and_answers_close(tmp_path):
    with live_server(tmp_path, env={"LINESCORE_DRAIN_SECONDS": "3"}) as live:
        idle = connect(live.url)
        assert ask(idle, "GET", "/livez").getheader("Connection") == "keep-alive"
        live.process.send_signal(signal.SIGTERM)
        sent_term = time.monotonic()
        idle.sock.settimeout(5)
        assert idle.sock.recv(1) == b""  # closed by the server, cleanly
        closed_after = time.monotonic() - sent_term
        idle.close()
        during = requests.get(f"{live.url}/readyz", timeout=10)
        assert live.process.wait(timeout=30) == 0
    assert closed_after < 2.5  # within the drain, not at its end (3 s)
    assert during.status_code == 503 and during.headers["Connection"] == "close"


def test_a_request_that_finds_another_in_progress_closes_its_connection(server):
    """Two kept-alive connections on one worker: the one whose request arrives while the
    other's batch is being scored is answered, then closed (it reconnects to an idle worker);
    the one that was alone stays open."""
    first = connect(server.url)
    worker = ask(first, "GET", "/readyz").getheader("X-Linescore-Worker")
    second, elsewhere = None, []
    for _ in range(40):  # the kernel offers each new connection to either idle worker
        candidate = connect(server.url)
        alone = ask(candidate, "GET", "/readyz")
        if alone.getheader("X-Linescore-Worker") == worker:
            second = candidate
            break
        elsewhere.append(candidate)
    for connection in elsewhere:
        connection.close()
    assert second is not None, f"no new connection reached worker {worker} in 40 tries"
    assert alone.getheader("Connection") == "keep-alive"  # nothing else in progress: kept
    server_side = second.sock.dup()  # http.client drops its socket on "close"; this one stays
    batch: dict = {}

    def post_batch() -> None:
        answer = ask(first, "POST", "/v1/score/batch", npy_batch(4096))
        batch.update(
            worker=answer.getheader("X-Linescore-Worker"),
            connection=answer.getheader("Connection"),
            done=time.monotonic(),
        )

    poster = threading.Thread(target=post_batch)
    poster.start()
    time.sleep(0.1)  # the batch (about half a second of scoring) is in progress
    contended = ask(second, "GET", "/readyz")
    answered = time.monotonic()
    poster.join(timeout=60)
    assert batch and answered < batch["done"]  # answered while the batch was still scored
    assert contended.status == 200
    assert contended.getheader("X-Linescore-Worker") == batch["worker"] == worker
    assert contended.getheader("Connection") == "close"
    server_side.settimeout(5)
    assert server_side.recv(1) == b""  # and the server did close it
    assert batch["connection"] == "keep-alive"  # the request that was alone keeps its own
    assert ask(first, "GET", "/readyz").getheader("Connection") == "keep-alive"
    server_side.close()
    second.close()
    first.close()
