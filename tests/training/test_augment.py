import numpy as np

from service.preprocess import Normalization, prepare
from training.augment import Augmentation
from training.train import balanced_weights, balancing_factors


def cutouts_with_mask(rng):
    cutouts = rng.standard_normal((64, 9, 100)).astype(np.float32) + 3
    cutouts[:, :, 20:22] = 0.0
    return cutouts


def test_flip_mirrors_rows_about_the_trace(rng):
    cutouts = cutouts_with_mask(rng)
    flipped = Augmentation.only("flip")(cutouts, rng)
    changed = ~np.all(flipped == cutouts, axis=(1, 2))
    np.testing.assert_array_equal(flipped[changed], cutouts[changed][:, ::-1, :])
    assert 10 < changed.sum() < 54


def test_shifts_move_by_at_most_one_pixel_and_keep_masks(rng):
    cutouts = cutouts_with_mask(rng)
    shifted = Augmentation.only("shift")(cutouts, rng)
    for original, moved in zip(cutouts, shifted, strict=True):
        assert any(
            np.array_equal(np.roll(np.roll(original, dr, 0), dc, 1), moved)
            for dr in (-1, 0, 1)
            for dc in (-1, 0, 1)
        )
    assert np.array_equal((shifted == 0).sum(axis=(1, 2)), (cutouts == 0).sum(axis=(1, 2)))


def test_noise_redraw_adds_noise_but_keeps_masked_pixels_zero(rng):
    cutouts = cutouts_with_mask(rng)
    noisy = Augmentation.only("noise")(cutouts, rng)
    assert np.all(noisy[:, :, 20:22] == 0.0)
    assert np.std(noisy - cutouts) > 0.05
    assert np.std(noisy) < 1.3 * np.std(cutouts)


def test_flux_scaling_alone_does_not_change_model_input(rng):
    cutouts = cutouts_with_mask(rng)
    scaled = Augmentation.only("scale")(cutouts, rng)
    assert not np.allclose(scaled, cutouts)
    np.testing.assert_allclose(
        prepare(scaled, Normalization()), prepare(cutouts, Normalization()), atol=1e-4
    )


def test_balancing_factors_follow_2020_one_to_eight():
    vis_class = np.repeat([5, -2, 2], [800, 400, 10])
    assert balancing_factors(vis_class, max_factor=8) == {-2: 2, 2: 8, 5: 1}


def test_balanced_weights_give_real_and_fake_equal_weight():
    truth = np.array([True] * 3 + [False] * 9)
    weights = balanced_weights(truth)
    assert weights[truth].sum() == weights[~truth].sum()


def test_robust_augmentations_change_half_the_draws_and_keep_masks(rng):
    cutouts = cutouts_with_mask(rng)
    for name in ("mask", "rows", "pedestal", "correlated"):
        changed_by = Augmentation.only(name)(cutouts, rng)
        changed = ~np.all(changed_by == cutouts, axis=(1, 2))
        assert 10 < changed.sum() < 54, name
        assert np.all(changed_by[:, :, 20:22] == 0.0), name


def test_random_masking_never_masks_the_line(rng):
    cutouts = cutouts_with_mask(rng)
    masked = Augmentation.only("mask")(cutouts, rng)
    assert np.all(masked[:, :, 48:53] == cutouts[:, :, 48:53])
    assert (masked == 0).sum() > (cutouts == 0).sum()


def test_a_pedestal_survives_normalisation(rng):
    """Median subtraction removes a global offset, not a step: the CNN sees the pedestal."""
    cutouts = rng.standard_normal((256, 9, 100)).astype(np.float32) + 3
    stepped = Augmentation.only("pedestal")(cutouts, rng)
    before, after = prepare(cutouts, Normalization()), prepare(stepped, Normalization())
    changed = ~np.all(stepped == cutouts, axis=(1, 2))
    assert np.abs(after[changed, 0] - before[changed, 0]).mean() > 0.25
