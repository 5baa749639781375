"""The HTTP layer in-process (Flask test client); real gunicorn is in test_server.py."""

import io

import numpy as np
import pytest

from service.config import Settings
from service.pipeline import Scorer
from service.runtime import ModelRuntime
from service.web.app import create_app

PROBLEM = "application/problem+json"


def cutouts(tiny_data, n):
    """Canonical crops of clean real lines (few masked pixels, so no mostly_masked flag)."""
    return tiny_data.im_sum[tiny_data.vis_class == 5][:n, :, 34:66]


def test_single_score_has_every_field(client, tiny_data, tiny_runtime):
    reply = client.post(
        "/v1/score",
        json={"detectid": 42, "cutout": cutouts(tiny_data, 1)[0].tolist(), "wave": 5200.0},
    )
    assert reply.status_code == 200
    body = reply.get_json()
    assert set(body) == {
        "detectid",
        "cnn_score",
        "umap",
        "svm_score",
        "decision",
        "stage",
        "novelty",
        "flags",
        "model_version",
    }
    assert body["detectid"] == 42 and body["model_version"] == "0.0.1"
    assert body["flags"] == ["sky_residual_window"]  # novelty below the threshold: not novel
    assert 0.0 <= body["novelty"] < tiny_runtime.plane.scorer.bundle.novelty.threshold
    low, high = tiny_runtime.plane.scorer.bundle.thresholds
    expected_stage = "svm" if low <= body["cnn_score"] < high else "cnn"
    assert body["stage"] == expected_stage


def test_batch_json_and_npz_agree(client, tiny_data):
    batch = cutouts(tiny_data, 5)
    as_json = client.post(
        "/v1/score/batch", json={"detections": [{"cutout": c.tolist()} for c in batch]}
    ).get_json()
    buffer = io.BytesIO()
    np.savez(buffer, cutout=batch)
    as_npz = client.post(
        "/v1/score/batch", data=buffer.getvalue(), content_type="application/x-npz"
    ).get_json()
    assert [r["cnn_score"] for r in as_json["results"]] == pytest.approx(
        [r["cnn_score"] for r in as_npz["results"]], rel=1e-6
    )
    assert [r["novelty"] for r in as_json["results"]] == pytest.approx(
        [r["novelty"] for r in as_npz["results"]], abs=1e-6
    )
    assert [r["detectid"] for r in as_npz["results"]] == [0, 1, 2, 3, 4]


def test_every_batch_form_carries_novelty_and_the_novel_flag(
    client, tiny_data, tiny_runtime, novel_cutout
):
    """JSON, npz and npy batches: the scoring core's novelty, and `novel` exactly at or above
    the manifest's threshold (the bright column only)."""
    batch = np.concatenate([cutouts(tiny_data, 2), novel_cutout[None], cutouts(tiny_data, 4)[2:]])
    bundle = tiny_runtime.plane.scorer.bundle
    expected = Scorer(bundle).score(batch).novelty
    threshold = bundle.manifest["novelty"]["threshold"]
    npz, npy = io.BytesIO(), io.BytesIO()
    np.savez(npz, cutout=batch, detectid=np.arange(5) + 100)
    np.save(npy, batch)
    replies = {
        "json": client.post(
            "/v1/score/batch", json={"detections": [{"cutout": c.tolist()} for c in batch]}
        ),
        "npz": client.post(
            "/v1/score/batch", data=npz.getvalue(), content_type="application/x-npz"
        ),
        "npy": client.post(
            "/v1/score/batch", data=npy.getvalue(), content_type="application/x-npy"
        ),
    }
    for form, reply in replies.items():
        assert reply.status_code == 200, form
        results = reply.get_json()["results"]
        novelty = [r["novelty"] for r in results]
        np.testing.assert_allclose(novelty, expected, rtol=0, atol=1e-6, err_msg=form)
        assert [("novel" in r["flags"]) for r in results] == [v >= threshold for v in novelty]
        assert [("novel" in r["flags"]) for r in results] == [False, False, True, False, False]
    single = client.post("/v1/score", json={"cutout": novel_cutout.tolist()}).get_json()
    assert single["novelty"] == pytest.approx(float(expected[2]), abs=1e-6)
    assert "novel" in single["flags"]


def test_batch_item_errors_do_not_fail_the_others(client, tiny_data):
    good = cutouts(tiny_data, 1)[0].tolist()
    reply = client.post(
        "/v1/score/batch",
        json={
            "detections": [
                {"detectid": 1, "cutout": good},
                {"detectid": 2, "cutout": [[1.0]]},
                {"detectid": 3, "cutout": good},
            ]
        },
    )
    assert reply.status_code == 200
    results = reply.get_json()["results"]
    assert [r["detectid"] for r in results] == [1, 2, 3]
    assert "error" in results[1] and results[1]["error"]["pointer"] == "/detections/1/cutout"
    assert results[1]["error"]["index"] == 1
    assert "cnn_score" in results[0] and "cnn_score" in results[2]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "pointer"),
    [
        ("post", "/v1/score", {"data": b"{", "content_type": "application/json"}, 400, None),
        ("post", "/v1/score", {"data": b"{}", "content_type": "text/plain"}, 415, "/"),
        ("post", "/v1/score", {"json": {"cutout": [[1.0] * 32] * 8}}, 422, "/cutout"),
        (
            "post",
            "/v1/score/batch",
            {"json": {"detections": [{"cutout": [[0.0]]}] * 65}},
            413,
            "/detections",
        ),
        (
            "post",
            "/v1/score/batch",
            {"data": b"x" * (2**20 + 1), "content_type": "application/json"},
            413,
            "/",
        ),
        ("get", "/v1/score", {}, 405, None),
        ("get", "/nowhere", {}, 404, None),
    ],
)
def test_errors_are_problem_json(client, method, path, kwargs, status, pointer):
    reply = getattr(client, method)(path, **kwargs)
    assert reply.status_code == status
    assert reply.mimetype == PROBLEM
    problem = reply.get_json()
    assert problem["status"] == status and problem["title"] and problem["detail"]
    assert problem["instance"] == path
    if pointer:
        assert problem["pointer"] == pointer


def test_method_not_allowed_says_what_is(client):
    assert "POST" in client.get("/v1/score").headers["Allow"]


def test_not_ready_worker_answers_live_but_not_ready(tiny_model_dir):
    runtime = ModelRuntime(Settings(model_dir=tiny_model_dir))  # never started: still loading
    client = create_app(runtime.settings, runtime=runtime).test_client()
    assert client.get("/livez").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["model"] == "loading"
    reply = client.post("/v1/score", json={"cutout": [[0.0] * 32] * 9})
    assert reply.status_code == 503 and reply.mimetype == PROBLEM


def test_failed_model_reports_why(tmp_path):
    runtime = ModelRuntime(Settings(models_root=tmp_path))
    runtime.load()
    client = create_app(runtime.settings, runtime=runtime).test_client()
    body = client.get("/readyz").get_json()
    assert body["model"] == "failed" and "no model versions" in body["error"]
    assert client.get("/livez").status_code == 503  # only a restart can bring it back


def test_model_endpoint_and_openapi(client, tiny_runtime):
    model = client.get("/v1/model").get_json()
    manifest = tiny_runtime.plane.scorer.bundle.manifest
    assert model["version"] == "0.0.1" and model["thresholds"] == manifest["thresholds"]
    assert model["artifacts"] == manifest["artifacts"] and model["max_batch"] == 64
    assert model["novelty_threshold"] == manifest["novelty"]["threshold"]
    spec = client.get("/openapi.yaml")
    assert spec.status_code == 200 and spec.data.startswith(b"openapi: 3.1")


def test_metrics_count_requests_decisions_and_stages(client, tiny_data):
    client.post(
        "/v1/score/batch",
        json={"detections": [{"cutout": c.tolist()} for c in cutouts(tiny_data, 3)]},
    )
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        'linescore_requests_total{endpoint="/v1/score/batch",method="POST",status="200"} 1.0'
        in text
    )
    assert 'linescore_stage_duration_seconds_count{stage="umap"} 1.0' in text
    assert "linescore_batch_size_sum 3.0" in text
    decided = [line for line in text.splitlines() if line.startswith("linescore_decisions_total{")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in decided) == 3.0
    assert "linescore_novel_detections_total 0.0" in text  # clean real lines: none novel


def novel_count(client) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    (line,) = [x for x in text.splitlines() if x.startswith("linescore_novel_detections_total ")]
    return float(line.rsplit(" ", 1)[1])


def test_novel_detections_are_counted(client, tiny_data, novel_cutout):
    assert novel_count(client) == 0.0
    detections = [{"cutout": c.tolist()} for c in (novel_cutout, *cutouts(tiny_data, 2))]
    detections.append({"cutout": novel_cutout.tolist()})
    assert client.post("/v1/score/batch", json={"detections": detections}).status_code == 200
    assert novel_count(client) == 2.0
    assert client.post("/v1/score", json={"cutout": novel_cutout.tolist()}).status_code == 200
    assert novel_count(client) == 3.0
    assert client.post("/v1/render", json={"cutout": novel_cutout.tolist()}).status_code == 200
    assert novel_count(client) == 4.0
    ordinary = {"cutout": cutouts(tiny_data, 1)[0].tolist()}
    assert client.post("/v1/score", json=ordinary).status_code == 200
    assert novel_count(client) == 4.0
