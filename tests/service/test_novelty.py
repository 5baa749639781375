"""Novelty: uniform on in-distribution data, high on what the reference never contained."""

import numpy as np

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


def test_in_distribution_is_flagged_at_most_one_percent_and_shifted_data_mostly(rng):
    novelty = Novelty.fit(inputs(rng, 3000), inputs(rng, 4000))
    fresh = novelty(*inputs(rng, 4000))
    assert fresh.dtype == np.float32 and np.all((fresh >= 0) & (fresh <= 1))
    assert abs(np.median(fresh) - 0.5) < 0.05  # uniform on in-distribution data
    assert novelty.flag(fresh).mean() <= 0.015
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
