"""Real gunicorn, real HTTP: ``linescore serve`` with two workers and the packaged model."""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from openapi_core import Config, OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

from service.bundle import ModelBundle, newest_model_dir
from service.pipeline import Scorer
from training.simulate import simulate

ROOT = Path(__file__).resolve().parents[2]
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
        except requests.ConnectionError:
            streak = 0
        time.sleep(0.05 if streak else 0.2)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    log = (tmp_path_factory.mktemp("server") / "gunicorn.log").open("w")
    env = {**os.environ, "LINESCORE_MODELS_ROOT": str(ROOT / "models")}
    process = subprocess.Popen(
        [str(LINESCORE), "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process)
        yield url, process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        log.close()


@pytest.fixture(scope="module")
def spec() -> OpenAPI:
    problem_json = {"application/problem+json": json.loads}
    config = Config(extra_media_type_deserializers=problem_json)
    return OpenAPI.from_file_path(str(ROOT / "openapi.yaml"), config=config)


@pytest.fixture(scope="module")
def cutouts() -> np.ndarray:
    return simulate({c: 8 for c in (-2, -1, 0, 1, 2, 3, 4, 5)}, seed=77).im_sum


def checked(spec: OpenAPI, response: requests.Response, request_too: bool = True):
    """Validate a real response (and its request) against openapi.yaml."""
    if request_too:
        spec.validate_request(RequestsOpenAPIRequest(response.request))
    spec.validate_response(
        RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response)
    )
    return response


def test_serve_replaces_itself_with_gunicorn(server):
    _, process = server
    with open(f"/proc/{process.pid}/cmdline", "rb") as handle:
        argv = handle.read().split(b"\0")
    assert b"gunicorn" in b" ".join(argv) and b"serve" not in argv


def test_health_model_openapi_and_metrics(server, spec):
    url, _ = server
    for path in ("/livez", "/readyz", "/v1/model"):
        assert checked(spec, requests.get(url + path, timeout=5)).status_code == 200
    manifest = ModelBundle.load(newest_model_dir(ROOT / "models")).manifest
    model = requests.get(f"{url}/v1/model", timeout=5).json()
    assert model["version"] == manifest["version"]
    assert model["artifacts"] == manifest["artifacts"]
    document = requests.get(f"{url}/openapi.yaml", timeout=5)
    assert document.content == (ROOT / "openapi.yaml").read_bytes()
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    assert "linescore_worker_ready 2.0" in metrics  # both workers ready, merged across processes


def test_single_and_batch_match_local_scoring(server, spec, cutouts):
    url, _ = server
    scorer = Scorer(ModelBundle.load(newest_model_dir(ROOT / "models")))
    local = scorer.score(cutouts)
    one = checked(
        spec,
        requests.post(
            f"{url}/v1/score",
            timeout=10,
            json={"detectid": 1000500001, "cutout": cutouts[0].tolist(), "wave": 4500.0},
        ),
    )
    assert one.json()["cnn_score"] == pytest.approx(float(local.cnn_score[0]), rel=1e-5)
    batch = checked(
        spec,
        requests.post(
            f"{url}/v1/score/batch",
            timeout=30,
            json={
                "detections": [{"detectid": i, "cutout": c.tolist()} for i, c in enumerate(cutouts)]
            },
        ),
    )
    results = batch.json()["results"]
    assert [r["detectid"] for r in results] == list(range(len(cutouts)))
    np.testing.assert_allclose([r["cnn_score"] for r in results], local.cnn_score, rtol=1e-5)
    np.testing.assert_allclose([r["umap"] for r in results], local.umap, rtol=1e-4, atol=1e-4)
    assert [r["decision"] == "real" for r in results] == local.real.tolist()
    assert [r["stage"] == "svm" for r in results] == local.decided_by_svm.tolist()
    low, high = scorer.bundle.thresholds
    for r in results:
        if r["stage"] == "cnn":
            assert (r["decision"] == "real") == (r["cnn_score"] >= high)
        else:
            assert low <= r["cnn_score"] < high and (r["decision"] == "real") == (
                r["svm_score"] > 0
            )


def test_binary_batch_matches_json(server, spec, cutouts):
    url, _ = server
    buffer = io.BytesIO()
    np.savez(buffer, cutout=cutouts, detectid=np.arange(len(cutouts)) + 1000500000)
    binary = requests.post(
        f"{url}/v1/score/batch",
        data=buffer.getvalue(),
        timeout=30,
        headers={"Content-Type": "application/x-npz"},
    )
    checked(spec, binary, request_too=False)
    as_json = requests.post(
        f"{url}/v1/score/batch",
        timeout=30,
        json={"detections": [{"cutout": c.tolist()} for c in cutouts]},
    ).json()
    assert [r["cnn_score"] for r in binary.json()["results"]] == [
        r["cnn_score"] for r in as_json["results"]
    ]


def test_errors_and_per_item_errors_follow_the_spec(server, spec, cutouts):
    url, _ = server
    bad = requests.post(f"{url}/v1/score", timeout=5, json={"cutout": [[1.0] * 32] * 8})
    assert bad.status_code == 422 and bad.headers["Content-Type"] == "application/problem+json"
    assert bad.json()["pointer"] == "/cutout"
    checked(spec, bad, request_too=False)
    mixed = checked(
        spec,
        requests.post(
            f"{url}/v1/score/batch",
            timeout=10,
            json={
                "detections": [
                    {"detectid": "a", "cutout": cutouts[0].tolist()},
                    {"detectid": "b", "cutout": [[0.0]]},
                ]
            },
        ),
        request_too=False,
    )
    assert [("error" in r) for r in mixed.json()["results"]] == [False, True]


def test_two_workers_under_parallel_clients(server, cutouts):
    url, _ = server
    payload = {"detections": [{"detectid": i, "cutout": c.tolist()} for i, c in enumerate(cutouts)]}
    reference = requests.post(f"{url}/v1/score/batch", json=payload, timeout=30).json()

    def post(_):
        reply = requests.post(f"{url}/v1/score/batch", json=payload, timeout=60)
        return reply.headers["X-Linescore-Worker"], reply.json()

    with ThreadPoolExecutor(max_workers=6) as pool:
        replies = list(pool.map(post, range(24)))
    assert all(body == reference for _, body in replies)
    assert len({worker for worker, _ in replies}) == 2  # both workers answered, identically
