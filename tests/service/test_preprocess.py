import numpy as np
import pytest

from service.contract import COLUMNS, ROWS
from service.preprocess import Normalization, prepare, robust_centre_and_spread


def test_output_is_two_channels_in_noise_units(rng):
    cutouts = (100 + 7.0 * rng.standard_normal((50, ROWS, COLUMNS))).astype(np.float32)
    out = Normalization()(cutouts)
    assert out.shape == (50, 2, ROWS, COLUMNS) and out.dtype == np.float32
    assert abs(np.median(out[:, 0])) < 0.1
    assert 0.9 < np.std(out[:, 0]) < 1.1


def test_masked_pixels_are_zero_and_flagged(rng):
    cutout = rng.standard_normal((1, ROWS, COLUMNS)).astype(np.float32) + 5
    cutout[0, :, 10:13] = 0.0
    out = Normalization()(cutout)
    assert np.all(out[0, 0, :, 10:13] == 0.0)
    assert np.all(out[0, 1, :, 10:13] == 1.0)
    assert out[0, 1].sum() == ROWS * 3


def test_flux_scaling_is_divided_out(rng):
    """Why flux-scaling augmentation cannot help: normalisation is scale invariant."""
    cutouts = rng.standard_normal((20, ROWS, COLUMNS)).astype(np.float32)
    normalization = Normalization()
    np.testing.assert_allclose(normalization(cutouts * 3.7), normalization(cutouts), atol=1e-5)


def test_fully_masked_and_constant_cutouts_give_finite_input():
    cutouts = np.stack([np.zeros((ROWS, COLUMNS)), np.full((ROWS, COLUMNS), 4.0)]).astype(
        np.float32
    )
    out = Normalization()(cutouts)
    assert np.isfinite(out).all()
    assert np.all(out[0, 1] == 1.0)


def test_bright_pixels_are_clipped(rng):
    cutout = rng.standard_normal((1, ROWS, COLUMNS)).astype(np.float32)
    cutout[0, 4, 16] = 1e6
    assert Normalization(clip=25.0)(cutout)[0, 0].max() == 25.0


def test_manifest_round_trip_and_unknown_method():
    normalization = Normalization(clip=12.0)
    assert Normalization.from_manifest(normalization.to_manifest()) == normalization
    with pytest.raises(ValueError, match="unknown normalisation"):
        Normalization.from_manifest({"method": "minmax"})


def test_prepare_crops_product_cutouts_before_normalising(rng):
    product = rng.standard_normal((4, ROWS, 100)).astype(np.float32)
    np.testing.assert_array_equal(
        prepare(product, Normalization()), Normalization()(product[:, :, 34:66].copy())
    )


def test_robust_statistics_equal_numpys_nanmedian_definition(rng):
    flat = rng.standard_normal((200, 288)).astype(np.float32) * 5 + 2
    masked = rng.random((200, 288)) < rng.random((200, 1))  # 0% to 100% masked per row
    masked[0] = True
    centre, spread = robust_centre_and_spread(flat, masked)
    enough = (~masked).sum(axis=1) >= 16
    values = np.where(masked & enough[:, None], np.nan, flat)
    expected_centre = np.nanmedian(values, axis=1)
    expected_spread = np.nanmedian(np.abs(values - expected_centre[:, None]), axis=1) * 1.4826
    np.testing.assert_allclose(centre, expected_centre, rtol=1e-6)
    np.testing.assert_allclose(
        spread, np.where(expected_spread > 0, expected_spread, 1.0), rtol=1e-6
    )
