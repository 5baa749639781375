"""Stage 2 must decide: thresholds, SVM and the refusals that keep a constant SVM out."""

import numpy as np
import pytest

from training.ensemble import (
    ConstantOverMapError,
    NoBandBeatsConstantError,
    Stage2Error,
    choose,
    is_constant,
    make_svm,
)


def two_clusters(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CNN scores that are unsure in the middle, and a map where the truth is left vs right."""
    truth = rng.random(n) < 0.5
    coords = rng.normal(size=(n, 2)) + np.where(truth, 2.0, -2.0)[:, None] * [1.0, 0.0]
    score = np.clip(np.where(truth, 0.6, 0.4) + rng.normal(0, 0.25, n), 0, 1)
    return score, coords, truth


def test_choose_fits_an_svm_that_decides_where_the_map_separates_the_truth(rng):
    score, coords, truth = two_clusters(rng, 800)
    choice = choose(score, coords, truth, seed=0, map_coords=coords)
    band = (score >= choice.low) & (score < choice.high)
    assert band.mean() >= 0.05
    decision = choice.svm.decision_function(coords[band]) > 0
    assert np.mean(decision == truth[band]) > 0.9
    assert not is_constant(choice.svm, coords)
    chosen = [r for r in choice.grid if (r["low"], r["high"]) == (choice.low, choice.high)]
    assert chosen[0]["svm_accuracy"] > chosen[0]["constant_accuracy"] + 0.3


def test_choose_refuses_when_the_map_says_nothing_about_the_truth(rng):
    score, coords, truth = two_clusters(rng, 800)
    shuffled = rng.permutation(coords)  # the map no longer knows the truth
    with pytest.raises(NoBandBeatsConstantError, match="beats the best constant decision") as e:
        choose(score, shuffled, truth, seed=0, map_coords=shuffled)
    assert not isinstance(e.value, ConstantOverMapError)
    assert isinstance(e.value, Stage2Error)  # what training/fit.py and the CLI catch


def test_choose_refuses_an_svm_that_is_constant_over_the_map(rng):
    """A band that is almost all fake: the SVM can only say 'fake' on the training map."""
    n = 800
    truth = rng.random(n) < 0.03
    coords = rng.normal(size=(n, 2))
    coords[truth] += [4.0, 0.0]  # the few real ones sit apart, off the training map
    score = np.full(n, 0.5)
    far_map = rng.normal(size=(500, 2)) - [3.0, 0.0]
    with pytest.raises(ConstantOverMapError, match="one sign over the whole training map") as e:
        choose(score, coords, truth, seed=0, map_coords=far_map)
    assert not isinstance(e.value, NoBandBeatsConstantError)
    assert isinstance(e.value, Stage2Error)


def test_is_constant_sees_both_sides(rng):
    coords = rng.normal(size=(400, 2))
    svm = make_svm(0).fit(coords, coords[:, 0] > 0)
    assert not is_constant(svm, coords)
    assert is_constant(svm, coords[coords[:, 0] > 1.0])
