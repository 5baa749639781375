import numpy as np
import pytest

from service.domain import DR1_CLASS_COUNTS, SKY_RESIDUAL_WINDOWS_A, VISUAL_CLASSES
from training.gallery import write_gallery
from training.simulators.a import simulate, throughput
from training.simulators.simulated_set import class_counts_for


@pytest.fixture(scope="module")
def sample():
    return simulate({c: 120 for c in VISUAL_CLASSES}, seed=5, with_fibers=True)


def test_same_seed_same_set_other_seed_other_set():
    counts = {5: 5, -2: 5, 0: 5}
    first, again, other = simulate(counts, 3), simulate(counts, 3), simulate(counts, 4)
    np.testing.assert_array_equal(first.im_sum, again.im_sum)
    np.testing.assert_array_equal(first.vis_class, again.vis_class)
    assert not np.array_equal(first.im_sum, other.im_sum)


def test_format_mirrors_the_hetdex_product(sample):
    n = len(sample)
    assert sample.im_sum.shape == (n, 9, 100) and sample.im_sum.dtype == np.float32
    assert sample.im_array.shape == (n, 4, 9, 100)
    assert sample.im_wave.shape == (n, 100)
    assert np.isfinite(sample.im_sum).all()
    steps = np.diff(sample.im_wave, axis=1)
    assert np.all((steps > 1.9) & (steps < 2.1))  # about 2 A per pixel
    np.testing.assert_allclose(sample.im_wave[:, 50], sample.wave, atol=0.01)  # line in column 50


def test_snr_spans_the_catalogue_range(sample):
    assert sample.sn.min() >= 4.8 and sample.sn.max() <= 30.0
    real = sample.vis_class >= 3
    assert np.median(sample.sn[sample.vis_class == 5]) > np.median(sample.sn[sample.vis_class == 3])
    assert np.mean(sample.sn[real] < 5.5) > 0.1


def test_dr1_mix_is_the_default_scaling():
    counts = class_counts_for(70_919)
    assert counts == DR1_CLASS_COUNTS
    small = class_counts_for(1000)
    assert sum(small.values()) == 1000 and set(small) == set(VISUAL_CLASSES)


def test_blue_lines_carry_fewer_counts():
    t = throughput(np.array([3500.0, 4040.0, 4700.0, 5400.0]))
    assert t[0] < t[1] < t[2] and t[2] == pytest.approx(t[3]) and t[3] == pytest.approx(1.0)


def stacked_row_profile(cutouts: np.ndarray) -> np.ndarray:
    """Row profile of the detection: the mean over the central columns, per cutout normalised."""
    centre = cutouts[:, :, 48:53].mean(axis=2)
    return (centre / np.abs(centre).sum(axis=1, keepdims=True)).mean(axis=0)


def test_real_lines_follow_the_trace_and_sky_residuals_fill_all_rows(sample):
    bright_real = (sample.vis_class >= 3) & (sample.sn > 8)
    line = stacked_row_profile(sample.im_sum[bright_real])
    centroid = np.sum(np.arange(9) * line) / line.sum()
    assert abs(centroid - 4) < 0.3
    assert line[4] > 3 * max(line[0], line[8])
    sky = stacked_row_profile(sample.im_sum[sample.family == "sky_residual"])

    def edge_to_centre(profile):
        return (profile[0] + profile[8]) / (2 * profile[4])

    assert edge_to_centre(sky) > 1.4 * edge_to_centre(line)  # sky: every fiber, both wings
    assert np.all(
        [
            any(lo <= w <= hi for lo, hi in SKY_RESIDUAL_WINDOWS_A)
            for w in sample.wave[sample.family == "sky_residual"]
        ]
    )


def test_cosmic_rays_are_sharp_and_real_lines_are_smooth(sample):
    def peakiness(cutouts):
        centre = cutouts[:, :, 45:56]
        return np.median(centre.max(axis=(1, 2)) / np.abs(centre).sum(axis=(1, 2)))

    bright = sample.sn > 8
    cosmic = peakiness(sample.im_sum[(sample.family == "cosmic_ray") & bright])
    line = peakiness(sample.im_sum[(sample.vis_class >= 3) & bright])
    assert cosmic > 2 * line


def test_every_artifact_family_is_present(sample):
    families = set(sample.family)
    for expected in ("bad_amp", "cosmic_ray", "sky_residual", "continuum_dips", "line"):
        assert expected in families
    assert any(f.startswith("bad_pixel_") for f in families)
    assert any(f.startswith("noise_") for f in families)
    bad_amp = sample.im_sum[sample.vis_class == -2]
    assert np.mean((bad_amp == 0).mean(axis=(1, 2)) > 0.2) > 0.2  # large zeroed areas are common


def test_gallery_is_a_png(tmp_path):
    path = write_gallery(tmp_path / "gallery.png", per_class=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
