"""``adapt``: the parent's CNN recovered exactly, AdaBN, the stage-2 gate, every refusal."""

import shutil
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from service.bundle import ModelBundle
from service.preprocess import prepare
from tests.live import ROOT
from training import metrics
from training.adapt import (
    AdaptConfig,
    AdaptRefusedError,
    adapt,
    cnn_from_onnx,
    judge_stage2,
    match_statistics,
    night_threshold,
)
from training.cli import main as training_cli
from training.dataset import read_images, write_dataset
from training.simulators.c import simulate
from training.train import predict

PARENT = ROOT / "models" / "2.0.0"  # the parent ADAPT.md was measured with
TINY = AdaptConfig(epochs=2, replay=1000, calibration=400, map_sample=300, folds=2, threads=2)


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> Path:
    """A small night of simulator C (never trained on); adapt reads only its FiberImages."""
    data = simulate({-2: 70, -1: 5, 0: 40, 1: 10, 2: 5, 3: 10, 4: 20, 5: 90}, seed=404)
    return write_dataset(tmp_path_factory.mktemp("adapt") / "night.h5", data)


def labels_file(path: Path, detectid, vis_class, **attrs) -> Path:
    table = np.empty(len(detectid), dtype=[("detectid", "<i8"), ("vis_class", "<i2")])
    table["detectid"], table["vis_class"] = detectid, vis_class
    with h5py.File(path, "w") as handle:
        handle.create_dataset("Labels", data=table)
        handle.attrs.update(attrs)
    return path


def truth_of(night: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(night) as handle:
        labels = handle["Labels"][...]
    return labels["detectid"], labels["vis_class"]


def test_the_parent_cnn_comes_back_from_onnx_exactly(night):
    bundle = ModelBundle.load(PARENT)
    cnn = cnn_from_onnx(PARENT.joinpath("cnn.onnx").read_bytes(), 32)
    model_input = prepare(read_images(night).im_sum, bundle.normalization)
    torch_score, torch_embedding = predict(cnn, model_input)
    onnx_score, onnx_embedding = bundle.cnn.run(None, {"cutout": model_input})
    assert np.abs(torch_score - onnx_score).max() < 1e-5
    assert np.abs(torch_embedding - onnx_embedding).max() < 1e-4


def test_adabn_gives_the_target_the_source_statistics_at_every_layer(night):
    cnn = cnn_from_onnx(PARENT.joinpath("cnn.onnx").read_bytes(), 32)
    bundle = ModelBundle.load(PARENT)
    source = prepare(read_images(night).im_sum, bundle.normalization)
    target = source * 1.7 + 0.3  # another night: brighter, offset
    matched = match_statistics(cnn, source, target)
    norms = [
        (original, new)
        for original, new in zip(cnn.features, matched.features, strict=True)
        if isinstance(new, torch.nn.BatchNorm2d)
    ]
    assert len(norms) == 5
    for original, norm in norms:  # what each norm puts out: target (matched) as source (parent)
        outputs = []
        for net, layer, data in ((cnn, original, source), (matched, norm, target)):
            seen = []
            hook = layer.register_forward_hook(lambda _, __, out, seen=seen: seen.append(out))
            with torch.no_grad():
                net(torch.from_numpy(data))
            hook.remove()
            outputs.append(seen[0])
        expected, got = outputs
        assert torch.allclose(got.mean(dim=(0, 2, 3)), expected.mean(dim=(0, 2, 3)), atol=2e-3)
        assert torch.allclose(got.std(dim=(0, 2, 3)), expected.std(dim=(0, 2, 3)), rtol=2e-3)
    # a night matched to itself changes nothing
    same = match_statistics(cnn, source, source)
    assert np.allclose(predict(same, source)[0], predict(cnn, source)[0], atol=1e-5)


def test_stage_two_is_used_only_where_it_beats_the_cnn_call_and_the_constant():
    rng = np.random.default_rng(0)
    n = 400
    truth = rng.random(n) < 0.6
    oof = rng.uniform(0.3, 0.7, n)  # all in the band
    cnn_right = (oof >= 0.5) == truth
    good_svm = np.where(rng.random(n) < 0.9, truth, ~truth) * 2.0 - 1  # right 90% of the time
    kept = judge_stage2(good_svm, oof, truth, (0.3, 0.7), 0.5)
    assert kept.used and "it beats both" in kept.why
    assert kept.numbers["svm_accuracy"] == pytest.approx(np.mean((good_svm > 0) == truth))
    assert kept.numbers["cnn_call_accuracy"] == pytest.approx(cnn_right.mean())
    constant_svm = np.ones(n)  # says real everywhere: exactly the best constant (60% real)
    off = judge_stage2(constant_svm, oof, truth, (0.3, 0.7), 0.5)
    assert not off.used and "the SVM must beat both by two standard errors" in off.why
    assert f"{off.numbers['constant_accuracy']:.3f}" in off.why
    no_svm = np.full(n, np.nan)  # no fold could fit one
    assert "too few" in judge_stage2(no_svm, oof, truth, (0.3, 0.7), 0.5).why
    outside = judge_stage2(good_svm, np.full(n, 0.9), truth, (0.3, 0.7), 0.5)
    assert not outside.used and "0 held-out labels in the band" in outside.why


def test_adapt_writes_a_model_that_verifies_and_records_its_lineage(night, tmp_path):
    ids, classes = truth_of(night)
    labels = labels_file(tmp_path / "labels.h5", ids[::2], classes[::2])
    out = tmp_path / "2.1.1"
    manifest = adapt(PARENT, read_images(night), [labels], out, "2.1.1", TINY)
    bundle = ModelBundle.load(out)
    assert bundle.version == "2.1.1"
    lineage = manifest["lineage"]
    assert lineage["parent_version"] == "2.0.0"
    assert (
        lineage["parent_cnn_sha256"]
        == ModelBundle.load(PARENT).manifest["artifacts"]["cnn.onnx"]["sha256"]
    )
    assert lineage["night_fingerprint"] == read_images(night).fingerprint
    assert lineage["labels_files"][0]["labels"] == len(ids[::2])
    assert sum(lineage["label_counts"].values()) == len(ids[::2])
    assert manifest["adaptation"]["gate"]["folds"] == TINY.folds
    gate = manifest["adaptation"]["gate"]
    assert gate["adapted"]["fom"] > gate["parent"]["fom"]
    stage2 = manifest["stage2"]
    assert stage2["used"] or manifest["thresholds"]["low"] == manifest["thresholds"]["high"]
    assert stage2["why"]


def test_adapt_refuses_a_model_that_does_not_beat_its_parent(night, tmp_path):
    ids, classes = truth_of(night)
    labels = labels_file(tmp_path / "labels.h5", ids, classes)
    diverging = replace(TINY, learning_rate=50.0)  # a training that wrecks the CNN
    with pytest.raises(AdaptRefusedError, match=r"FoM \d\.\d{4} against the parent's \d\.\d{4}"):
        adapt(PARENT, read_images(night), [labels], tmp_path / "2.1.1", "2.1.1", diverging)
    assert not (tmp_path / "2.1.1").exists()


def cli_error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        training_cli(["adapt", *argv])
    message = str(exit_info.value)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_bad_inputs_get_one_line_naming_the_file_and_field(night, tmp_path, capsys):
    ids, classes = truth_of(night)
    base = ["--model", str(PARENT), "--data", str(night), "--version", "2.1.1"]
    out = ["--out", str(tmp_path / "new" / "2.1.1")]

    stranger = labels_file(tmp_path / "stranger.h5", [*ids[:40], 99], [*classes[:40], 5])
    message = cli_error(capsys, *base, *out, "--labels", str(stranger))
    assert f"{stranger}: Labels/detectid 99 has no row in {night}" in message

    other = labels_file(
        tmp_path / "other.h5",
        ids[:40],
        classes[:40],
        night_fingerprint="0" * 64,
        night_file="elsewhere.h5",
    )
    message = cli_error(capsys, *base, *out, "--labels", str(other))
    assert f"{other}: night_fingerprint" in message and "another night" in message

    few = labels_file(tmp_path / "few.h5", ids[:12], classes[:12])
    message = cli_error(capsys, *base, *out, "--labels", str(few))
    assert f"{few}: Labels/vis_class: too few labels" in message and "at least 30" in message

    good = labels_file(tmp_path / "good.h5", ids[:40], classes[:40])
    broken = tmp_path / "broken-parent"
    shutil.copytree(PARENT, broken)
    (broken / "svm.joblib").write_bytes(b"not the SVM")
    message = cli_error(
        capsys,
        "--model",
        str(broken),
        "--data",
        str(night),
        "--version",
        "2.1.1",
        *out,
        "--labels",
        str(good),
    )
    assert f"{broken}: the parent model fails verification" in message and "svm.joblib" in message

    (tmp_path / "2.1.1").mkdir()
    message = cli_error(capsys, *base, "--out", str(tmp_path / "2.1.1"), "--labels", str(good))
    assert f"{tmp_path / '2.1.1'}: --out exists" in message
    message = cli_error(capsys, *base, "--out", str(tmp_path / "2.0.2"), "--labels", str(good))
    assert "--out must be a folder named after --version" in message


def test_the_night_threshold_is_the_best_expected_for_the_whole_night():
    """Labels chosen mostly near the middle (as suggest does) still calibrate the scores: the
    threshold chosen from them is the night's best within a few hundredths of FoM."""
    rng = np.random.default_rng(3)
    night_score = rng.beta(0.6, 0.6, 20_000)
    real_probability = night_score**2  # the CNN over-calls real: its 0.5 is really 0.25
    truth_night = rng.random(20_000) < real_probability
    middle = np.flatnonzero(np.abs(night_score - 0.5) < 0.3)
    chosen = np.concatenate([rng.choice(middle, 400, replace=False), rng.choice(20_000, 100)])
    choice = night_threshold(night_score[chosen], truth_night[chosen], night_score)
    grid = np.round(np.arange(0.05, 0.96, 0.01), 2)
    foms = [metrics.fom(truth_night, night_score >= t) for t in grid]
    assert metrics.fom(truth_night, night_score >= choice["threshold"]) >= max(foms) - 0.01
    assert choice["threshold"] > 0.55  # not the uncalibrated 0.5
    assert abs(choice["estimated_fom"] - max(foms)) < 0.05  # two parameters cannot fit s**2 exactly
