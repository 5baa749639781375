"""Novelty: uniform on in-distribution data, high on what the reference never contained."""

import numpy as np
import pytest

from service.novelty import Novelty, pooled_pixels, share_below


def inputs(rng: np.random.Generator, n: int, shift: float = 0.0):
    model_input = rng.normal(size=(n, 2, 9, 32)).astype(np.float32)
    model_input[:, 1] = 0.0
    embedding = rng.normal(size=(n, 8)).astype(np.float32) + shift
    return model_input, embedding


def test_share_below_is_the_strict_empirical_cdf():
    reference = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(share_below(reference, np.array([0.5, 2.0, 9.0])), [0, 0.25, 1])


def test_pooled_pixels_averages_blocks_of_both_channels():
    model_input = np.zeros((1, 2, 9, 32), dtype=np.float32)
    model_input[0, 0, 3:6, 0:2] = 6.0  # one 3 x 2 block
    model_input[0, 1, :, :] = 1.0
    pooled = pooled_pixels(model_input)
    assert pooled.shape == (1, 96)
    assert pooled[0, 16] == 6.0 and pooled[0, :16].sum() == 0.0 and np.all(pooled[0, 48:] == 1.0)


def largest_cdf_gap(sample: np.ndarray) -> float:
    """Kolmogorov-Smirnov statistic of ``sample`` against the uniform distribution on [0, 1]:
    the largest gap between its empirical CDF and the diagonal, from either side of each step."""
    ordered = np.sort(sample.astype(np.float64))
    n = len(ordered)
    steps = np.arange(1, n + 1) / n
    return float(max(np.max(steps - ordered), np.max(ordered - (steps - 1.0 / n))))


def test_largest_cdf_gap_is_the_kolmogorov_smirnov_statistic():
    assert largest_cdf_gap(np.array([0.125, 0.375, 0.625, 0.875])) == 0.125
    assert largest_cdf_gap(np.array([0.1, 0.2, 0.3, 0.4])) == 0.6  # F(0.4) = 1 against 0.4


def test_in_distribution_is_flagged_at_most_one_percent_and_shifted_data_mostly(rng):
    calibration = 4000
    novelty = Novelty.fit(inputs(rng, 3000), inputs(rng, calibration))
    # The threshold is the binomial bound it is built on: two standard errors above 99%.
    assert novelty.threshold == pytest.approx(1.0 - 0.01 + 2.0 * np.sqrt(0.01 * 0.99 / calibration))
    fresh_n = 10_000  # enough that the measured rate is within +-0.2% of the true one
    fresh = novelty(*inputs(rng, fresh_n))
    assert fresh.dtype == np.float32 and np.all((fresh >= 0) & (fresh <= 1))
    # Uniform on in-distribution data, over the whole range rather than at the median alone:
    # fresh novelty is the rank of fresh cutouts among calibration ones, so its CDF may stray
    # from the diagonal by no more than the two-sample Kolmogorov-Smirnov bound (alpha = 0.001).
    bound = 1.95 * np.sqrt((calibration + fresh_n) / (calibration * fresh_n))
    assert largest_cdf_gap(fresh) < bound
    np.testing.assert_allclose(
        np.quantile(fresh, [0.05, 0.25, 0.5, 0.75, 0.95]), [0.05, 0.25, 0.5, 0.75, 0.95], atol=0.02
    )
    flagged = novelty.flag(fresh).mean()
    assert flagged <= 0.01  # at most one percent
    assert flagged > 0.002  # and not by flagging nothing: the bound sits near 1 - 0.993
    shifted = novelty(*inputs(rng, 500, shift=3.0))
    assert novelty.flag(shifted).mean() > 0.9


def test_pixels_catch_what_the_embedding_does_not(rng):
    """An artifact the embedding maps among known cutouts still stands out in its pixels."""
    novelty = Novelty.fit(inputs(rng, 3000), inputs(rng, 4000))
    model_input, embedding = inputs(rng, 300)
    model_input[:, 0, :, 14:18] += 8.0  # a bright column across every row
    assert novelty.flag(novelty(model_input, embedding)).mean() > 0.9


def test_arrays_round_trip(rng):
    novelty = Novelty.fit(inputs(rng, 500), inputs(rng, 500))
    again = Novelty.from_arrays(novelty.to_arrays())
    probe = inputs(rng, 50)
    np.testing.assert_array_equal(novelty(*probe), again(*probe))
    assert again.threshold == novelty.threshold
