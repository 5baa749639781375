import json
import shutil

import pytest

from service import bundle as bundle_module
from service.bundle import ModelBundle
from service.errors import ArtifactError
from service.manifest import newest_model_dir


def copy_model(source, target):
    shutil.copytree(source, target)
    return target


def test_loads_a_verified_bundle(tiny_bundle):
    assert tiny_bundle.version == "0.0.1"
    low, high = tiny_bundle.thresholds
    assert 0.0 < low <= high < 1.0  # equal when the gate turned stage 2 off
    assert tiny_bundle.umap_source in ("pixels", "embedding")
    assert tiny_bundle.cnn.get_inputs()[0].shape == ["batch", 2, 9, 32]


@pytest.mark.parametrize("victim", ["cnn.onnx", "umap.joblib", "svm.joblib"])
def test_a_corrupted_artifact_is_named_and_never_unpickled(
    tiny_model_dir, tmp_path, monkeypatch, victim
):
    model = copy_model(tiny_model_dir, tmp_path / "m")
    data = bytearray((model / victim).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (model / victim).write_bytes(bytes(data))

    def refuse(*_args, **_kwargs):
        raise AssertionError("unpickled before the checksum check")

    monkeypatch.setattr(bundle_module.joblib, "load", refuse)
    with pytest.raises(ArtifactError, match=victim) as caught:
        ModelBundle.load(model)
    assert caught.value.pointer.endswith(victim)


def test_swapped_artifacts_fail_the_checksum(tiny_model_dir, tmp_path):
    model = copy_model(tiny_model_dir, tmp_path / "m")
    umap_bytes, svm_bytes = (
        (model / "umap.joblib").read_bytes(),
        (model / "svm.joblib").read_bytes(),
    )
    (model / "umap.joblib").write_bytes(svm_bytes)
    (model / "svm.joblib").write_bytes(umap_bytes)
    with pytest.raises(ArtifactError, match="SHA-256"):
        ModelBundle.load(model)


def test_missing_artifact_and_missing_manifest(tiny_model_dir, tmp_path):
    model = copy_model(tiny_model_dir, tmp_path / "m")
    (model / "svm.joblib").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        ModelBundle.load(model)
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        ModelBundle.load(tmp_path)


def test_newest_version_compares_numerically(tmp_path):
    for version in ("1.9.0", "1.10.0", "0.2.0"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "manifest.json").write_text(json.dumps({"version": version}))
    (tmp_path / "2.0.0").mkdir()  # no manifest: not a model
    assert newest_model_dir(tmp_path).name == "1.10.0"
    with pytest.raises(ArtifactError, match="no model versions"):
        newest_model_dir(tmp_path / "2.0.0")


@pytest.mark.parametrize("target", ["other.joblib", "../svm.joblib", "/etc/passwd"])
def test_files_outside_the_checksummed_list_are_never_loaded(
    tiny_model_dir, tmp_path, monkeypatch, target
):
    model = copy_model(tiny_model_dir, tmp_path / "m")
    shutil.copy(model / "svm.joblib", model / "other.joblib")
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["svm"]["file"] = target
    (model / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(bundle_module.joblib, "load", lambda *_: pytest.fail("unpickled"))
    with pytest.raises(ArtifactError, match="not an artifact listed"):
        ModelBundle.load(model)


def test_non_numeric_version_folders_are_ignored(tmp_path):
    for version in ("dev", "2.0.0"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "manifest.json").write_text("{}")
    assert newest_model_dir(tmp_path).name == "2.0.0"


def test_a_model_without_novelty_is_refused_by_name(tiny_model_dir, tmp_path):
    """A manifest from before 2.0.0 has no novelty entry: a clear refusal, not a KeyError."""
    model = copy_model(tiny_model_dir, tmp_path / "m")
    manifest = json.loads((model / "manifest.json").read_text())
    del manifest["novelty"]
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="no novelty entry"):
        ModelBundle.load(model)
