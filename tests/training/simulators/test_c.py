"""Simulator C: the SimulatedSet contract, reproducibility, the family catalogue and the physics
that a trained model relies on (real lines brighter on the trace, S/N per class)."""

import numpy as np
import pytest

from service.contract import PRODUCT_COLUMNS, PRODUCT_LINE_COLUMN, ROWS, TRACE_ROW
from service.domain import DR1_CLASS_COUNTS, VISUAL_CLASSES
from training.dataset import read_labelled, write_dataset
from training.simulators.c import (
    FAMILIES,
    FAMILY_NOTES,
    FAMILY_SHARES,
    SIMULATOR,
    SPECTRAL_RANGE_A,
    VERSION,
    render_detection,
    simulate,
)
from training.simulators.simulated_set import TOP_FIBERS

PER_CLASS = 250


@pytest.fixture(scope="module")
def balanced():
    """Every class equally often: enough draws for each family, with the top fibers."""
    return simulate({c: PER_CLASS for c in VISUAL_CLASSES}, seed=31, with_fibers=True)


def trace_contrast(im_sum: np.ndarray) -> np.ndarray:
    """Trace at the line column over the noise of the blue end (unmasked pixels only)."""
    side = im_sum[:, :, 5:30]
    noise = np.array([np.std(x[x != 0]) if np.count_nonzero(x) > 20 else np.nan for x in side])
    return im_sum[:, TRACE_ROW, PRODUCT_LINE_COLUMN - 1 : PRODUCT_LINE_COLUMN + 2].mean(1) / noise


def test_shapes_dtypes_and_ranges(balanced):
    n = len(balanced)
    assert n == PER_CLASS * len(VISUAL_CLASSES)
    assert balanced.detectid.dtype == np.int64
    np.testing.assert_array_equal(balanced.detectid, 3_000_500_000 + np.arange(n))
    assert balanced.im_wave.shape == (n, PRODUCT_COLUMNS) and balanced.im_wave.dtype == np.float32
    assert balanced.im_sum.shape == (n, ROWS, PRODUCT_COLUMNS)
    assert balanced.im_sum.dtype == np.float32
    assert balanced.im_array.shape == (n, TOP_FIBERS, ROWS, PRODUCT_COLUMNS)
    assert balanced.im_array.dtype == np.float32
    assert balanced.vis_class.dtype == np.int8
    assert balanced.sn.dtype == np.float32 and balanced.wave.dtype == np.float32
    assert np.isfinite(balanced.im_sum).all() and np.isfinite(balanced.im_array).all()
    assert np.all((balanced.wave >= 3500) & (balanced.wave <= 5500))
    np.testing.assert_allclose(np.diff(balanced.im_wave, axis=1), 2.0)
    assert np.all(np.abs(balanced.im_wave[:, PRODUCT_LINE_COLUMN] - balanced.wave) <= 1.0 + 1e-3)
    assert all(name.startswith("c_") for name in balanced.family)
    assert balanced.meta == {"simulator": SIMULATOR, "version": VERSION, "seed": 31}
    assert np.abs(balanced.im_sum).max() < 1e6


def test_masked_pixels_are_exact_zeros(balanced):
    outside = (balanced.im_wave < SPECTRAL_RANGE_A[0]) | (balanced.im_wave > SPECTRAL_RANGE_A[1])
    assert outside.any()
    assert np.all(balanced.im_sum.transpose(0, 2, 1)[outside] == 0)
    centre = balanced.family == "c_masked_centre"
    assert np.all(balanced.im_sum[centre, :, PRODUCT_LINE_COLUMN] == 0)
    inside = ~outside[:, None, :].repeat(ROWS, 1)
    assert np.mean(balanced.im_sum[inside] == 0) < 0.1  # zeros are masks, not everywhere


def test_exact_class_counts_in_a_shuffled_order():
    counts = {-2: 7, -1: 0, 1: 3, 3: 4, 5: 11}
    data = simulate(counts, seed=4)
    classes, found = np.unique(data.vis_class, return_counts=True)
    assert dict(zip(classes.tolist(), found.tolist(), strict=True)) == {
        c: n for c, n in counts.items() if n
    }
    assert not np.all(np.diff(data.vis_class) >= 0)
    assert len(simulate({}, seed=4)) == 0


def test_reproducible_and_each_detection_independent_of_the_others():
    first = simulate({0: 5, 4: 5}, seed=9, with_fibers=True)
    again = simulate({0: 5, 4: 5}, seed=9, with_fibers=True)
    np.testing.assert_array_equal(first.im_sum, again.im_sum)
    np.testing.assert_array_equal(first.im_array, again.im_array)
    np.testing.assert_array_equal(first.family, again.family)
    assert not np.array_equal(first.im_sum, simulate({0: 5, 4: 5}, seed=10).im_sum)
    small, large = simulate({5: 6}, seed=2), simulate({5: 15}, seed=2)
    np.testing.assert_array_equal(small.im_sum, large.im_sum[:6])
    np.testing.assert_array_equal(small.sn, large.sn[:6])
    one = render_detection(9, 3, int(first.vis_class[3]))
    np.testing.assert_array_equal(one.im_sum, first.im_sum[3])
    np.testing.assert_array_equal(one.im_array, first.im_array[3])
    assert (one.family, np.float32(one.sn)) == (first.family[3], first.sn[3])


def test_every_family_appears_with_its_classes(balanced):
    assert set(FAMILY_NOTES) == set(FAMILIES)
    assert set(balanced.family) == set(FAMILIES)
    for name, cls in zip(balanced.family, balanced.vis_class, strict=True):
        assert int(cls) in FAMILIES[name]
    for cls, shares in FAMILY_SHARES.items():
        assert sum(shares.values()) == pytest.approx(1.0)
        real = {name for name in shares if FAMILIES[name][-1] >= 3}
        assert real == (set(shares) if cls >= 3 else set())


def test_novel_families_are_fakes_and_rare_in_the_dr1_mix():
    novel = [name for name in FAMILIES if name.startswith("c_new_")]
    assert 3 <= len(novel) <= 4
    assert all(max(FAMILIES[name]) <= 2 for name in novel)
    fakes = {c: n for c, n in DR1_CLASS_COUNTS.items() if c < 3}
    expected = sum(n * FAMILY_SHARES[c].get(name, 0) for c, n in fakes.items() for name in novel)
    assert 0.01 < expected / sum(fakes.values()) <= 0.05


def test_real_lines_are_brighter_on_the_trace(balanced):
    contrast = trace_contrast(balanced.im_sum)
    real = balanced.vis_class >= 3
    assert np.nanmedian(contrast[real]) > np.nanmedian(contrast[~real]) + 0.2
    assert np.nanmean(contrast[real]) > np.nanmean(contrast[~real])
    confident = np.nanmedian(contrast[balanced.vis_class == 5])
    for fake in (-2, -1, 0, 1, 2):
        assert confident > np.nanmedian(contrast[balanced.vis_class == fake]) + 0.7
    noise = np.isin(balanced.family, ["c_noise_excursion", "c_noisy_fiber"])
    assert np.nanmedian(contrast[balanced.family == "c_line_narrow"]) > np.nanmedian(
        contrast[noise]
    )


def test_sn_per_class_follows_the_brief(balanced):
    sn, cls = balanced.sn, balanced.vis_class
    assert sn.min() >= 4.8
    median = {c: np.median(sn[cls == c]) for c in VISUAL_CLASSES}
    assert median[5] > median[4] > median[3]
    assert np.mean(sn[cls == 3] < 5.5) > 0.5  # possibly real: the hard 4.8-5.5 regime
    assert np.mean(sn[cls == 5] > 5.5) > 0.85
    for fake in (0, 1, 2):
        assert median[fake] < 6.0


@pytest.mark.parametrize(
    ("counts", "seed", "match"),
    [
        ({7: 1}, 0, "unknown visual classes"),
        ({3: -1}, 0, "must not be negative"),
        ({3: 1}, -1, "seed must not be negative"),
    ],
)
def test_bad_arguments_are_refused(counts, seed, match):
    with pytest.raises(ValueError, match=match):
        simulate(counts, seed)


def test_round_trip_through_the_dataset_file(tmp_path, capsys):
    data = simulate({-2: 2, -1: 2, 0: 2, 3: 2, 5: 2}, seed=5, with_fibers=True, progress=True)
    assert "simulating" in capsys.readouterr().err
    labelled = read_labelled(write_dataset(tmp_path / "c.h5", data))
    np.testing.assert_array_equal(labelled.detectid, data.detectid)
    np.testing.assert_array_equal(labelled.im_sum, data.im_sum)
    np.testing.assert_array_equal(labelled.vis_class, data.vis_class)
    np.testing.assert_array_equal(labelled.sn, data.sn)
    np.testing.assert_array_equal(labelled.family, data.family)
    assert labelled.summary()["real"] == 4
