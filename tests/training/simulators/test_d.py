import numpy as np
import pytest

from service.contract import PRODUCT_COLUMNS, PRODUCT_LINE_COLUMN, ROWS, TRACE_ROW
from training.dataset import read_labelled, write_dataset
from training.simulators.d import FAMILIES, FAMILY_NOTES, SIMULATOR, VERSION, simulate
from training.simulators.simulated_set import TOP_FIBERS

COUNTS = {-2: 40, -1: 30, 0: 120, 1: 60, 2: 40, 3: 30, 4: 40, 5: 80}


@pytest.fixture(scope="module")
def data():
    return simulate(COUNTS, seed=5, with_fibers=True)


def test_shapes_and_dtypes(data):
    n = sum(COUNTS.values())
    assert len(data) == n
    assert data.detectid.dtype == np.int64
    assert np.array_equal(data.detectid, 4_000_500_000 + np.arange(n))
    assert data.im_wave.shape == (n, PRODUCT_COLUMNS) and data.im_wave.dtype == np.float32
    assert data.im_sum.shape == (n, ROWS, PRODUCT_COLUMNS) and data.im_sum.dtype == np.float32
    assert data.im_array.shape == (n, TOP_FIBERS, ROWS, PRODUCT_COLUMNS)
    assert data.im_array.dtype == np.float32
    assert data.vis_class.dtype == np.int8
    assert data.sn.dtype == np.float32 and data.wave.dtype == np.float32
    assert data.meta == {"simulator": SIMULATOR, "version": VERSION, "seed": 5}


def test_wavelengths_centred_on_the_line(data):
    assert np.all((data.wave >= 3500) & (data.wave <= 5500))
    np.testing.assert_allclose(data.im_wave[:, PRODUCT_LINE_COLUMN], data.wave, atol=1e-3)
    step = np.diff(data.im_wave, axis=1)
    assert np.all((step > 1.95) & (step < 2.05))


def test_finite_with_exact_zeros_for_masks(data):
    assert np.isfinite(data.im_sum).all() and np.isfinite(data.im_array).all()
    zeros = data.im_sum == 0.0
    assert zeros.any(), "chip ends and bad amplifiers must leave masked pixels"
    blue = data.wave < 3560  # columns below 3470 A are off the chip
    assert blue.any() and np.all(data.im_sum[blue][:, :, :2] == 0.0)
    assert zeros.mean() < 0.2


def test_exact_class_counts_and_shuffled_order(data):
    classes, counts = np.unique(data.vis_class, return_counts=True)
    assert dict(zip(classes.tolist(), counts.tolist(), strict=True)) == COUNTS
    assert not np.all(np.diff(data.vis_class) >= 0)


def test_reproducible(data):
    again = simulate(COUNTS, seed=5, with_fibers=True)
    np.testing.assert_array_equal(again.im_sum, data.im_sum)
    np.testing.assert_array_equal(again.im_array, data.im_array)
    assert not np.array_equal(simulate(COUNTS, seed=6).im_sum, data.im_sum)


def test_detection_depends_only_on_seed_index_and_class():
    small, large = simulate({0: 5}, seed=9), simulate({0: 12}, seed=9, with_fibers=True)
    np.testing.assert_array_equal(small.im_sum, large.im_sum[:5])
    np.testing.assert_array_equal(small.family, large.family[:5])
    np.testing.assert_array_equal(small.sn, large.sn[:5])
    assert not np.array_equal(simulate({5: 5}, seed=9).im_sum, small.im_sum)


def test_families_and_their_classes():
    data = simulate({c: 150 for c in range(-2, 6)}, seed=1)
    assert set(data.family) == set(FAMILIES) == set(FAMILY_NOTES)
    for family, classes in FAMILIES.items():
        assert family.startswith("d_")
        seen = set(data.vis_class[data.family == family].tolist())
        assert seen == set(classes), family
    new = np.char.startswith(data.family.astype(str), "d_new_")
    fake = data.vis_class < 3
    assert 0 < new.sum() <= 0.08 * fake.sum()
    assert not np.any(new & ~fake)


def test_real_lines_brighter_on_the_trace_than_fakes(data):
    peak = data.im_sum[:, TRACE_ROW, PRODUCT_LINE_COLUMN - 1 : PRODUCT_LINE_COLUMN + 2].mean(1)
    real = data.vis_class >= 3
    assert peak[real].mean() > 2 * peak[~real].mean()
    confident, possible = data.vis_class == 5, data.vis_class == 3
    assert data.sn[confident].mean() > data.sn[possible].mean()


def test_sn_floor(data):
    assert data.sn.min() >= 4.8
    assert np.mean(data.sn < 5.5) > 0.3, "most candidates sit in the hard regime"


def test_noise_is_heavy_tailed(data):
    quiet = data.im_sum[data.family == "d_noise"][:, :, :30]
    quiet = quiet[quiet != 0]
    z = (quiet - np.median(quiet)) / (1.4826 * np.median(np.abs(quiet - np.median(quiet))))
    assert np.mean(np.abs(z) > 4) > 1e-4


@pytest.mark.parametrize(
    ("counts", "seed"),
    [({7: 1}, 0), ({-3: 1}, 0), ({0: -1}, 0), ({0: 1.5}, 0), ({0: 1}, -1)],
)
def test_bad_arguments(counts, seed):
    with pytest.raises(ValueError):
        simulate(counts, seed=seed)


def test_empty_and_progress():
    assert len(simulate({}, seed=0)) == 0
    assert len(simulate({3: 2}, seed=0, progress=True)) == 2


def test_dataset_round_trip(tmp_path):
    small = simulate({-2: 2, -1: 2, 0: 3, 4: 2, 5: 3}, seed=3, with_fibers=True)
    loaded = read_labelled(write_dataset(tmp_path / "d.h5", small))
    np.testing.assert_array_equal(loaded.detectid, small.detectid)
    np.testing.assert_array_equal(loaded.im_sum, small.im_sum)
    np.testing.assert_array_equal(loaded.vis_class, small.vis_class)
    np.testing.assert_array_equal(loaded.family, small.family)
    np.testing.assert_allclose(loaded.sn, small.sn)
    assert loaded.summary()["real"] == 5
