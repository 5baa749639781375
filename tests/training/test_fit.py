"""The tiny end-to-end training run (conftest) and what it must leave behind."""

import json

import numpy as np
import onnxruntime as ort

from service.bundle import ModelBundle
from service.manifest import sha256_of
from service.preprocess import prepare
from training.cnn import LineCNN
from training.export import export_onnx, max_disagreement


def test_training_writes_a_complete_verifiable_model_dir(tiny_model_dir):
    manifest = json.loads((tiny_model_dir / "manifest.json").read_text())
    for name, entry in manifest["artifacts"].items():
        assert sha256_of(tiny_model_dir / name) == entry["sha256"]
    assert set(manifest["artifacts"]) == {
        "cnn.onnx",
        "umap.joblib",
        "svm.joblib",
        "umap_map.npz",
        "novelty.npz",
    }
    assert manifest["input_contract"]["shape"] == [9, 32]
    assert manifest["normalization"]["method"] == "robust-noise"
    assert set(manifest["validation"]["umap_input_choice"]) == {"pixels", "embedding"}
    assert manifest["umap"]["input"] == max(
        manifest["validation"]["umap_input_choice"],
        key=lambda s: manifest["validation"]["umap_input_choice"][s]["fom"],
    )
    assert manifest["libraries"]["onnxruntime"] == ort.__version__
    assert (
        manifest["training"]["train"]["detections"]
        + manifest["training"]["validation"]["detections"]
        == manifest["training"]["data"]["detections"]
    )
    assert len(manifest["training"]["history"]) == 6
    agreement = manifest["cnn"]["onnx_vs_pytorch_max_abs_diff"]  # measured on the trained CNN
    assert agreement["score"] < 1e-5 and agreement["embedding"] < 1e-4


def test_onnx_has_a_dynamic_batch_axis_and_two_outputs(tiny_bundle, tiny_data):
    model_input = prepare(tiny_data.im_sum[:7], tiny_bundle.normalization)
    for batch in (1, 7):
        score, embedding = tiny_bundle.cnn.run(None, {"cutout": model_input[:batch]})
        assert score.shape == (batch,) and embedding.shape == (batch, 32)


def test_pytorch_and_onnx_runtime_agree(tmp_path, tiny_data, tiny_bundle):
    cnn = LineCNN().eval()
    path = export_onnx(cnn, tmp_path / "cnn.onnx")
    difference = max_disagreement(cnn, path, prepare(tiny_data.im_sum, tiny_bundle.normalization))
    assert difference["score"] < 1e-5 and difference["embedding"] < 1e-4
    assert not (tmp_path / "cnn.onnx.data").exists()


def test_the_tiny_model_learned_something(tiny_model_dir, tiny_data):
    """Six epochs on about 700 cutouts: far from good, but clearly better than a coin."""
    manifest = json.loads((tiny_model_dir / "manifest.json").read_text())
    validation = manifest["validation"]["cnn_alone"]
    assert validation["balanced_accuracy"] > 0.6
    assert ModelBundle.load(tiny_model_dir).version == "0.0.1"
    assert np.isfinite(validation["fom"])


def test_protocol_2020_never_shows_the_cnn_the_other_classes(tiny_data, tmp_path):
    """CNN on classes 4-5 against 0-1; every class still calibrates the band, SVM and novelty."""
    from training.ensemble import UmapConfig
    from training.fit import train_bundle
    from training.train import TrainConfig

    manifest = train_bundle(
        tiny_data, tmp_path / "m", "0.0.2", TrainConfig(protocol="2020", epochs=4), UmapConfig()
    )
    assert set(manifest["training"]["cnn_train"]["class_counts"]) == {"0", "1", "4", "5"}
    assert manifest["training"]["config"]["protocol"] == "2020"
    assert len(manifest["training"]["validation"]["class_counts"]) == 8
    bundle = ModelBundle.load(tmp_path / "m")
    assert set(bundle.novelty.references_) == {"embedding", "pixels"}


def test_stage2_is_gated_and_the_thresholds_say_which_stage_decides(tiny_model_dir):
    """One training file: two halves stand in for sources; off, both thresholds are the CNN's."""
    manifest = json.loads((tiny_model_dir / "manifest.json").read_text())
    gate, thresholds = manifest["stage2"], manifest["thresholds"]
    assert [row["left_out"][:7] for row in gate["left_out"]] == ["half 1 ", "half 2 "]
    assert gate["used"] == all(row["passes"] for row in gate["left_out"])
    served = (thresholds["low"], thresholds["high"])
    if gate["used"]:
        assert served == tuple(gate["band"])
    else:
        assert served == (thresholds["cnn_alone"], thresholds["cnn_alone"])
        assert "the CNN's own threshold" in gate["why"]
