"""/v2, the Open Inference Protocol: in-process (Flask test client, tiny model), then with the
official tritonclient against real gunicorn serving the packaged model."""

import json

import numpy as np
import pytest
import requests
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from service import oip
from service.bundle import ModelBundle
from service.config import Settings
from service.manifest import newest_model_dir
from service.runtime import ModelRuntime
from service.web.app import create_app
from tests.live import ROOT, live_server
from training.simulators.a import simulate

PROBLEM = "application/problem+json"
INFER = "/v2/models/linescore/infer"
NAMES = tuple(oip.OUTPUTS)


def json_request(cutouts: np.ndarray, **extra) -> dict:
    tensor = {"name": "cutout", "shape": list(cutouts.shape), "datatype": "FP32"}
    return {"inputs": [{**tensor, "data": cutouts.ravel().tolist()}], **extra}


def binary_request(cutouts: np.ndarray, **parameters) -> tuple[bytes, dict]:
    raw = cutouts.astype("<f4").tobytes()
    tensor = {"name": "cutout", "shape": list(cutouts.shape), "datatype": "FP32"}
    header = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
            "parameters": parameters,
        }
    ).encode()
    return header + raw, {oip.HEADER: str(len(header))}


def as_problem(reply, status: int) -> dict:
    """A v2 error: the project's problem details, plus the ``error`` member OIP clients read."""
    assert reply.status_code == status and reply.mimetype == PROBLEM
    problem = reply.get_json()
    assert problem["status"] == status and problem["error"] == problem["detail"]
    return problem


def v1_results(client, cutouts: np.ndarray) -> list[dict]:
    detections = [{"cutout": cutout.tolist()} for cutout in cutouts]
    return client.post("/v1/score/batch", json={"detections": detections}).get_json()["results"]


def assert_same_as_v1(outputs: dict[str, np.ndarray], v1: list[dict]) -> None:
    """Same scores as /v1; svm_score is FP32 in OIP (float64 in /v1); novelty FP32 in both."""
    np.testing.assert_array_equal(outputs["cnn_score"], [r["cnn_score"] for r in v1])
    np.testing.assert_array_equal(outputs["novelty"], [r["novelty"] for r in v1])
    np.testing.assert_array_equal(outputs["umap"], [r["umap"] for r in v1])
    np.testing.assert_allclose(outputs["svm_score"], [r["svm_score"] for r in v1], rtol=1e-6)
    for name in ("decision", "stage"):  # BYTES: str from JSON data, bytes from binary data
        decoded = [v.decode() if isinstance(v, bytes) else v for v in outputs[name]]
        assert decoded == [r[name] for r in v1]


def test_server_metadata_and_health(client):
    server = client.get("/v2").get_json()
    assert server["name"] == "linescore" and server["extensions"] == ["binary_tensor_data"]
    assert client.get("/v2/health/live").get_json() == {"live": True}
    assert client.get("/v2/health/ready").get_json() == {"ready": True}
    assert client.get("/v2/models/linescore/ready").get_json() == {
        "name": "linescore",
        "ready": True,
    }


def test_draining_server_is_live_but_not_ready(app, client):
    app.extensions["linescore"]["drain"].set()
    assert client.get("/v2/health/live").status_code == 200
    assert "draining" in as_problem(client.get("/v2/health/ready"), 503)["error"]


def test_loading_worker_answers_live_only(tiny_model_dir):
    runtime = ModelRuntime(Settings(model_dir=tiny_model_dir))  # never started: still loading
    client = create_app(runtime.settings, runtime=runtime).test_client()
    assert client.get("/v2/health/live").status_code == 200
    for path in ("/v2/health/ready", "/v2/models/linescore/ready", "/v2/models/linescore"):
        assert as_problem(client.get(path), 503)["error"] == "model is still loading"
    assert as_problem(client.post(INFER, json={}), 503)["error"] == "model is still loading"
    as_problem(client.get("/v2/models/other/ready"), 404)


def test_model_metadata_and_versions(client):
    model = client.get("/v2/models/linescore").get_json()
    assert model == oip.model_metadata("0.0.1")
    assert client.get("/v2/models/linescore/versions/0.0.1").get_json() == model
    assert client.get("/v2/models/linescore/versions/0.0.1/ready").status_code == 200
    for path in ("/v2/models/linescore/versions/2.0.0", "/v2/models/linescore/versions/2/ready"):
        assert "the loaded one is 0.0.1" in as_problem(client.get(path), 404)["error"]
    for path in ("/v2/models/other", "/v2/models/other/ready", "/v2/models/other/versions/1"):
        assert "unknown model 'other'" in as_problem(client.get(path), 404)["error"]
    assert (
        "unknown model" in as_problem(client.post("/v2/models/other/infer", json={}), 404)["detail"]
    )


def test_infer_json_and_binary_match_v1(client, tiny_data):
    products = tiny_data.im_sum[:6]
    v1 = v1_results(client, products)
    reply = client.post(
        "/v2/models/linescore/versions/0.0.1/infer",
        json=json_request(products[:, :, 34:66], id="night-7"),
    )
    assert reply.status_code == 200 and reply.mimetype == "application/json"
    body = reply.get_json()
    assert (body["model_name"], body["model_version"], body["id"]) == (
        "linescore",
        "0.0.1",
        "night-7",
    )
    by_name = {o["name"]: o for o in body["outputs"]}
    assert [o["name"] for o in body["outputs"]] == list(NAMES)
    assert by_name["umap"]["shape"] == [6, 2] and by_name["decision"]["datatype"] == "BYTES"
    outputs = {name: np.array(o["data"]) for name, o in by_name.items()}
    outputs["umap"] = outputs["umap"].reshape(6, 2)
    assert_same_as_v1(outputs, v1)

    body, headers = binary_request(products, binary_data_output=True)  # 9x100: cropped as in v1
    reply = client.post(INFER, data=body, headers=headers)
    assert reply.status_code == 200 and reply.mimetype == oip.OCTET_STREAM
    header_length = int(reply.headers[oip.HEADER])
    header = json.loads(reply.data[:header_length])
    assert "id" not in header and all("data" not in o for o in header["outputs"])
    offset, binary = header_length, {}
    for output in header["outputs"]:
        size = output["parameters"]["binary_data_size"]
        binary[output["name"]] = reply.data[offset : offset + size]
        offset += size
    assert offset == len(reply.data)
    outputs = {
        name: np.frombuffer(binary[name], "<f4") for name in ("cnn_score", "svm_score", "novelty")
    }
    outputs["umap"] = np.frombuffer(binary["umap"], "<f4").reshape(6, 2)
    for name in ("decision", "stage"):  # 4-byte little-endian length, then the bytes
        raw, values = binary[name], []
        while raw:
            size = int.from_bytes(raw[:4], "little")
            values.append(raw[4 : 4 + size])
            raw = raw[4 + size :]
        outputs[name] = values
    assert_same_as_v1(outputs, v1)


def test_novelty_output_matches_v1_and_its_novel_flag(client, tiny_data, novel_cutout):
    cutouts = np.concatenate([tiny_data.im_sum[:3, :, 34:66], novel_cutout[None]])
    v1 = v1_results(client, cutouts)
    request = json_request(cutouts, outputs=[{"name": "novelty"}, {"name": "decision"}])
    (novelty, _) = client.post(INFER, json=request).get_json()["outputs"]
    assert (novelty["name"], novelty["datatype"], novelty["shape"]) == ("novelty", "FP32", [4])
    assert novelty["data"] == [r["novelty"] for r in v1]
    threshold = client.get("/v1/model").get_json()["novelty_threshold"]
    assert [value >= threshold for value in novelty["data"]] == ["novel" in r["flags"] for r in v1]
    assert novelty["data"][3] >= threshold  # the bright column is novel
    body, headers = binary_request(cutouts)
    header = json.loads(body[: int(headers[oip.HEADER])])
    header["outputs"] = [{"name": "novelty", "parameters": {"binary_data": True}}]
    raw = json.dumps(header).encode()
    reply = client.post(
        INFER, data=raw + body[int(headers[oip.HEADER]) :], headers={oip.HEADER: str(len(raw))}
    )
    assert reply.status_code == 200 and reply.mimetype == oip.OCTET_STREAM
    length = int(reply.headers[oip.HEADER])
    assert json.loads(reply.data[:length])["outputs"] == [
        {
            "name": "novelty",
            "datatype": "FP32",
            "shape": [4],
            "parameters": {"binary_data_size": 16},
        }
    ]
    np.testing.assert_array_equal(
        np.frombuffer(reply.data[length:], "<f4"), [r["novelty"] for r in v1]
    )


def test_selected_outputs_only(client, tiny_data):
    request = json_request(tiny_data.im_sum[:2], outputs=[{"name": "stage"}, {"name": "umap"}])
    body = client.post(INFER, json=request).get_json()
    assert [(o["name"], o["shape"]) for o in body["outputs"]] == [("stage", [2]), ("umap", [2, 2])]


@pytest.mark.parametrize(
    ("kwargs", "status", "pointer"),
    [
        ({"data": b"{", "content_type": "application/json"}, 400, "/"),
        ({"json": {"inputs": [{"name": "image"}]}}, 422, "/inputs/0/shape"),
        (
            {"json": {"inputs": [{"name": "image", "shape": [], "datatype": "FP32"}]}},
            422,
            "/inputs/0/name",
        ),
        (
            {
                "json": {
                    **json_request(np.zeros((1, 9, 32))),
                    "parameters": {"binary_data_output": 1},
                }
            },
            422,
            "/parameters/binary_data_output",
        ),
        ({"json": json_request(np.zeros((65, 9, 32)))}, 413, "/inputs/0/shape"),
        ({"json": json_request(np.full((3, 9, 32), 1e39))}, 422, "/inputs/0/data/0"),
        ({"json": {}, "headers": {"Content-Encoding": "gzip"}}, 415, "/"),
        ({"data": b"x" * (2**20 + 1)}, 413, "/"),
    ],
)
def test_infer_errors_are_problems_with_an_error_member(client, kwargs, status, pointer):
    problem = as_problem(client.post(INFER, **kwargs), status)
    assert problem["pointer"] == pointer and problem["instance"] == INFER


def test_an_unexpected_failure_is_a_500_problem_with_an_error_member(client, monkeypatch):
    def broken(results):
        raise RuntimeError("boom")

    monkeypatch.setattr(oip, "columns", broken)
    as_problem(client.post(INFER, json=json_request(np.zeros((1, 9, 32)))), 500)


def test_scoring_is_counted_in_the_metrics(client, tiny_data, novel_cutout):
    cutouts = np.concatenate([tiny_data.im_sum[:2, :, 34:66], novel_cutout[None]])
    assert client.post(INFER, json=json_request(cutouts)).status_code == 200
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "linescore_batch_size_sum 3.0" in metrics
    assert "linescore_novel_detections_total 1.0" in metrics
    assert 'endpoint="/v2/models/<name>/infer",method="POST",status="200"' in metrics
    assert 'linescore_stage_duration_seconds_count{stage="decode"} 1.0' in metrics


# Real gunicorn, the packaged model, the official client.


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("v2-server")) as live:
        yield live.url


@pytest.fixture(scope="module")
def triton(server):
    client = InferenceServerClient(server.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def products() -> np.ndarray:
    return simulate({c: 8 for c in (-2, -1, 0, 1, 2, 3, 4, 5)}, seed=77).im_sum


@pytest.fixture(scope="module")
def version() -> str:
    return ModelBundle.load(newest_model_dir(ROOT / "models")).version


def test_health_and_metadata_through_tritonclient(triton, version):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("linescore") and triton.is_model_ready("linescore", version)
    assert not triton.is_model_ready("linescore", "0.0.0") and not triton.is_model_ready("other")
    assert triton.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    model = triton.get_model_metadata("linescore")
    assert model["versions"] == [version]
    assert model["inputs"] == [{"name": "cutout", "datatype": "FP32", "shape": [-1, 9, 32]}]


def infer(triton, cutouts: np.ndarray, binary: bool, **kwargs) -> dict[str, np.ndarray]:
    tensor = InferInput("cutout", list(cutouts.shape), "FP32")
    tensor.set_data_from_numpy(cutouts, binary_data=binary)
    outputs = [InferRequestedOutput(name, binary_data=binary) for name in NAMES]
    result = triton.infer("linescore", [tensor], outputs=outputs, **kwargs)
    return {name: result.as_numpy(name) for name in NAMES}


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_gets_the_scores_of_v1(server, triton, products, binary):
    detections = [{"cutout": product.tolist()} for product in products]
    reply = requests.post(f"{server}/v1/score/batch", json={"detections": detections}, timeout=60)
    v1 = reply.json()["results"]
    canonical = infer(triton, np.ascontiguousarray(products[:, :, 34:66]), binary)
    assert canonical["umap"].shape == (len(products), 2)
    assert_same_as_v1(canonical, v1)
    whole = infer(triton, products, binary, request_id="night-7")  # 9x100 products are cropped
    for name in NAMES:
        np.testing.assert_array_equal(whole[name], canonical[name])


def test_default_outputs_come_back_binary(triton, products, version):
    tensor = InferInput("cutout", [4, 9, 100], "FP32").set_data_from_numpy(products[:4])
    result = triton.infer("linescore", [tensor], model_version=version, request_id="r")
    response = result.get_response()
    assert response["id"] == "r" and [o["name"] for o in response["outputs"]] == list(NAMES)
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    assert set(result.as_numpy("stage").tolist()) <= {b"cnn", b"svm"}


@pytest.mark.parametrize(
    ("name", "shape", "dtype", "words"),
    [
        ("cutout", [2, 9, 32], np.float64, "datatype must be FP32, got FP64"),
        ("image", [2, 9, 32], np.float32, "unknown input 'image'"),
        ("cutout", [2, 9, 31], np.float32, "got (2, 9, 31)"),
    ],
)
def test_bad_requests_raise_with_the_field_in_the_message(triton, name, shape, dtype, words):
    tensor = InferInput(name, shape, "FP64" if dtype is np.float64 else "FP32")
    tensor.set_data_from_numpy(np.zeros(shape, dtype))
    with pytest.raises(InferenceServerException) as caught:
        triton.infer("linescore", [tensor])
    assert caught.value.status() == "422" and words in caught.value.message()


def test_one_bad_cutout_fails_the_request_naming_it(triton, products):
    cutouts = products[:5].copy()
    cutouts[3, 4, 50] = np.nan
    tensor = InferInput("cutout", list(cutouts.shape), "FP32").set_data_from_numpy(cutouts)
    with pytest.raises(InferenceServerException, match="cutout 3 contains NaN"):
        triton.infer("linescore", [tensor])
    with pytest.raises(InferenceServerException, match="model version '9' is not served"):
        triton.infer("linescore", [tensor], model_version="9")
