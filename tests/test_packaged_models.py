"""The model shipped in models/: verifiable, small enough for git, and its numbers reproduce."""

import json
from pathlib import Path

import numpy as np
import pytest

from service.bundle import ModelBundle
from service.manifest import newest_model_dir
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
    agreement = manifest["cnn"]["onnx_vs_pytorch_max_abs_diff"]
    assert agreement["score"] < 1e-5 and agreement["embedding"] < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("which", [0, 1], ids=["primary", "other"])
def test_heldout_metrics_reproduce_on_a_regenerated_heldout_set(model_dir, manifest, which):
    """Both held-out sets (one per simulator) are regenerated from the manifest and re-scored."""
    held = [manifest["heldout"], *manifest["heldout_other"]][which]
    spec = SimulatedSpec.from_description(held["simulator"])
    data = LabelledCutouts.from_simulated(spec.generate(progress=False))
    measured = evaluate(model_dir, data, umap_transform=held["umap_transform"]).metrics()
    expected = held["metrics"]
    assert measured["data"]["class_counts"] == expected["data"]["class_counts"]
    for decision in ("baseline", "cnn_alone", "cnn_at_0.5", "cnn_band_called_fake", "ensemble"):
        for key in ("completeness", "contamination", "fom", "balanced_accuracy"):
            assert measured[decision][key] == pytest.approx(expected[decision][key], abs=1e-3)
    for got, want in zip(measured["score_bands"], expected["score_bands"], strict=True):
        assert abs(got["count"] - want["count"]) <= 5
    assert measured["novel_share"] == pytest.approx(expected["novel_share"], abs=1e-3)


def test_stage2_is_served_as_its_leave_one_simulator_out_gate_decided(model_dir, manifest):
    gate, thresholds = manifest["stage2"], manifest["thresholds"]
    trained_on = [entry["simulator"] for entry in manifest["training"]["simulators"]]
    assert [row["left_out"].split("-")[1] for row in gate["left_out"]] == trained_on
    assert gate["used"] == all(row["passes"] for row in gate["left_out"])
    if gate["used"]:
        assert (thresholds["low"], thresholds["high"]) == tuple(gate["band"])
    else:  # the band goes to the CNN at its validation threshold: no detection reaches the SVM
        assert thresholds["low"] == thresholds["high"] == thresholds["cnn_alone"]
        assert manifest["heldout"]["metrics"]["stage2"]["n"] == 0


@pytest.mark.slow
def test_fast_umap_keeps_the_reference_decisions(model_dir, manifest):
    """The service's fast placement against umap-learn's transform: >= 99.5% same decisions."""
    from bench.umap import decisions_by_transform

    held = manifest["heldout"]["simulator"]
    spec = SimulatedSpec.from_description(held, total=held["total"] // 4)
    decisions = decisions_by_transform(model_dir, spec.generate(progress=False).im_sum)
    assert np.mean(decisions["fast"] == decisions["reference"]) >= 0.995
