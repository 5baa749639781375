"""A night reaches every replica: two real servers behind a round-robin TCP balancer (HAProxy).

kube-proxy balances connections, not requests, and with HTTP keep-alive a connection stays on one
pod. ``linescore score-file`` keeps one connection per batch in flight, so ``--concurrency`` at
least the number of replicas puts batches on every replica. This shows it on loopback: HAProxy in
``mode tcp`` (per-connection, like kube-proxy) in front of two ``linescore serve`` instances, and
each server's own ``/metrics`` counts what it scored. With a server that closes every connection
each batch is a new connection; with keep-alive each in-flight slot keeps its own. Either way both
servers must score a fair share of the night (deploy/README.md, "How a night reaches every pod").
"""

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.live import LINESCORE, free_port, live_server
from training.dataset import write_dataset
from training.simulators.a import simulate

HAPROXY = shutil.which("haproxy")
MISSING = "needs HAProxy on PATH (Debian: apt-get install haproxy; .ci/run does)"

DETECTIONS = 3000
BATCH = 256
CONCURRENCY = 2
FAIR_SHARE = 0.25  # each of two replicas scores at least this much of the night

CONFIG = """\
global
    maxconn 256
    stats socket {socket} mode 600 level user

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend night
    bind 127.0.0.1:{port}
    default_backend pods

backend pods
    balance roundrobin
{servers}
"""


def haproxy_config(directory: Path, port: int, upstreams: list[str]) -> Path:
    """A per-connection round-robin balancer, as kube-proxy is per connection too."""
    servers = "\n".join(
        f"    server pod{number} {url.removeprefix('http://')}"
        for number, url in enumerate(upstreams)
    )
    path = directory / "haproxy.cfg"
    text = CONFIG.format(socket=directory / "haproxy.sock", port=port, servers=servers)
    path.write_text(text)
    return path


def stats(sock: Path) -> dict[str, int]:
    """Connections HAProxy has sent to each server so far (``stot`` of ``show stat``)."""
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(5)
        client.connect(str(sock))
        client.sendall(b"show stat\n")
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    header, *lines = answer.decode().strip().splitlines()
    names = header.removeprefix("# ").split(",")
    rows = [dict(zip(names, line.split(","), strict=False)) for line in lines]
    return {
        row["svname"]: int(row["stot"])
        for row in rows
        if row["pxname"] == "pods" and row["svname"].startswith("pod")
    }


@contextmanager
def balancer(directory: Path, upstreams: list[str]) -> Iterator[str]:
    """Check the config, start HAProxy in the foreground, yield its URL, stop it."""
    port = free_port()
    config = haproxy_config(directory, port, upstreams)
    check = subprocess.run(
        [HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    log_path = directory / "haproxy.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while True:  # the stats socket answers once the listeners are bound; no test connection
            if process.poll() is not None:
                raise RuntimeError(f"haproxy exited: {log_path.read_text()}")
            try:
                stats(directory / "haproxy.sock")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def scored(url: str) -> tuple[int, int]:
    """(batches, detections) this server has scored, from its own merged ``/metrics``."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "linescore_batch_size"
        for sample in family.samples
    }
    batches, detections = (values.get(f"linescore_batch_size_{n}", 0) for n in ("count", "sum"))
    return int(batches), int(detections)


@pytest.fixture(scope="module", autouse=True)
def haproxy_installed() -> None:
    """Skips, saying why, where HAProxy is not installed; fails instead under CI=true."""
    if HAPROXY is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{MISSING}; CI=true, where the balancer test must run")
        pytest.skip(MISSING)


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> Path:
    """A small simulated night in the FiberImages layout, 12 batches of 256 (the last shorter)."""
    path = tmp_path_factory.mktemp("night") / "night.h5"
    per_class = DETECTIONS // 8
    return write_dataset(path, simulate({c: per_class for c in range(-2, 6)}, seed=53))


@pytest.mark.parametrize("keepalive", ["5", "0"], ids=["keep-alive", "close-each"])
def test_a_night_spreads_over_both_replicas(night, tmp_path_factory, keepalive):
    """Both ways the server may answer: keeping connections alive, or closing each one."""
    logs, env = tmp_path_factory.mktemp("servers"), {"LINESCORE_KEEPALIVE": keepalive}
    with (
        live_server(logs, env=env, workers=1) as first,
        live_server(logs, env=env, workers=1) as second,
    ):
        pods = [first.url, second.url]
        before = [scored(url) for url in pods]
        lb = tmp_path_factory.mktemp("lb")  # short: a unix socket path holds at most 107 bytes
        with balancer(lb, pods) as url:
            out = tmp_path_factory.mktemp("out") / "night.csv"
            command = [str(LINESCORE), "score-file", str(night), "--url", url, "--out", str(out)]
            command += ["--batch-size", str(BATCH), "--concurrency", str(CONCURRENCY)]
            command += ["--table", "ecsv", "--retry-for", "20"]
            run = subprocess.run(command, capture_output=True, text=True, timeout=120)
            connections = stats(lb / "haproxy.sock")
        after = [scored(url) for url in pods]

    assert run.returncode == 0, run.stderr
    with h5py.File(night) as handle:
        file_ids = handle["FiberImages"]["detectid"].tolist()
    total, batches = len(file_ids), -(-len(file_ids) // BATCH)
    journal = out.read_text().splitlines()[1:]
    assert [int(line.split(",", 1)[0]) for line in journal] == file_ids
    assert out.with_suffix(".ecsv").is_file()
    assert f"complete: {total}/{total} detections" in run.stderr

    per_server = [
        (done[0] - start[0], done[1] - start[1]) for start, done in zip(before, after, strict=True)
    ]
    spread = f"(batches, detections) per server {per_server}; connections per server {connections}"
    print(spread)
    assert sum(b for b, _ in per_server) == batches, spread
    assert sum(d for _, d in per_server) == total, spread
    if keepalive == "0":  # every batch on a connection of its own, placed afresh
        assert list(connections.values()) == [b for b, _ in per_server], spread
    else:  # the case that matters: few connections, each kept for many batches
        assert sum(connections.values()) < batches // 2, spread
    for server_batches, server_detections in per_server:
        assert server_batches >= FAIR_SHARE * batches, spread
        assert server_detections >= FAIR_SHARE * total, spread
