"""Request decoding and response encoding: bytes in, validated detections out, and back.

A plainly valid JSON body (every cutout rows of finite numbers, no duplicate keys, nothing
unexpected) is read by simdjson straight into arrays, without a Python float per pixel; any
other body takes the full path: parsed with orjson (or, for NaN, Infinity or an out-of-range
number, the standard library) and validated by pydantic, which names the offending field. Both
paths give the same detections for the bodies the fast one takes.
Every batch item is validated on its own, so one bad item becomes one error in its place.
Binary batches are ``.npy`` (cutouts only) or ``.npz`` (``cutout`` plus optional ``detectid``
and ``wave``), read without pickle.
"""

import io
import json
import math
import zipfile
from dataclasses import dataclass
from typing import IO, Annotated, Any

import numpy as np
import orjson
import simdjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    ValidationError,
)

from service.contract import (
    ACCEPTED_COLUMNS,
    ROWS,
    as_float32,
    check_shape,
    crop,
    finite_items,
    to_canonical,
)
from service.errors import (
    BadRequestError,
    InvalidInputError,
    LinescoreError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)

JSON = "application/json"
NPY = "application/x-npy"
NPZ = "application/x-npz"
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


def integral(value: Any) -> Any:
    """755.0 is an integer to JSON Schema, so to the contract too (where a float is exact)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value


DetectId = (
    Annotated[StrictInt, BeforeValidator(integral), Field(ge=-(2**63), le=2**63 - 1)]
    | Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64)]
)


class DetectionModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    detectid: DetectId | None = None
    cutout: list[list[Number]]
    wave: Annotated[Number, Field(gt=0)] | None = None


class BatchModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    detections: list[Any]


@dataclass
class Detection:
    """One decoded item: a canonical (9, 32) cutout, or the error that replaced it."""

    detectid: int | str | None
    cutout: np.ndarray | None = None
    wave: float | None = None
    error: LinescoreError | None = None


DETECTID_RULE = "detectid must be an integer (int64) or a string of 1 to 64 characters"
INT64 = (-(2**63), 2**63 - 1)


def pointer_of(location: tuple, prefix: str = "") -> str:
    """JSON pointer: the field, then list indices (pydantic's union tags are not fields)."""
    parts = [location[0], *(p for p in location[1:] if isinstance(p, int))] if location else []
    return prefix + "".join(f"/{part}" for part in parts) or "/"


def validation_error(error: ValidationError, prefix: str = "") -> InvalidInputError:
    first = error.errors()[0]
    message = DETECTID_RULE if first["loc"][:1] == ("detectid",) else first["msg"]
    return InvalidInputError(
        f"{message} ({error.error_count()} problem(s))", pointer=pointer_of(first["loc"], prefix)
    )


def echoable(detectid: Any) -> int | str | None:
    """The id to echo beside an error: only one the contract accepts, else null."""
    if isinstance(detectid, bool):
        return None
    if isinstance(detectid, int) and INT64[0] <= detectid <= INT64[1]:
        return detectid
    if isinstance(detectid, str) and 1 <= len(detectid) <= 64:
        return detectid
    return None


VALUES_PER_ITEM = 9 * 100 + 64  # the largest cutout's numbers, plus room for the other fields


COUNT_CHUNK = 1 << 20  # bytes compared at a time by count_byte: a bounded temporary


def count_byte(body: bytes, byte: bytes) -> int:
    """``body.count(byte)`` for one byte, vectorised: CPython counts a byte at a time, which for
    a 1024-cutout JSON body (18 MB) took 10 ms per character counted."""
    code, data = ord(byte), np.frombuffer(body, dtype=np.uint8)
    return sum(
        int(np.count_nonzero(data[i : i + COUNT_CHUNK] == code))
        for i in range(0, len(data), COUNT_CHUNK)
    )


def within_value_budget(body: bytes, max_items: int) -> bool:
    """Whether the body holds no more values than ``max_items`` cutouts can."""
    budget = max_items * VALUES_PER_ITEM
    return len(body) <= budget or count_byte(body, b",") <= budget


def parse_json(body: bytes, max_items: int) -> Any:
    """The parsed body, refused unread if it holds more values than ``max_items`` cutouts can:
    a parser spends ~32 bytes per number, so 64 MiB of ``0,0,...`` would need a gigabyte."""
    if not within_value_budget(body, max_items):
        raise PayloadTooLargeError(
            f"body holds more values than {max_items} cutouts can", pointer="/"
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as fast_error:
        try:  # NaN, Infinity and 1e400 parse here, so the field can be named downstream
            return json.loads(body)
        except (ValueError, RecursionError):
            raise BadRequestError(f"body is not valid JSON: {fast_error}") from None


def plain_fields(others: dict) -> tuple[int | str | None, float | None] | None:
    """detectid and wave of a plain item's other fields when they are plainly valid, exactly as
    :class:`DetectionModel` would return them, else None (pydantic then validates them and names
    what is wrong). Validating this common case in pydantic cost more than scoring's arithmetic.
    """
    if not others.keys() <= {"detectid", "wave"}:
        return None
    detectid, wave = others.get("detectid"), others.get("wave")
    plain_id = (
        detectid is None
        or (type(detectid) is int and INT64[0] <= detectid <= INT64[1])
        or (type(detectid) is str and 1 <= len(detectid) <= 64)
    )
    plain_wave = wave is None or (type(wave) is float and math.isfinite(wave) and wave > 0)
    return (detectid, wave) if plain_id and plain_wave else None


def detection_from(item: Any, prefix: str, cutout: np.ndarray | None = None) -> Detection:
    """Validate one item; ``cutout``: its pixels, already read and checked by the fast path."""
    fields = plain_fields(item) if cutout is not None else None
    if fields is not None:
        try:
            canonical = to_canonical(cutout[None], pointer=f"{prefix}/cutout")[0]
        except InvalidInputError as error:
            return Detection(fields[0], error=error)
        return Detection(fields[0], canonical, fields[1])
    detectid = echoable(integral(item.get("detectid"))) if isinstance(item, dict) else None
    try:
        if cutout is None:
            model = DetectionModel.model_validate(item)
            cutout = np.asarray(model.cutout, dtype=np.float64)
        else:
            model = DetectionModel.model_validate({**item, "cutout": []})
    except ValidationError as error:
        return Detection(detectid, error=validation_error(error, prefix))
    except ValueError:  # ragged rows
        return Detection(
            detectid,
            error=InvalidInputError("cutout rows differ in length", pointer=f"{prefix}/cutout"),
        )
    try:
        canonical = to_canonical(cutout[None], pointer=f"{prefix}/cutout")[0]
    except InvalidInputError as error:
        return Detection(model.detectid, error=error)
    return Detection(model.detectid, canonical, model.wave)


def plain_document(body: bytes) -> Any:
    """simdjson's document, or None where only the full path can say what is wrong."""
    try:
        return simdjson.Parser().parse(body)
    except (ValueError, RuntimeError, TypeError):
        return None


def plain_keys(node: Any) -> list[str] | None:
    """An object's keys when there are no duplicates (the full path keeps the last one)."""
    if not isinstance(node, simdjson.Object):
        return None
    keys = list(node.keys())
    return keys if len(keys) == len(set(keys)) else None


def brackets(cutouts: list[np.ndarray]) -> int:
    """How many ``[`` a plain body with these cutouts holds: one per cutout and one per row.
    A body holding more nests an array somewhere (or has one in a string): not plain."""
    return sum(len(cutout) + 1 for cutout in cutouts)


def plain_item(item: Any) -> tuple[dict, np.ndarray] | None:
    """An item's other fields and its cutout as float64 (rows of equal length holding finite
    numbers only, unless an array nests inside a row: the caller counts brackets), or None for
    anything else."""
    keys = plain_keys(item)
    if keys is None or "cutout" not in keys:
        return None
    cutout = item["cutout"]
    if (
        not isinstance(cutout, simdjson.Array)
        or not len(cutout)
        or not all(isinstance(row, simdjson.Array) for row in cutout)
    ):
        return None
    lengths = {len(row) for row in cutout}
    if len(lengths) > 1:  # ragged (nested arrays are caught by counting brackets: brackets())
        return None
    try:
        pixels = np.frombuffer(cutout.as_buffer(of_type="d"), dtype=np.float64)
    except (TypeError, ValueError):  # a boolean, string or null among the numbers
        return None
    columns = lengths.pop() if lengths else 0
    if len(pixels) != len(cutout) * columns or not np.isfinite(pixels).all():
        return None
    others = {key: item[key] for key in keys if key != "cutout"}
    if any(isinstance(v, simdjson.Object | simdjson.Array) for v in others.values()):
        return None
    return others, pixels.reshape(len(cutout), columns)


def plain_batch(body: bytes, max_batch: int) -> list[Detection] | None:
    """The fast path of :func:`decode_batch`: None unless every item is plain."""
    document = plain_document(body)
    if plain_keys(document) != ["detections"]:
        return None
    items = document["detections"]
    if not isinstance(items, simdjson.Array) or not 0 < len(items) <= max_batch:
        return None
    plain = [plain_item(item) for item in items]
    if any(p is None for p in plain) or count_byte(body, b"[") != 1 + brackets(
        [p[1] for p in plain]
    ):
        return None
    return plain_detections(plain) or [
        detection_from(others, f"/detections/{index}", cutout)
        for index, (others, cutout) in enumerate(plain)
    ]


def plain_detections(plain: list[tuple[dict, np.ndarray]]) -> list[Detection] | None:
    """A plain batch's detections checked as one array (what :func:`detection_from` does item by
    item: the same float32 pixels, crops and errors), when every cutout has the same accepted
    shape and every item's other fields are plain; else None."""
    fields = [plain_fields(others) for others, _ in plain]
    shapes = {pixels.shape for _, pixels in plain}
    if any(f is None for f in fields) or len(shapes) != 1:
        return None
    rows, columns = shapes.pop()
    if rows != ROWS or columns not in ACCEPTED_COLUMNS:
        return None
    cutouts = as_float32(np.stack([pixels for _, pixels in plain]), "/cutout")
    finite = finite_items(cutouts).tolist()
    canonical = crop(cutouts)
    return [
        Detection(detectid, canonical[index], wave)
        if finite[index]
        else Detection(
            detectid,
            error=InvalidInputError(
                "cutout contains NaN or infinite values", pointer=f"/detections/{index}/cutout"
            ),
        )
        for index, (detectid, wave) in enumerate(fields)
    ]


def decode_single(body: bytes) -> Detection:
    """``POST /v1/score``: one detection; any problem fails the request."""
    plain = plain_item(plain_document(body)) if within_value_budget(body, 16) else None
    if plain is not None and count_byte(body, b"[") == brackets([plain[1]]):
        detection = detection_from(plain[0], "", plain[1])
    else:
        detection = detection_from(parse_json(body, max_items=16), prefix="")  # room to name
    if detection.error is not None:
        raise detection.error
    return detection


def decode_batch(body: bytes, media_type: str, max_batch: int) -> list[Detection]:
    """``POST /v1/score/batch`` in JSON, npy or npz: one Detection (or error) per item, in order."""
    if media_type == JSON:
        plain = plain_batch(body, max_batch) if within_value_budget(body, max_batch) else None
        if plain is not None:
            return plain
        try:
            batch = BatchModel.model_validate(parse_json(body, max_batch))
        except ValidationError as error:
            raise validation_error(error) from None
        check_batch_size(len(batch.detections), max_batch)
        return [detection_from(item, f"/detections/{i}") for i, item in enumerate(batch.detections)]
    if media_type in (NPY, NPZ):
        arrays = read_arrays(body, media_type, max_batch)
        return detections_from_arrays(arrays, max_batch)
    raise UnsupportedMediaTypeError(
        f"content type {media_type or '(none)'} is not one of {JSON}, {NPY}, {NPZ}",
        pointer="/",
    )


def check_batch_size(size: int, max_batch: int, pointer: str = "/detections") -> None:
    if size > max_batch:
        raise PayloadTooLargeError(
            f"batch of {size} detections exceeds the maximum of {max_batch}", pointer=pointer
        )
    if size == 0:
        raise InvalidInputError("batch is empty", pointer=pointer)


def read_arrays(body: bytes, media_type: str, max_batch: int) -> dict[str, np.ndarray]:
    """Arrays of an npy or npz body, each header checked before any data is allocated."""
    try:
        if media_type == NPY:
            stream = io.BytesIO(body)
            return {"cutout": read_npy(stream, len(body), max_batch, "/cutout", is_cutouts=True)}
        arrays = {}
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            members = archive.infolist()
            if sum(info.file_size for info in members) > 8 * len(body) + (64 << 20):
                raise PayloadTooLargeError("npz members inflate far beyond the body", pointer="/")
            for info in members:
                name = info.filename.removesuffix(".npy")
                with archive.open(info) as stream:
                    arrays[name] = read_npy(
                        stream, info.file_size, max_batch, f"/{name}", is_cutouts=name == "cutout"
                    )
        return arrays
    except LinescoreError:
        raise
    except MemoryError:
        raise PayloadTooLargeError("arrays too large to decode", pointer="/") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise BadRequestError(f"body is not a readable {media_type} file: {error}") from None


def read_npy(
    stream: IO[bytes], available: int, max_batch: int, pointer: str, *, is_cutouts: bool
) -> np.ndarray:
    """One .npy array: header first (no pickle, data present, batch bounded), then the data."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise BadRequestError(f"unsupported .npy format version {version}", pointer=pointer)
    if dtype.hasobject:
        raise BadRequestError("object arrays are not accepted", pointer=pointer)
    if is_cutouts:
        check_shape(shape, pointer)  # a wrong shape is named as such, before its size
    if shape and shape[0] > max_batch:
        check_batch_size(shape[0], max_batch, pointer)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes > available:
        raise BadRequestError(
            f"array header declares {nbytes} bytes but the body holds at most {available}",
            pointer=pointer,
        )
    data = stream.read(nbytes)
    if len(data) != nbytes:
        raise BadRequestError("array data is truncated", pointer=pointer)
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def detections_from_arrays(arrays: dict[str, np.ndarray], max_batch: int) -> list[Detection]:
    unknown = set(arrays) - {"cutout", "detectid", "wave"}
    if unknown:
        raise InvalidInputError(
            f"unknown arrays {sorted(unknown)}", pointer=f"/{sorted(unknown)[0]}"
        )
    if "cutout" not in arrays:
        raise InvalidInputError("npz body needs a 'cutout' array", pointer="/cutout")
    cutouts = arrays["cutout"]
    check_shape(cutouts.shape, "/cutout")
    check_batch_size(len(cutouts), max_batch)
    ids = arrays.get("detectid")
    waves = arrays.get("wave")
    for name, values in (("detectid", ids), ("wave", waves)):
        if values is not None and values.shape != (len(cutouts),):
            raise InvalidInputError(
                f"{name} must have shape ({len(cutouts)},), got {values.shape}", pointer=f"/{name}"
            )
    if ids is not None and ids.dtype.kind not in "iuU":
        raise InvalidInputError(
            f"detectid dtype {ids.dtype} is not integer or string", pointer="/detectid"
        )
    if waves is not None and waves.dtype.kind not in "fiu":
        raise InvalidInputError(f"wave dtype {waves.dtype} is not numeric", pointer="/wave")
    as32 = as_float32(cutouts, "/cutout")
    finite = finite_items(as32)
    canonical = crop(np.where(finite[:, None, None], as32, np.float32(0.0)))
    detections = []
    for i in range(len(cutouts)):
        detectid = echoable(ids[i].item()) if ids is not None else i
        wave = float(waves[i]) if waves is not None else None
        if not finite[i]:
            error = InvalidInputError(
                "cutout contains NaN or infinite values", pointer=f"/cutout/{i}"
            )
            detections.append(Detection(detectid, error=error))
        elif wave is not None and not (np.isfinite(wave) and wave > 0):
            detections.append(
                Detection(
                    detectid,
                    error=InvalidInputError(
                        "wave must be a positive finite number", pointer=f"/wave/{i}"
                    ),
                )
            )
        else:
            detections.append(Detection(detectid, canonical[i], wave))
    return detections


def encode(payload: Any) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
