"""The Open Inference Protocol (KServe v2, Triton's REST API) for the one model: plain Python.

An infer request (JSON, or a JSON header followed by raw tensors: the binary tensor data
extension) becomes canonical cutouts through the same contract as /v1; the ensemble's results
become output tensors. A tensor request is all or nothing: one bad cutout fails it. Pointers into
tensor data end with the item (batch) index, whatever the layout of the data.
"""

import math
import struct
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

from service.codec import check_batch_size, encode, parse_json
from service.contract import COLUMNS, ROWS, as_float32, check_shape, crop, finite_items
from service.errors import BadRequestError, InvalidInputError

MODEL = "linescore"
PLATFORM = "linescore_cnn_umap_svm"
INPUT = "cutout"
HEADER = "Inference-Header-Content-Length"
OCTET_STREAM = "application/octet-stream"
EXTENSIONS = ("binary_tensor_data",)
OUTPUTS = {  # name: (datatype, shape of one item)
    "cnn_score": ("FP32", ()),
    "umap": ("FP32", (2,)),
    "svm_score": ("FP32", ()),
    "decision": ("BYTES", ()),
    "stage": ("BYTES", ()),
    "novelty": ("FP32", ()),
}
UNSUPPORTED = (  # tensor parameters that would change the answer; anything else is ignored
    "shared_memory_region",
    "shared_memory_byte_size",
    "shared_memory_offset",
    "classification",
)

Count = Annotated[StrictInt, Field(ge=0)]
Value = Annotated[float, Field(strict=True)]  # NaN and infinity are named per item later
FLAT = TypeAdapter(list[Value])
NESTED = TypeAdapter(list[list[list[Value]]])


class InputParameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    binary_data_size: Count | None = None


class OutputParameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    binary_data: StrictBool | None = None


class RequestParameters(BaseModel):
    model_config = ConfigDict(extra="allow")  # custom parameters: this model takes none

    binary_data_output: StrictBool = False


class InputTensor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr
    shape: list[Count]
    datatype: StrictStr
    parameters: InputParameters = Field(default_factory=InputParameters)
    data: Any = None  # type-checked once the shape is known to be a cutout batch


class OutputTensor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr
    parameters: OutputParameters = Field(default_factory=OutputParameters)


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: StrictStr | None = None
    parameters: RequestParameters = Field(default_factory=RequestParameters)
    inputs: list[InputTensor]
    outputs: list[OutputTensor] | None = None


@dataclass
class InferRequest:
    """A decoded request: canonical cutouts, the id to echo and the outputs to send."""

    cutouts: np.ndarray  # (N, 9, 32) float32
    id: str | None
    outputs: list[tuple[str, bool]]  # (name, as binary) in response order


def server_metadata(version: str) -> dict:
    return {"name": MODEL, "version": version, "extensions": list(EXTENSIONS)}


def model_metadata(model_version: str) -> dict:
    """One input shape can be declared; a (-1, 9, 100) HETDEX product is accepted too."""
    return {
        "name": MODEL,
        "versions": [model_version],
        "platform": PLATFORM,
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, ROWS, COLUMNS]}],
        "outputs": [
            {"name": name, "datatype": datatype, "shape": [-1, *item]}
            for name, (datatype, item) in OUTPUTS.items()
        ],
    }


def decode_request(body: bytes, header_length: str | None, max_batch: int) -> InferRequest:
    """``POST /v2/models/linescore/infer``: the body, and the binary extension's header if sent."""
    header, tail = split_body(body, header_length)
    try:
        envelope = Envelope.model_validate(parse_json(header, max_batch))
    except ValidationError as error:
        first = error.errors()[0]
        pointer = "".join(f"/{part}" for part in first["loc"]) or "/"
        raise InvalidInputError(
            f"{first['msg']} ({error.error_count()} problem(s))", pointer=pointer
        ) from None
    tensor = the_input(envelope.inputs)
    cutouts = cutouts_from(tensor, tail, max_batch)
    return InferRequest(cutouts, envelope.id, requested_outputs(envelope))


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON header and the raw bytes after it (none without the extension's header)."""
    if header_length is None:
        return body, memoryview(b"")
    size = int(header_length) if header_length.isascii() and header_length.isdigit() else 0
    if not 0 < size <= len(body):
        raise BadRequestError(
            f"{HEADER} must be the JSON header's length in bytes, from 1 to the body's"
            f" {len(body)}; got {header_length!r}"
        )
    return body[:size], memoryview(body)[size:]


def refuse_unsupported(parameters: BaseModel, pointer: str) -> None:
    for name in UNSUPPORTED:
        if name in (parameters.model_extra or {}):
            raise InvalidInputError(
                f"parameter '{name}' is not supported: no shared memory or classification here",
                pointer=f"{pointer}/{name}",
            )


def the_input(inputs: list[InputTensor]) -> InputTensor:
    """The model has exactly one input, the cutout batch."""
    for k, tensor in enumerate(inputs):
        if tensor.name != INPUT:
            raise InvalidInputError(
                f"unknown input '{tensor.name}': this model's only input is '{INPUT}'",
                pointer=f"/inputs/{k}/name",
            )
        refuse_unsupported(tensor.parameters, f"/inputs/{k}/parameters")
    if len(inputs) != 1:
        raise InvalidInputError(
            f"expected one '{INPUT}' input, got {len(inputs)}",
            pointer="/inputs" if not inputs else "/inputs/1/name",
        )
    return inputs[0]


def cutouts_from(tensor: InputTensor, tail: memoryview, max_batch: int) -> np.ndarray:
    """Validated canonical cutouts from the input's JSON data or binary bytes."""
    size = tensor.parameters.binary_data_size
    if (size is None) == (tensor.data is None):
        raise InvalidInputError(
            "give the cutouts either as 'data' or as binary with parameters.binary_data_size",
            pointer="/inputs/0/data",
        )
    if len(tail) != (size or 0):
        raise BadRequestError(
            f"{len(tail)} bytes follow the JSON header but the input's binary_data_size is"
            f" {size or 0}",
            pointer="/inputs/0/parameters/binary_data_size",
        )
    if tensor.datatype != "FP32":
        raise InvalidInputError(
            f"datatype must be FP32, got {tensor.datatype}", pointer="/inputs/0/datatype"
        )
    shape = tuple(tensor.shape)
    check_shape(shape, "/inputs/0/shape")
    check_batch_size(shape[0], max_batch, pointer="/inputs/0/shape")
    if size is None:
        array = json_tensor(tensor.data, shape)
    elif size != math.prod(shape) * 4:
        raise InvalidInputError(
            f"binary_data_size is {size} bytes but FP32 of shape {list(shape)} takes"
            f" {math.prod(shape) * 4}",
            pointer="/inputs/0/parameters/binary_data_size",
        )
    else:
        array = np.frombuffer(tail, dtype="<f4").reshape(shape)
    cutouts = as_float32(array, "/inputs/0/data")
    finite = finite_items(cutouts)
    if not finite.all():
        item = int(np.flatnonzero(~finite)[0])
        raise InvalidInputError(
            f"cutout {item} contains NaN or infinite values", pointer=f"/inputs/0/data/{item}"
        )
    return crop(cutouts)


def json_tensor(data: Any, shape: tuple[int, ...]) -> np.ndarray:
    """JSON numbers, flat in row-major order or nested as the shape; booleans are not numbers."""
    nested = isinstance(data, list) and bool(data) and isinstance(data[0], list)
    try:
        values = (NESTED if nested else FLAT).validate_python(data)
    except ValidationError as error:
        first = error.errors()[0]
        location, pointer = first["loc"], "/inputs/0/data"
        if location:
            item = location[0] if nested else location[0] // math.prod(shape[1:])
            pointer += f"/{item}"
        where = "".join(f"[{part}]" for part in location)
        raise InvalidInputError(f"data{where}: {first['msg']}", pointer=pointer) from None
    try:
        array = np.asarray(values, dtype=np.float64)
    except ValueError:
        raise InvalidInputError("data rows differ in length", pointer="/inputs/0/data") from None
    if array.shape != (shape if nested else (math.prod(shape),)):
        raise InvalidInputError(
            f"data has shape {list(array.shape)} but the input's shape is {list(shape)}",
            pointer="/inputs/0/data",
        )
    return array.reshape(shape)


def requested_outputs(envelope: Envelope) -> list[tuple[str, bool]]:
    """Every output unless some are named; binary per output, else as the request says."""
    default = envelope.parameters.binary_data_output
    if not envelope.outputs:
        return [(name, default) for name in OUTPUTS]
    chosen: list[tuple[str, bool]] = []
    for k, output in enumerate(envelope.outputs):
        if output.name not in OUTPUTS:
            raise InvalidInputError(
                f"unknown output '{output.name}': this model's outputs are {', '.join(OUTPUTS)}",
                pointer=f"/outputs/{k}/name",
            )
        if output.name in (name for name, _ in chosen):
            raise InvalidInputError(
                f"output '{output.name}' is requested twice", pointer=f"/outputs/{k}/name"
            )
        refuse_unsupported(output.parameters, f"/outputs/{k}/parameters")
        binary = output.parameters.binary_data
        chosen.append((output.name, default if binary is None else binary))
    return chosen


def columns(results: list[dict]) -> dict[str, np.ndarray]:
    """The data plane's per-item results as one array per output."""
    return {
        "cnn_score": np.array([r["cnn_score"] for r in results], dtype=np.float32),
        "umap": np.array([r["umap"] for r in results], dtype=np.float32).reshape(-1, 2),
        "svm_score": np.array([r["svm_score"] for r in results], dtype=np.float32),
        "decision": np.array([r["decision"] for r in results], dtype=np.str_),
        "stage": np.array([r["stage"] for r in results], dtype=np.str_),
        "novelty": np.array([r["novelty"] for r in results], dtype=np.float32),
    }


def encode_response(
    request: InferRequest, values: dict[str, np.ndarray], model_version: str
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    header: dict[str, Any] = {"model_name": MODEL, "model_version": model_version}
    if request.id is not None:
        header["id"] = request.id
    outputs, chunks = [], []
    for name, binary in request.outputs:
        array = values[name]
        datatype = OUTPUTS[name][0]
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            raw = bytes_of(array, datatype)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = array.ravel().tolist()
        outputs.append(tensor)
    header["outputs"] = outputs
    body = encode(header)
    if not chunks:
        return body, None
    return b"".join([body, *chunks]), len(body)


def bytes_of(array: np.ndarray, datatype: str) -> bytes:
    """Raw tensor bytes: little-endian FP32, or BYTES as 4-byte length-prefixed elements."""
    if datatype == "FP32":
        return array.astype("<f4").tobytes()
    encoded = [item.encode() for item in array.ravel().tolist()]
    return b"".join(struct.pack("<I", len(item)) + item for item in encoded)
