"""``train``: labelled cutouts in, one verified model directory out (CNN, UMAP, SVM, novelty).

Works the same on a simulated file and on a real labelled HETDEX file: 80/20 split stratified
by visual class, CNN training (on every class, or under ``--protocol 2020`` on classes 0, 1, 4,
5 only), ONNX export (checked against PyTorch), UMAP on a training sample for both candidate
inputs, thresholds and SVM chosen on the calibration (validation) split, stage 2 gated by
leaving one training source out (:mod:`training.stage2_gate`; off, the band goes to the CNN's
best threshold), novelty calibrated on the calibration split, then the artifacts with their
SHA-256 in ``manifest.json``.
"""

import json
import logging
from datetime import UTC, datetime
from importlib.metadata import version as installed_version
from pathlib import Path

import joblib
import numpy as np
import onnxruntime as ort
from sklearn.model_selection import train_test_split

from service import contract
from service.bundle import UMAP_SOURCES
from service.manifest import MANIFEST, sha256_of
from service.novelty import Novelty
from service.pipeline import umap_features
from service.preprocess import Normalization, prepare
from service.umap_fast import NeighbourTransform
from training import metrics
from training.dataset import DatasetError, LabelledCutouts
from training.ensemble import Stage2Error, UmapConfig, choose, fit_umap
from training.export import INPUT_NAME, OUTPUT_NAMES, export_onnx, max_disagreement
from training.stage2_gate import GateData, gate_stage2
from training.train import PROTOCOL_CLASSES, TrainConfig, fit_cnn

log = logging.getLogger(__name__)

CNN_FILE, UMAP_FILE, SVM_FILE, MAP_FILE = "cnn.onnx", "umap.joblib", "svm.joblib", "umap_map.npz"
NOVELTY_FILE = "novelty.npz"
LIBRARIES = (
    "numpy",
    "torch",
    "onnx",
    "onnxruntime",
    "umap-learn",
    "pynndescent",
    "numba",
    "scikit-learn",
    "joblib",
)


MIN_PER_CLASS = 5


def split(data: LabelledCutouts, seed: int, val_fraction: float = 0.2):
    """80/20 split stratified by visual class; every class present needs a few members."""
    classes, counts = np.unique(data.vis_class, return_counts=True)
    if counts.min() < MIN_PER_CLASS:
        sparse = {int(c): int(n) for c, n in zip(classes, counts, strict=True) if n < MIN_PER_CLASS}
        raise DatasetError(
            f"{data.source}: Labels/vis_class needs at least {MIN_PER_CLASS} detections per "
            f"class present for a stratified split; too few: {sparse}"
        )
    index = np.arange(len(data))
    train, val = train_test_split(
        index, test_size=val_fraction, stratify=data.vis_class, random_state=seed
    )
    return data.subset(np.sort(train)), data.subset(np.sort(val))


def run_onnx(path: Path, model_input: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    score, embedding = session.run(None, {INPUT_NAME: model_input})
    return score, embedding


def umap_sample(data: LabelledCutouts, size: int, seed: int) -> np.ndarray:
    if size >= len(data):
        return np.arange(len(data))
    sample, _ = train_test_split(
        np.arange(len(data)), train_size=size, stratify=data.vis_class, random_state=seed
    )
    return np.sort(sample)


def train_bundle(
    data: LabelledCutouts,
    out_dir: Path,
    version: str,
    train_config: TrainConfig,
    umap_config: UmapConfig,
) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = train_config.seed
    train, val = split(data, seed)
    normalization = Normalization()
    shown = PROTOCOL_CLASSES[train_config.protocol]
    cnn_train, cnn_val = (
        (train, val)
        if shown is None
        else (part.subset(np.isin(part.vis_class, shown)) for part in (train, val))
    )
    cnn, history = fit_cnn(cnn_train, cnn_val, normalization, train_config)

    cnn_path = export_onnx(cnn, out_dir / CNN_FILE)
    val_input = prepare(val.im_sum, normalization)
    agreement = max_disagreement(cnn, cnn_path, val_input[:1024])
    val_score, val_embedding = run_onnx(cnn_path, val_input)
    val_truth = val.is_real

    sample = umap_sample(train, umap_config.sample, seed)
    sample_input = prepare(train.im_sum[sample], normalization)
    _, sample_embedding = run_onnx(cnn_path, sample_input)
    candidates, refusals = {}, []
    for source in UMAP_SOURCES:
        log.info("fitting UMAP on %d training %s", len(sample), source)
        reducer = fit_umap(umap_features(sample_input, sample_embedding, source), umap_config)
        placer = NeighbourTransform.from_reducer(reducer)  # the service's transform
        map_coords = reducer.embedding_
        coords = placer.transform(umap_features(val_input, val_embedding, source))
        try:
            candidates[source] = (reducer, choose(val_score, coords, val_truth, seed, map_coords))
        except Stage2Error as refusal:
            refusals.append(f"UMAP on {source}: {refusal}")
            log.warning("%s", refusals[-1])
            continue
        log.info(
            "UMAP on %s: out-of-fold validation FoM %.4f", source, candidates[source][1].val_fom
        )
    if not candidates:
        raise Stage2Error("; ".join(refusals))
    source = max(candidates, key=lambda s: candidates[s][1].val_fom)
    reducer, choice = candidates[source]
    cnn_alone = metrics.best_single_threshold(val_score, val_truth)
    verdict = gate_stage2(
        GateData(
            sample_features=umap_features(sample_input, sample_embedding, source),
            sample_origin=train.origin[sample],
            score=val_score,
            features=umap_features(val_input, val_embedding, source),
            truth=val_truth,
            origin=val.origin,
        ),
        umap_config,
        seed,
    )
    log.info("stage 2 %s: %s", "used" if verdict.used else "off", verdict.why)
    low, high = (choice.low, choice.high) if verdict.used else (cnn_alone, cnn_alone)

    joblib.dump(reducer, out_dir / UMAP_FILE)
    joblib.dump(choice.svm, out_dir / SVM_FILE)
    np.savez(
        out_dir / MAP_FILE,
        features=np.asarray(reducer._raw_data, dtype=np.float32),
        coords=reducer.embedding_.astype(np.float32),
        vis_class=train.vis_class[sample],
        n_neighbors=np.int64(reducer.n_neighbors),
    )

    novelty = Novelty.fit((sample_input, sample_embedding), (val_input, val_embedding))
    np.savez(out_dir / NOVELTY_FILE, **novelty.to_arrays())

    manifest = {
        "name": "linescore",
        "version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "input_contract": contract.describe(),
        "normalization": normalization.to_manifest(),
        "cnn": {
            "file": CNN_FILE,
            "input": INPUT_NAME,
            "outputs": list(OUTPUT_NAMES),
            "input_shape": ["N", 2, contract.ROWS, contract.COLUMNS],
            "embedding_dim": int(val_embedding.shape[1]),
            "onnx_vs_pytorch_max_abs_diff": agreement,
        },
        "umap": {
            "file": UMAP_FILE,
            "input": source,
            "map": MAP_FILE,
            "placement": "fast (exact k-NN, membership-weighted mean; service.umap_fast)",
            **umap_config.__dict__,
        },
        "svm": {
            "file": SVM_FILE,
            **choice.svm_parameters,
            "trained_on": "calibration (validation) cutouts of every class in the ambiguous band"
            + ("" if verdict.used else " (off: see stage2)"),
            "ambiguous_validation_cutouts": int(
                ((val_score >= choice.low) & (val_score < choice.high)).sum()
            ),
        },
        "novelty": {
            "file": NOVELTY_FILE,
            "threshold": novelty.threshold,
            "spaces": list(novelty.references_),
            "k": novelty.k,
            "reference": f"the {len(sample)} UMAP training-sample cutouts",
            "calibration": f"the {len(val)} validation cutouts (in-distribution, held out)",
            "rule": "novel when novelty >= threshold: the 99% calibration quantile plus two "
            "binomial standard errors (at most 1% false alarms)",
            "calibration_flagged": novelty.calibration_flagged(),
        },
        "thresholds": {"low": low, "high": high, "cnn_alone": cnn_alone},
        "stage2": {
            "used": verdict.used,
            "why": verdict.why,
            "band": [choice.low, choice.high],
            **verdict.numbers,
        },
        "training": {
            "config": train_config.describe(),
            "history": history,
            "data": data.summary(),
            "cnn_train": cnn_train.summary(),
            "train": train.summary(),
            "validation": val.summary(),
        },
        "validation": {
            "umap_input_choice": {
                s: {"fom": c.val_fom, "low": c.low, "high": c.high, **c.val_metrics}
                for s, (_, c) in candidates.items()
            },
            "threshold_grid": choice.grid,
            "cnn_alone": metrics.summary(val_truth, val_score >= cnn_alone),
        },
        "libraries": {name: installed_version(name) for name in LIBRARIES},
        "artifacts": {},
    }
    write_manifest(out_dir, manifest)
    return manifest


def write_manifest(out_dir: Path, manifest: dict) -> None:
    """(Re)compute every artifact's SHA-256 and write ``manifest.json``."""
    files = (CNN_FILE, UMAP_FILE, SVM_FILE, MAP_FILE, NOVELTY_FILE)
    manifest["artifacts"] = {
        name: {"sha256": sha256_of(out_dir / name), "bytes": (out_dir / name).stat().st_size}
        for name in files
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
