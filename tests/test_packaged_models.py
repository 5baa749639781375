"""The model shipped in models/: verifiable, small enough for git, and its numbers reproduce."""

import json
from pathlib import Path

import pytest

from service.bundle import ModelBundle, newest_model_dir
from training.build import SimulatedSpec
from training.dataset import LabelledCutouts
from training.evaluate import evaluate

MODELS = Path(__file__).resolve().parents[1] / "models"
GIT_BUDGET_BYTES = 30 * 1024 * 1024


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return newest_model_dir(MODELS)


@pytest.fixture(scope="module")
def manifest(model_dir) -> dict:
    return json.loads((model_dir / "manifest.json").read_text())


def test_packaged_artifacts_verify_and_fit_in_git(model_dir, manifest):
    bundle = ModelBundle.load(model_dir)
    assert bundle.version == manifest["version"] == model_dir.name
    size = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    assert size < GIT_BUDGET_BYTES
    assert (model_dir / "REPORT.md").is_file()


@pytest.mark.slow
def test_heldout_metrics_reproduce_on_a_regenerated_heldout_set(model_dir, manifest):
    held = manifest["heldout"]
    spec = SimulatedSpec(**{k: held["simulator"][k] for k in ("total", "seed", "first_detectid")})
    data = LabelledCutouts.from_simulated(spec.generate(progress=False))
    measured = evaluate(model_dir, data).metrics()
    expected = held["metrics"]
    assert measured["data"]["class_counts"] == expected["data"]["class_counts"]
    for decision in ("baseline", "cnn_alone", "ensemble"):
        for key in ("completeness", "contamination", "fom", "balanced_accuracy"):
            assert measured[decision][key] == pytest.approx(expected[decision][key], abs=1e-3)
    for got, want in zip(measured["score_bands"], expected["score_bands"], strict=True):
        assert abs(got["count"] - want["count"]) <= 5
