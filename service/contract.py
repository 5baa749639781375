"""The input contract, in one place: what a cutout is and how a HETDEX product becomes one.

A cutout is the float32 ``im_sum`` of one detection: 9 rows across the dispersion (fiber trace
in row 4) by 32 wavelength columns at ~2 A/px (line peak in column 16), in sky-subtracted counts,
masked pixels exactly 0. The 100-column HETDEX product (line in column 50) is centre-cropped to
columns 34..65. Training and serving both go through :func:`to_canonical`.
"""

import numpy as np

from service.errors import InvalidInputError

ROWS = 9
COLUMNS = 32
PRODUCT_COLUMNS = 100
TRACE_ROW = 4
LINE_COLUMN = 16
PRODUCT_LINE_COLUMN = 50
CROP_START = PRODUCT_LINE_COLUMN - LINE_COLUMN  # 34: product columns 34..65 become 0..31
ACCEPTED_COLUMNS = (COLUMNS, PRODUCT_COLUMNS)


def describe() -> dict:
    """The contract as data, for the manifest and the model endpoint."""
    return {
        "dtype": "float32",
        "shape": [ROWS, COLUMNS],
        "accepted_columns": list(ACCEPTED_COLUMNS),
        "trace_row": TRACE_ROW,
        "line_column": LINE_COLUMN,
        "angstrom_per_pixel": 2.0,
        "crop_of_100_columns": [CROP_START, CROP_START + COLUMNS - 1],
        "units": "sky-subtracted counts (electrons); masked pixels are exactly 0",
    }


def check_shape(shape: tuple[int, ...], pointer: str) -> None:
    if len(shape) != 3 or shape[1] != ROWS or shape[2] not in ACCEPTED_COLUMNS:
        raise InvalidInputError(
            f"expected cutouts of shape (N, {ROWS}, {COLUMNS}) or (N, {ROWS}, {PRODUCT_COLUMNS}),"
            f" got {shape}",
            pointer=pointer,
        )


def as_float32(array: np.ndarray, pointer: str) -> np.ndarray:
    """Floating-point pixels only (an integer or boolean array is a mistaken product, not an
    image); values beyond float32 become infinite (and are rejected as such)."""
    if array.dtype.kind != "f":
        raise InvalidInputError(
            f"cutout values must be floating point (float32 or float64), got {array.dtype}",
            pointer=pointer,
        )
    if array.dtype == np.float32:
        return array
    with np.errstate(over="ignore"):
        return array.astype(np.float32)


def finite_items(array: np.ndarray) -> np.ndarray:
    """(N,) True where a cutout has no NaN or infinite value."""
    return np.isfinite(array).all(axis=(1, 2))


def crop(array: np.ndarray) -> np.ndarray:
    """Centre-crop (N, 9, 100) products to (N, 9, 32); canonical cutouts pass unchanged."""
    if array.shape[2] == PRODUCT_COLUMNS:
        array = array[:, :, CROP_START : CROP_START + COLUMNS]
    return np.ascontiguousarray(array)


def to_canonical(cutouts: np.ndarray, *, pointer: str = "/cutout") -> np.ndarray:
    """Validate a batch of cutouts (N, 9, 32) or (N, 9, 100) and return float32 (N, 9, 32).

    Raises :class:`InvalidInputError` naming ``pointer`` (plus the item index when only some
    items are bad) for a wrong shape or a non-finite value.
    """
    array = np.asarray(cutouts)
    check_shape(array.shape, pointer)
    array = as_float32(array, pointer)
    if not np.isfinite(array).all():  # one test for the batch; the culprit is sought only then
        first = int(np.flatnonzero(~finite_items(array))[0])
        where = pointer if array.shape[0] == 1 else f"{pointer}/{first}"
        raise InvalidInputError("cutout contains NaN or infinite values", pointer=where)
    return crop(array)
