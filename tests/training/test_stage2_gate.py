"""Stage 2 is packaged only when it beats the CNN at its own threshold on a left-out source."""

import numpy as np
import pytest

from training.ensemble import UmapConfig
from training.stage2_gate import GateData, gate_stage2, left_out_parts

UMAP = UmapConfig(n_neighbors=10, sample=0, seed=0)


def source(rng: np.random.Generator, name: str, n: int, informative: bool) -> dict:
    """Cutouts whose CNN score is unsure (around 0.5 whatever the truth), and whose features
    tell the truth apart (``informative``) or say nothing about it."""
    truth = rng.random(n) < 0.5
    side = np.where(truth, 3.0, -3.0) if informative else rng.choice([3.0, -3.0], n)
    features = rng.normal(size=(n, 5)).astype(np.float32)
    features[:, 0] += side
    score = np.clip(0.5 + rng.normal(0, 0.05, n) + np.where(truth, 0.01, -0.01), 0, 1)
    return {"truth": truth, "features": features, "score": score, "origin": np.full(n, name)}


def gate_data(rng: np.random.Generator, informative: dict[str, bool], n: int = 500) -> GateData:
    sample = [source(rng, name, n, flag) for name, flag in informative.items()]
    calibration = [source(rng, name, n, flag) for name, flag in informative.items()]

    def joined(parts, key):
        return np.concatenate([part[key] for part in parts])

    return GateData(
        sample_features=joined(sample, "features"),
        sample_origin=joined(sample, "origin"),
        score=joined(calibration, "score"),
        features=joined(calibration, "features"),
        truth=joined(calibration, "truth"),
        origin=joined(calibration, "origin"),
    )


@pytest.mark.slow
def test_stage2_is_used_when_it_beats_the_cnn_on_every_left_out_source(rng):
    verdict = gate_stage2(gate_data(rng, {"A.h5": True, "B.h5": True}), UMAP, seed=0)
    assert verdict.used, verdict.why
    rows = verdict.numbers["left_out"]
    assert [row["left_out"] for row in rows] == ["A.h5", "B.h5"]
    for row in rows:
        assert row["ensemble_minus_cnn_fom"]["ci95"][0] > 0
        assert row["in_band"]["svm_accuracy"] > row["in_band"]["cnn_accuracy"] + 0.2


@pytest.mark.slow
def test_stage2_is_off_when_a_left_out_source_gains_nothing(rng):
    """B's map says nothing: left out, the SVM fit on A cannot help there."""
    verdict = gate_stage2(gate_data(rng, {"A.h5": True, "B.h5": False}), UMAP, seed=0)
    assert not verdict.used
    rows = {row["left_out"]: row for row in verdict.numbers["left_out"]}
    assert not rows["B.h5"]["passes"]
    assert rows["B.h5"]["ensemble_minus_cnn_fom"]["ci95"][0] <= 0
    assert "B.h5 left out" in verdict.why and "the CNN's own threshold" in verdict.why


def test_one_source_is_judged_on_two_stratified_halves(rng):
    data = gate_data(rng, {"night.h5": True}, n=200)
    parts, by_source = left_out_parts(data, seed=0)
    assert not by_source
    assert [name for name, _ in parts] == ["half 1 of night.h5", "half 2 of night.h5"]
    first, second = (mask for _, mask in parts)
    assert not np.any(first & second) and np.all(first | second)
    assert abs(data.truth[first].mean() - data.truth[second].mean()) < 0.02
