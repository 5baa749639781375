"""Simulator B (``training.simulators.b``): reproducible, well formed and physically sane.

Each test checks a property the brief for simulator B asks for and fails if it is broken:
per-index determinism, shapes and dtypes, exact class counts, every family present, masked
pixels as the only zeros, real lines on the trace at column 50, defects across all rows, sky
residuals in their windows, and the per-class S/N distributions.
"""

import numpy as np
import pytest

from service.contract import PRODUCT_COLUMNS, PRODUCT_LINE_COLUMN, ROWS, TRACE_ROW
from service.domain import SKY_RESIDUAL_WINDOWS_A, TRUSTED_WAVE_RANGE_A, VISUAL_CLASSES
from training.simulators.b import FAMILIES, FAMILY_NOTES, render_detection, simulate
from training.simulators.simulated_set import TOP_FIBERS, SimulatedSet, class_counts_for

SEED = 4242
PER_CLASS = 90  # 720 detections: every family shows up several times
REAL_FAMILIES = [name for name, classes in FAMILIES.items() if min(classes) >= 3]
NOISE_FAMILIES = ["b_noise_gaussian", "b_noise_spike", "b_noise_incoherent", "b_noise_fiber"]


@pytest.fixture(scope="module")
def moderate() -> SimulatedSet:
    return simulate({c: PER_CLASS for c in VISUAL_CLASSES}, SEED, with_fibers=True)


@pytest.fixture(scope="module")
def bright_real() -> SimulatedSet:
    return simulate({5: 250}, SEED + 1)


@pytest.fixture(scope="module")
def defects() -> SimulatedSet:
    return simulate({-1: 300, 0: 300, 1: 100, 2: 100}, SEED + 2)


def _row_excess(images: np.ndarray) -> np.ndarray:
    """Median (over detections) excess per row at each cutout's peak column near column 50,
    over that row's far-column median, normalised so row 4 is 1."""
    far = np.median(np.concatenate([images[:, :, 5:35], images[:, :, 65:95]], axis=2), axis=2)
    excess = images - far[:, :, None]
    peak = excess[:, :, 46:55].sum(axis=1).argmax(axis=1) + 46
    at_peak = np.take_along_axis(excess, peak[:, None, None], axis=2)[:, :, 0]
    profile = np.median(at_peak, axis=0)
    return profile / profile[TRACE_ROW]


def test_shapes_dtypes_and_values_are_well_formed(moderate):
    n = len(VISUAL_CLASSES) * PER_CLASS
    assert len(moderate) == n
    assert moderate.detectid.dtype == np.int64
    assert np.array_equal(moderate.detectid, 2_000_500_000 + np.arange(n))
    assert moderate.im_wave.shape == (n, PRODUCT_COLUMNS) and moderate.im_wave.dtype == np.float32
    assert moderate.im_sum.shape == (n, ROWS, PRODUCT_COLUMNS)
    assert moderate.im_sum.dtype == np.float32
    assert moderate.im_array.shape == (n, TOP_FIBERS, ROWS, PRODUCT_COLUMNS)
    assert moderate.im_array.dtype == np.float32
    assert moderate.vis_class.dtype == np.int8
    assert moderate.sn.dtype == np.float32 and moderate.wave.dtype == np.float32
    for array in (moderate.im_wave, moderate.im_sum, moderate.im_array, moderate.sn):
        assert np.isfinite(array).all()
    assert all(len(str(name).encode()) <= 32 for name in moderate.family)
    assert moderate.meta["simulator"] == "B" and moderate.meta["seed"] == SEED
    assert moderate.meta["class_counts"] == {c: PER_CLASS for c in VISUAL_CLASSES}


def test_wavelength_grid_is_about_two_angstrom_per_pixel_with_the_line_at_column_50(moderate):
    assert np.array_equal(moderate.im_wave[:, PRODUCT_LINE_COLUMN], moderate.wave)
    step = np.diff(moderate.im_wave.astype(np.float64), axis=1)
    assert step.min() > 1.95 and step.max() < 2.05
    assert moderate.wave.min() > 3400 and moderate.wave.max() < 5600


def test_class_counts_are_exact_and_the_order_is_shuffled():
    counts = class_counts_for(300)
    data = simulate(counts, 3, first_detectid=7)
    classes, found = np.unique(data.vis_class, return_counts=True)
    assert dict(zip(classes.tolist(), found.tolist(), strict=True)) == counts
    assert data.detectid[0] == 7
    assert not np.all(np.diff(data.vis_class) >= 0)  # not sorted by class


def test_same_seed_gives_the_same_set_and_another_seed_does_not():
    counts = {c: 6 for c in VISUAL_CLASSES}
    one, two, other = simulate(counts, 11), simulate(counts, 11), simulate(counts, 12)
    for field in ("im_sum", "im_wave", "vis_class", "sn", "wave", "family"):
        assert np.array_equal(getattr(one, field), getattr(two, field)), field
    assert not np.array_equal(one.im_sum, other.im_sum)


def test_a_detection_depends_only_on_seed_index_and_class(moderate):
    for i in np.random.default_rng(0).choice(len(moderate), 25, replace=False):
        alone = render_detection(SEED, int(i), int(moderate.vis_class[i]))
        assert np.array_equal(alone.im_sum, moderate.im_sum[i])
        assert np.array_equal(alone.im_array, moderate.im_array[i])
        assert alone.family == moderate.family[i] and np.float32(alone.sn) == moderate.sn[i]
    small, large = simulate({4: 5}, 99), simulate({4: 14}, 99)
    assert np.array_equal(small.im_sum, large.im_sum[:5])
    assert np.array_equal(small.family, large.family[:5])


def test_fibers_are_optional_and_do_not_change_im_sum():
    counts = {-2: 5, 0: 5, 5: 5}
    without, with_fibers = simulate(counts, 5), simulate(counts, 5, with_fibers=True)
    assert without.im_array is None
    assert np.array_equal(without.im_sum, with_fibers.im_sum)


def test_progress_bar_changes_nothing():
    assert np.array_equal(simulate({3: 4}, 8, progress=True).im_sum, simulate({3: 4}, 8).im_sum)


def test_every_family_appears_and_only_in_its_classes(moderate):
    assert set(moderate.family.tolist()) == set(FAMILIES)
    assert set(FAMILY_NOTES) == set(FAMILIES)
    for name, classes in FAMILIES.items():
        drawn = set(moderate.vis_class[moderate.family == name].tolist())
        assert drawn <= set(classes), name
    # every class is covered and the real families are exactly the real classes' families
    assert set().union(*FAMILIES.values()) == set(VISUAL_CLASSES)
    assert all(set(FAMILIES[name]) <= {3, 4, 5} for name in REAL_FAMILIES)
    assert len({n for n, c in FAMILIES.items() if c == (-2,)}) >= 5  # bad-amp signatures
    assert len({n for n, c in FAMILIES.items() if c == (-1,)}) >= 4  # bad-pixel kinds
    assert len([n for n in FAMILIES if n.startswith("b_noise_")]) >= 5  # noise excursions


def test_masked_pixels_are_the_only_zeros(moderate):
    masked_detections = 0
    for i in range(0, len(moderate), 2):
        d = render_detection(SEED, i, int(moderate.vis_class[i]))
        assert np.array_equal(d.im_sum == 0.0, d.sum_mask)
        assert np.array_equal(d.im_array == 0.0, d.fiber_mask)
        masked_detections += bool(d.fiber_mask.any())
    assert masked_detections > 30
    # zeros come in the shapes the families promise
    centre = moderate.im_sum[moderate.family == "b_bad_masked_centre"]
    zero_columns = (centre == 0.0).all(axis=1)  # (n, 100): columns zeroed in every row
    assert zero_columns[:, PRODUCT_LINE_COLUMN - 3 : PRODUCT_LINE_COLUMN + 4].any(axis=1).all()
    amp = moderate.im_array[moderate.family == "b_bad_amp_masked"][:, 0]
    assert ((amp == 0.0).all(axis=1).sum(axis=1) >= 8).all()  # large zeroed areas


def test_real_lines_are_centred_on_column_50_and_peak_on_the_trace(bright_real):
    bright = bright_real.im_sum[bright_real.sn > 10]
    assert len(bright) > 80
    mean = bright.mean(axis=0)
    row, col = np.unravel_index(mean.argmax(), mean.shape)
    assert row == TRACE_ROW and abs(col - PRODUCT_LINE_COLUMN) <= 1
    peaks = bright[:, 3:6, 40:61].sum(axis=1).argmax(axis=1) + 40
    assert np.median(np.abs(peaks - PRODUCT_LINE_COLUMN)) <= 1
    profile = _row_excess(bright)
    assert profile[0] < 0.4 and profile[-1] < 0.4  # a fiber profile, not a column


def test_bad_pixel_features_run_across_all_rows(defects, bright_real):
    for name in ("b_bad_column_hot", "b_bad_column_wide"):
        profile = _row_excess(defects.im_sum[defects.family == name])
        assert profile.min() > 0.6, (name, profile)
    for name in ("b_bad_flat_dip", "b_bad_charge_trap"):
        profile = _row_excess(defects.im_sum[defects.family == name])
        assert profile.min() > 0.2, (name, profile)
    real_edges = _row_excess(bright_real.im_sum[bright_real.sn > 10])[[0, -1]]
    hot_edges = _row_excess(defects.im_sum[defects.family == "b_bad_column_hot"])[[0, -1]]
    assert (hot_edges > 2 * real_edges).all()


def test_sky_residuals_sit_in_their_windows_and_fill_the_rows(defects):
    residual = defects.family == "b_sky_residual"
    assert residual.sum() > 20
    waves = defects.wave[residual]
    inside = np.zeros(len(waves), dtype=bool)
    for low, high in SKY_RESIDUAL_WINDOWS_A:
        inside |= (waves >= low) & (waves <= high)
    assert inside.all()
    assert _row_excess(defects.im_sum[residual]).min() > 0.4


def test_real_lines_lie_in_the_trusted_range(moderate):
    real = moderate.vis_class >= 3
    low, high = TRUSTED_WAVE_RANGE_A
    assert (moderate.wave[real] >= low).all() and (moderate.wave[real] <= high).all()


def test_noise_follows_the_sky_light_where_sky_dominates(defects):
    """Red detections are sky-limited (noisier on the trace); blue ones read-noise limited."""
    noise = np.isin(defects.family, NOISE_FAMILIES)

    def edge_over_trace(selection):
        far = np.concatenate(
            [defects.im_sum[selection][:, :, :25], defects.im_sum[selection][:, :, 75:]], 2
        )
        mad = np.median(np.abs(far - np.median(far, axis=2, keepdims=True)), axis=(0, 2))
        return (mad[0] + mad[-1]) / (2 * mad[TRACE_ROW])

    red = edge_over_trace(noise & (defects.wave > 4700))
    blue = edge_over_trace(noise & (defects.wave < 4000))
    assert red < 0.9 and red < blue - 0.05


def test_sn_distributions_per_class(moderate):
    sn, cls = moderate.sn, moderate.vis_class
    assert sn.min() >= 4.8
    for c in (0, 1, 2, 3):
        assert np.mean(sn[cls == c] <= 5.5) >= 0.65, c  # they hug the catalogue cut
    assert np.median(sn[cls == 5]) > 8 and sn[cls == 5].max() > 20  # confidently real is bright
    assert 5.5 < np.median(sn[cls == 4]) < 8
    assert np.median(sn[cls == 2]) < 5.3 and np.median(sn[cls == 3]) < 5.6
    for c in (-2, -1):  # bad amplifiers and pixels fool the pipeline at any S/N
        assert np.median(sn[cls == c]) > 5.3 and sn[cls == c].max() > 8


def test_the_pipeline_filter_reads_the_catalogue_sn(moderate):
    ratios = np.array(
        [
            render_detection(SEED, i, int(moderate.vis_class[i])).measured_sn / moderate.sn[i]
            for i in range(0, len(moderate), 3)
        ]
    )
    assert np.mean(np.abs(ratios - 1.0) < 0.05) > 0.9
    assert ratios.min() > 0.5


def test_possibly_spurious_and_possibly_real_overlap_while_sn_separates_real_ones(moderate):
    """A crude central-excess statistic cannot split 2 from 3, but splits 3 from 5 (brighter)."""
    images = moderate.im_sum
    far = np.concatenate([images[:, :, 10:30], images[:, :, 70:90]], axis=2)
    scale = np.median(np.abs(far - np.median(far, axis=2, keepdims=True)), axis=(1, 2)) + 1e-3
    stat = images[:, 2:7, 47:54].mean(axis=(1, 2)) / scale

    def auc(low: int, high: int) -> float:
        a, b = stat[moderate.vis_class == low], stat[moderate.vis_class == high]
        return float((a[:, None] < b[None, :]).mean() + 0.5 * (a[:, None] == b[None, :]).mean())

    assert auc(2, 3) < 0.8
    assert auc(3, 5) > 0.88


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="unknown visual classes"):
        simulate({7: 3}, 1)
    with pytest.raises(ValueError, match="non-negative"):
        simulate({5: -1}, 1)
    with pytest.raises(ValueError, match="unknown visual class"):
        render_detection(1, 0, 9)
