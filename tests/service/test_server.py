"""Real gunicorn, real HTTP: ``linescore serve`` with two workers and the packaged model."""

import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from openapi_core import Config, OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

from service.bundle import ModelBundle
from service.manifest import newest_model_dir
from service.pipeline import Scorer
from tests.live import ROOT, live_server
from training.simulators.a import simulate


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("server")) as live:
        yield live.url, live.process


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


def test_serve_runs_the_gunicorn_master_in_its_own_process(server):
    """Signals sent to ``linescore serve`` reach gunicorn's master: the workers are its children."""
    url, process = server
    worker = requests.get(f"{url}/livez", timeout=5).headers["X-Linescore-Worker"]
    with open(f"/proc/{worker}/stat") as handle:
        parent = int(handle.read().rsplit(")", 1)[1].split()[1])
    assert parent == process.pid


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
    novelty = [r["novelty"] for r in results]
    # novelty is a rank among calibration cutouts: a last-digit move may shift it one step
    np.testing.assert_allclose(novelty, local.novelty, rtol=0, atol=0.01)
    threshold = scorer.bundle.manifest["novelty"]["threshold"]
    assert [("novel" in r["flags"]) for r in results] == [value >= threshold for value in novelty]
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
    for name in ("cnn_score", "novelty"):
        assert [r[name] for r in binary.json()["results"]] == [r[name] for r in as_json["results"]]


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
