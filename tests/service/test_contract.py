import numpy as np
import pytest

from service.contract import COLUMNS, CROP_START, ROWS, to_canonical
from service.errors import InvalidInputError


def test_product_cutout_is_centre_cropped_so_the_line_lands_in_column_16(rng):
    product = rng.standard_normal((2, ROWS, 100)).astype(np.float32)
    product[:, 4, 50] = 99.0
    canonical = to_canonical(product)
    assert canonical.shape == (2, ROWS, COLUMNS)
    np.testing.assert_array_equal(canonical, product[:, :, CROP_START : CROP_START + COLUMNS])
    assert canonical[0, 4, 16] == 99.0


def test_canonical_cutout_passes_unchanged_as_float32(rng):
    cutout = rng.standard_normal((3, ROWS, COLUMNS))
    out = to_canonical(cutout)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, cutout, rtol=1e-6)


@pytest.mark.parametrize(
    "shape", [(1, 8, 32), (1, 9, 31), (1, 9, 64), (9, 32), (1, 1, 9, 32), (0,)]
)
def test_wrong_shapes_are_rejected_naming_the_field(shape):
    with pytest.raises(InvalidInputError) as caught:
        to_canonical(np.zeros(shape), pointer="/cutout")
    assert caught.value.pointer == "/cutout"
    assert caught.value.status == 422
    assert f"got {shape}" in caught.value.detail


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e40])
def test_non_finite_values_are_rejected_with_the_item_index(bad):
    batch = np.zeros((3, ROWS, COLUMNS))
    batch[2, 1, 1] = bad  # 1e40 overflows float32 to infinity
    with pytest.raises(InvalidInputError) as caught:
        to_canonical(batch, pointer="/detections")
    assert caught.value.pointer == "/detections/2"


def test_non_numeric_arrays_are_rejected():
    with pytest.raises(InvalidInputError, match="floating point"):
        to_canonical(np.full((1, ROWS, COLUMNS), "x"))
