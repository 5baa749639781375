import numpy as np
import pytest

from training import metrics


def test_completeness_contamination_and_fom_by_hand():
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    kept = np.array([1, 1, 1, 0, 1, 0, 0, 0], dtype=bool)
    summary = metrics.summary(truth, kept)
    assert summary["completeness"] == pytest.approx(0.75)
    assert summary["contamination"] == pytest.approx(0.25)
    assert summary["fom"] == pytest.approx(0.75 * 0.75)
    assert summary["balanced_accuracy"] == pytest.approx(0.75)


def test_accept_everything_is_the_pipeline_baseline():
    truth = np.array([1, 0, 1, 0, 0], dtype=bool)
    summary = metrics.summary(truth, np.ones(5, dtype=bool))
    assert summary["completeness"] == 1.0
    assert summary["contamination"] == pytest.approx(0.6)


def test_score_bands_count_and_contamination():
    score = np.array([0.01, 0.02, 0.5, 0.6, 0.99, 0.98])
    truth = np.array([0, 0, 1, 0, 1, 1], dtype=bool)
    bands = {b["band"]: b for b in metrics.score_bands(score, truth, 0.1, 0.9)}
    assert bands["discard"] == {"band": "discard", "count": 2, "contamination": 1.0}
    assert bands["ambiguous"]["contamination"] == pytest.approx(0.5)
    assert bands["keep"]["count"] == 2 and bands["keep"]["contamination"] == 0.0


def test_best_single_threshold_separates_separable_scores():
    score = np.r_[np.linspace(0.0, 0.3, 50), np.linspace(0.6, 1.0, 50)]
    truth = np.r_[np.zeros(50, bool), np.ones(50, bool)]
    t = metrics.best_single_threshold(score, truth)
    assert 0.3 < t <= 0.6
    assert metrics.fom(truth, score >= t) == 1.0


def test_by_snr_and_per_class():
    sn = np.array([5.0, 5.2, 6.0, 9.0])
    truth = np.array([1, 0, 1, 1], dtype=bool)
    kept = np.array([1, 1, 1, 0], dtype=bool)
    split = metrics.by_snr(sn, truth, kept)
    assert split["4.8-5.5"]["n"] == 2 and split[">7"]["completeness"] == 0.0
    per_class = metrics.per_class_accuracy(np.array([5, 0, 4, 5]), truth, kept)
    assert per_class["5"] == {"n": 2, "accuracy": 0.5}
    assert "-2" not in per_class


def test_fom_difference_interval_brackets_a_clear_and_a_null_difference():
    rng = np.random.default_rng(0)
    truth = rng.random(4000) < 0.5
    good = np.where(rng.random(4000) < 0.95, truth, ~truth)
    worse = np.where(rng.random(4000) < 0.85, truth, ~truth)
    clear = metrics.fom_difference_interval(truth, good, worse, resamples=300)
    assert clear["ci95"][0] > 0 and clear["difference"] > 0.1
    null = metrics.fom_difference_interval(truth, good, good, resamples=300)
    assert null["difference"] == 0 and null["ci95"] == [0, 0]
