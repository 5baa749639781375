"""`make models` in miniature: both simulators, two held-out sets, the report."""

import json

import pytest

from service.bundle import ModelBundle
from training import experiments
from training.build import SimulatedSpec, build
from training.ensemble import UmapConfig
from training.train import TrainConfig


@pytest.mark.slow
def test_build_trains_on_both_simulators_and_reports_each_heldout_set(tmp_path):
    manifest = build(
        "9.9.9",
        tmp_path / "work",
        tmp_path / "models",
        train_specs=(SimulatedSpec(900, 1, 1_000_000, "A"), SimulatedSpec(900, 2, 2_000_000, "B")),
        heldout_specs=(
            SimulatedSpec(400, 3, 3_000_000, "B"),
            SimulatedSpec(400, 4, 4_000_000, "A"),
        ),
        train_config=TrainConfig(epochs=2),
        umap_config=UmapConfig(sample=800),
        command="test",
    )
    model_dir = tmp_path / "models" / "9.9.9"
    assert ModelBundle.load(model_dir).version == "9.9.9"
    assert [s["simulator"] for s in manifest["training"]["simulators"]] == ["A", "B"]
    assert manifest["training"]["data"]["detections"] == 1800
    assert manifest["heldout"]["simulator"]["simulator"] == "B"
    assert [h["simulator"]["simulator"] for h in manifest["heldout_other"]] == ["A"]
    on_disk = json.loads((model_dir / "manifest.json").read_text())
    assert on_disk["heldout"]["metrics"]["data"]["detections"] == 400
    histogram = on_disk["heldout"]["metrics"]["cnn_score_histogram"]
    assert sum(histogram["counts"]) == 400 and len(histogram["edges"]) == 41
    report = (model_dir / "REPORT.md").read_text()
    assert "2020 (appendix)" in report and "Also held out" in report
    assert "Stage 2 (the SVM) decided" in report

    # the same model on a simulator it never saw, and a refusal for one it was trained on
    unseen = experiments.unseen(model_dir, "C", 600)
    assert unseen["n"] == 600 and 0 < unseen["brand_new"]["n"] < 600
    assert sum(f["n"] for f in unseen["families"].values()) == 600
    assert 0 <= unseen["dr1"]["ensemble"]["fom"] <= 1
    with pytest.raises(ValueError, match="was trained on simulator A"):
        experiments.unseen(model_dir, "A", 100)
