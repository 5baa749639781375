"""The OIP codec, checked against the official client's own encoder and decoder (tritonclient)."""

import json

import numpy as np
import pytest
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput, InferResult

from service import oip
from service.errors import BadRequestError, InvalidInputError, PayloadTooLargeError

MAX_BATCH = 8


def cutouts(n: int = 3, columns: int = 32) -> np.ndarray:
    return np.random.default_rng(5).normal(size=(n, 9, columns)).astype(np.float32)


def client_request(
    array: np.ndarray, binary: bool, outputs=None, **kwargs
) -> tuple[bytes, str | None]:
    """A body exactly as tritonclient sends it, and its Inference-Header-Content-Length."""
    tensor = InferInput("cutout", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array, binary_data=binary)
    body, json_size = InferenceServerClient.generate_request_body([tensor], outputs, **kwargs)
    return body, None if json_size is None else str(json_size)


def envelope(**tensor) -> bytes:
    """A JSON request with one input: the cutout defaults overridden by ``tensor``."""
    fields = {"name": "cutout", "shape": [1, 9, 32], "datatype": "FP32", "data": [0.0] * 288}
    return json.dumps({"inputs": [{**fields, **tensor}]}).encode()


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("columns", [32, 100])
def test_requests_from_tritonclient_decode_to_canonical_cutouts(binary, columns):
    array = cutouts(3, columns)
    request = oip.decode_request(*client_request(array, binary, request_id="r1"), MAX_BATCH)
    np.testing.assert_array_equal(request.cutouts, array[:, :, 34:66] if columns == 100 else array)
    assert request.cutouts.dtype == np.float32 and request.cutouts.shape == (3, 9, 32)
    assert request.id == "r1"
    assert request.outputs == [(name, True) for name in oip.OUTPUTS]  # the client's default


def test_nested_json_data_equals_flat():
    array = cutouts(2)
    nested = oip.decode_request(envelope(shape=[2, 9, 32], data=array.tolist()), None, MAX_BATCH)
    flat = oip.decode_request(*client_request(array, binary=False), MAX_BATCH)
    np.testing.assert_array_equal(nested.cutouts, flat.cutouts)
    assert nested.outputs == [(name, False) for name in oip.OUTPUTS] and nested.id is None


def test_outputs_are_chosen_in_order_with_their_own_binary_flag():
    outputs = [InferRequestedOutput("stage", binary_data=False), InferRequestedOutput("umap")]
    request = oip.decode_request(*client_request(cutouts(1), True, outputs), MAX_BATCH)
    assert request.outputs == [("stage", False), ("umap", True)]
    mixed = json.loads(envelope())
    mixed["parameters"] = {"binary_data_output": True, "priority": 3}  # others are ignored
    mixed["outputs"] = [{"name": "decision"}, {"name": "cnn_score", "parameters": {"x": 1}}]
    request = oip.decode_request(json.dumps(mixed).encode(), None, MAX_BATCH)
    assert request.outputs == [("decision", True), ("cnn_score", True)]


def results(n: int) -> list[dict]:
    rng = np.random.default_rng(8)
    return [
        {
            "cnn_score": float(rng.random()),
            "umap": rng.normal(size=2).tolist(),
            "svm_score": float(rng.normal()),
            "decision": ["real", "fake"][i % 2],
            "stage": "svm" if i % 3 == 0 else "cnn",
            "novelty": float(np.float32(rng.random())),
            "flags": [],
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("binary", [False, True])
def test_responses_decode_with_tritonclient(binary):
    items = results(4)
    request = oip.InferRequest(cutouts(4), "r9", [(name, binary) for name in oip.OUTPUTS])
    body, header_length = oip.encode_response(request, oip.columns(items), "1.0.0")
    assert (header_length is not None) == binary
    result = InferResult.from_response_body(body, header_length=header_length)
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (
        "linescore",
        "1.0.0",
        "r9",
    )
    assert [o["name"] for o in response["outputs"]] == list(oip.OUTPUTS)
    for name in ("cnn_score", "umap", "svm_score", "novelty"):
        expected = np.array([r[name] for r in items], dtype=np.float32)
        np.testing.assert_array_equal(result.as_numpy(name), expected)
    assert result.as_numpy("novelty").dtype == np.float32
    assert result.as_numpy("novelty").shape == (4,)
    for name in ("decision", "stage"):
        decoded = [v.decode() if binary else v for v in result.as_numpy(name).tolist()]
        assert decoded == [r[name] for r in items]


def test_novelty_alone_can_be_asked_for_by_name_binary_or_not():
    outputs = [InferRequestedOutput("novelty", binary_data=True)]
    request = oip.decode_request(*client_request(cutouts(1), True, outputs), MAX_BATCH)
    assert request.outputs == [("novelty", True)]
    items = results(3)
    body, header_length = oip.encode_response(request, oip.columns(items), "1.0.0")
    result = InferResult.from_response_body(body, header_length=header_length)
    ((output,),) = [result.get_response()["outputs"]]
    assert output == {
        "name": "novelty",
        "datatype": "FP32",
        "shape": [3],
        "parameters": {"binary_data_size": 12},
    }
    assert body[header_length:] == np.array([r["novelty"] for r in items], "<f4").tobytes()
    as_json = oip.decode_request(json_with_outputs({"name": "novelty"}), None, MAX_BATCH)
    body, header_length = oip.encode_response(as_json, oip.columns(items), "1.0.0")
    assert header_length is None
    assert json.loads(body)["outputs"] == [
        {
            "name": "novelty",
            "datatype": "FP32",
            "shape": [3],
            "data": [r["novelty"] for r in items],
        }
    ]


def test_mixed_response_puts_only_binary_outputs_after_the_header():
    request = oip.InferRequest(cutouts(2), None, [("decision", True), ("cnn_score", False)])
    body, header_length = oip.encode_response(request, oip.columns(results(2)), "1.0.0")
    header = json.loads(body[:header_length])
    assert "id" not in header
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 2 * (4 + 4)}
    assert body[header_length:] == b"\x04\x00\x00\x00real\x04\x00\x00\x00fake"
    assert len(header["outputs"][1]["data"]) == 2


def test_metadata_declares_the_tensors():
    model = oip.model_metadata("1.0.0")
    assert model["versions"] == ["1.0.0"]
    assert model["inputs"] == [{"name": "cutout", "datatype": "FP32", "shape": [-1, 9, 32]}]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in model["outputs"]} == {
        "cnn_score": ("FP32", [-1]),
        "umap": ("FP32", [-1, 2]),
        "svm_score": ("FP32", [-1]),
        "decision": ("BYTES", [-1]),
        "stage": ("BYTES", [-1]),
        "novelty": ("FP32", [-1]),
    }
    assert oip.server_metadata("0.1.0")["extensions"] == ["binary_tensor_data"]


def with_values(*items: tuple[int, object]) -> list:
    """Two flat cutouts of zeros, with some elements replaced."""
    data: list = [0.0] * 576
    for index, value in items:
        data[index] = value
    return data


@pytest.mark.parametrize(
    ("body", "pointer", "message"),
    [
        (b"[]", "/", "valid dictionary"),
        (b"{}", "/inputs", "Field required"),
        (b'{"inputs": [], "model": "x"}', "/model", "Extra inputs"),
        (b'{"id": 5, "inputs": []}', "/id", "valid string"),
        (b'{"inputs": []}', "/inputs", "expected one 'cutout' input, got 0"),
        (envelope(name="image"), "/inputs/0/name", "unknown input 'image'"),
        (envelope(datatype="FP64"), "/inputs/0/datatype", "must be FP32, got FP64"),
        (envelope(shape=[1, 8, 32]), "/inputs/0/shape", "got (1, 8, 32)"),
        (envelope(shape=[288]), "/inputs/0/shape", "expected cutouts of shape"),
        (envelope(shape=[1, -9, 32]), "/inputs/0/shape/1", "greater than or equal to 0"),
        (envelope(shape=[0, 9, 32], data=[]), "/inputs/0/shape", "batch is empty"),
        (envelope(data=[0.0] * 287), "/inputs/0/data", "[287] but the input's shape is [1, 9, 32]"),
        (envelope(data="zeros"), "/inputs/0/data", "valid list"),
        (envelope(data=None), "/inputs/0/data", "either as 'data' or as binary"),
        (envelope(shape=[2, 9, 32], data=with_values((300, True))), "/inputs/0/data/1", "[300]"),
        (envelope(shape=[2, 9, 32], data=with_values((5, "1.0"))), "/inputs/0/data/0", "number"),
        (envelope(shape=[2, 9, 32], data=with_values((400, None))), "/inputs/0/data/1", "number"),
        (envelope(shape=[2, 9, 32], data=with_values((290, 1e39))), "/inputs/0/data/1", "NaN"),
        (envelope(shape=[2, 9, 32], data=[[[0.0] * 32] * 9] * 3), "/inputs/0/data", "[3, 9, 32]"),
        (envelope(data=[[[0.0] * 32] * 8 + [[0.0] * 31]]), "/inputs/0/data", "differ in length"),
        (
            envelope(data=[[[0.0] * 32] * 8 + [[0.0] * 31 + [False]]]),
            "/inputs/0/data/0",
            "[0][8][31]",
        ),
        (
            envelope(parameters={"shared_memory_region": "r"}),
            "/inputs/0/parameters/shared_memory_region",
            "not supported",
        ),
        (
            envelope(parameters={"binary_data_size": True}),
            "/inputs/0/parameters/binary_data_size",
            "valid integer",
        ),
    ],
)
def test_invalid_json_requests_name_the_field(body, pointer, message):
    with pytest.raises(InvalidInputError) as caught:
        oip.decode_request(body, None, MAX_BATCH)
    assert caught.value.pointer == pointer and caught.value.status == 422
    assert message in caught.value.detail


def test_json_nan_and_infinity_name_the_item():
    body = envelope(shape=[2, 9, 32], data=[0.0] * 288 + [np.nan] + [np.inf] * 287)
    assert b"NaN, Infinity" in body  # the literals orjson refuses; the codec reads them anyway
    with pytest.raises(InvalidInputError, match="cutout 1 contains NaN") as caught:
        oip.decode_request(body, None, MAX_BATCH)
    assert caught.value.pointer == "/inputs/0/data/1"


def json_with_outputs(*outputs: dict, **parameters) -> bytes:
    request = json.loads(envelope())
    request["outputs"] = list(outputs)
    if parameters:
        request["parameters"] = parameters
    return json.dumps(request).encode()


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (json_with_outputs({"name": "flags"}), "/outputs/0/name"),
        (json_with_outputs({"name": "umap"}, {"name": "umap"}), "/outputs/1/name"),
        (
            json_with_outputs({"name": "umap", "parameters": {"classification": 2}}),
            "/outputs/0/parameters/classification",
        ),
        (
            json_with_outputs({"name": "umap", "parameters": {"binary_data": "yes"}}),
            "/outputs/0/parameters/binary_data",
        ),
        (
            json_with_outputs({"name": "umap"}, binary_data_output=1),
            "/parameters/binary_data_output",
        ),
        (json_with_outputs({"name": "umap", "datatype": "FP32"}), "/outputs/0/datatype"),
    ],
)
def test_invalid_outputs_name_the_field(body, pointer):
    with pytest.raises(InvalidInputError) as caught:
        oip.decode_request(body, None, MAX_BATCH)
    assert caught.value.pointer == pointer


def test_duplicate_cutout_inputs_are_refused():
    request = json.loads(envelope())
    request["inputs"] *= 2
    with pytest.raises(InvalidInputError, match="got 2") as caught:
        oip.decode_request(json.dumps(request).encode(), None, MAX_BATCH)
    assert caught.value.pointer == "/inputs/1/name"


def test_a_batch_above_the_maximum_is_too_large():
    with pytest.raises(PayloadTooLargeError) as caught:
        oip.decode_request(*client_request(cutouts(MAX_BATCH + 1), binary=True), MAX_BATCH)
    assert caught.value.pointer == "/inputs/0/shape" and caught.value.status == 413


def test_binary_nan_names_the_item():
    array = cutouts(4)
    array[2, 4, 16] = np.inf
    with pytest.raises(InvalidInputError) as caught:
        oip.decode_request(*client_request(array, binary=True), MAX_BATCH)
    assert caught.value.pointer == "/inputs/0/data/2"


def binary_request(array: np.ndarray, size: int | None = None, shape=None) -> tuple[bytes, int]:
    """A hand-made binary request whose declared size and shape may lie about the bytes."""
    tensor = {
        "name": "cutout",
        "shape": list(array.shape) if shape is None else shape,
        "datatype": "FP32",
        "parameters": {"binary_data_size": array.nbytes if size is None else size},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    return header + array.astype("<f4").tobytes(), len(header)


@pytest.mark.parametrize(
    ("make", "error", "pointer", "message"),
    [
        (lambda b, n: (b, "abc"), BadRequestError, "/", "got 'abc'"),
        (lambda b, n: (b, "0"), BadRequestError, "/", "got '0'"),
        (lambda b, n: (b, str(len(b) + 1)), BadRequestError, "/", "from 1 to the body's"),
        (lambda b, n: (b, str(n - 1)), BadRequestError, "/", "not valid JSON"),
        (
            lambda b, n: (b[:-4], str(n)),
            BadRequestError,
            "/inputs/0/parameters/binary_data_size",
            "1148 bytes follow",
        ),
        (
            lambda b, n: (b + b"\0", str(n)),
            BadRequestError,
            "/inputs/0/parameters/binary_data_size",
            "1153 bytes follow",
        ),
        (lambda b, n: (b, None), BadRequestError, "/", "not valid JSON"),
    ],
)
def test_binary_sizes_must_agree_with_the_body(make, error, pointer, message):
    body, header_length = make(*binary_request(cutouts(1)))
    with pytest.raises(error) as caught:
        oip.decode_request(body, header_length, MAX_BATCH)
    assert caught.value.pointer == pointer and message in caught.value.detail


def test_binary_size_must_agree_with_the_shape():
    body, header_length = binary_request(cutouts(2), shape=[1, 9, 32])
    with pytest.raises(InvalidInputError, match="2304 bytes but FP32 of shape") as caught:
        oip.decode_request(body, str(header_length), MAX_BATCH)
    assert caught.value.pointer == "/inputs/0/parameters/binary_data_size"


def test_data_beside_binary_is_refused():
    request = json.loads(envelope())
    request["inputs"][0]["parameters"] = {"binary_data_size": 1152}
    header = json.dumps(request).encode()
    with pytest.raises(InvalidInputError, match="either") as caught:
        oip.decode_request(header + bytes(1152), str(len(header)), MAX_BATCH)
    assert caught.value.pointer == "/inputs/0/data"


def test_bytes_after_a_json_only_request_are_refused():
    header = envelope()
    with pytest.raises(BadRequestError, match="4 bytes follow the JSON header") as caught:
        oip.decode_request(header + bytes(4), str(len(header)), MAX_BATCH)
    assert caught.value.pointer == "/inputs/0/parameters/binary_data_size"
