"""Request decoding and response encoding: bytes in, validated detections out, and back.

JSON bodies are parsed with orjson; a body orjson refuses only because of NaN, Infinity or an
out-of-range number is re-read with the standard library so the offending field can be named.
Every batch item is validated on its own, so one bad item becomes one error in its place.
Binary batches are ``.npy`` (cutouts only) or ``.npz`` (``cutout`` plus optional ``detectid``
and ``wave``), read without pickle.
"""

import io
import json
import zipfile
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, ValidationError

from service.contract import as_float32, check_shape, crop, finite_items, to_canonical
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
DetectId = (
    Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]
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


def pointer_of(location: tuple, prefix: str = "") -> str:
    return prefix + "".join(f"/{part}" for part in location)


def validation_error(error: ValidationError, prefix: str = "") -> InvalidInputError:
    first = error.errors()[0]
    return InvalidInputError(
        f"{first['msg']} ({error.error_count()} problem(s))",
        pointer=pointer_of(first["loc"], prefix) or prefix or "/",
    )


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as fast_error:
        try:  # NaN, Infinity and 1e400 parse here, so the field can be named downstream
            return json.loads(body)
        except (ValueError, RecursionError):
            raise BadRequestError(f"body is not valid JSON: {fast_error}") from None


def detection_from(item: Any, prefix: str) -> Detection:
    detectid = item.get("detectid") if isinstance(item, dict) else None
    if not isinstance(detectid, int | str) or isinstance(detectid, bool):
        detectid = None
    try:
        model = DetectionModel.model_validate(item)
        cutout = np.asarray(model.cutout, dtype=np.float64)
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


def decode_single(body: bytes) -> Detection:
    """``POST /v1/score``: one detection; any problem fails the request."""
    detection = detection_from(parse_json(body), prefix="")
    if detection.error is not None:
        raise detection.error
    return detection


def decode_batch(body: bytes, media_type: str, max_batch: int) -> list[Detection]:
    """``POST /v1/score/batch`` in JSON, npy or npz: one Detection (or error) per item, in order."""
    if media_type == JSON:
        try:
            batch = BatchModel.model_validate(parse_json(body))
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


def check_batch_size(size: int, max_batch: int) -> None:
    if size > max_batch:
        raise PayloadTooLargeError(
            f"batch of {size} detections exceeds the maximum of {max_batch}", pointer="/detections"
        )
    if size == 0:
        raise InvalidInputError("batch is empty", pointer="/detections")


def read_arrays(body: bytes, media_type: str, max_batch: int) -> dict[str, np.ndarray]:
    try:
        if media_type == NPY:
            return {"cutout": np.load(io.BytesIO(body), allow_pickle=False)}
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            declared = sum(info.file_size for info in archive.infolist())
            if declared > 8 * len(body) + 64 * 1024 * 1024:  # refuse zip bombs before inflating
                raise PayloadTooLargeError("npz members inflate far beyond the body", pointer="/")
        with np.load(io.BytesIO(body), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except LinescoreError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise BadRequestError(f"body is not a readable {media_type} file: {error}") from None


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
        detectid = ids[i].item() if ids is not None else i
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
