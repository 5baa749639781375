"""Stage 2 judged on a training source it was not fit on, before it is packaged.

The band, map and SVM are chosen on the calibration split, so their out-of-fold FoM there says
little about a night that looks different, and the CNN at its own best threshold is the baseline
stage 2 must beat (not the CNN at 0.5). Each training source (a simulator's set, or a labelled
file) is left out in turn: UMAP is refit on the training sample without it, the band and SVM
chosen on the calibration cutouts without it (:func:`training.ensemble.choose`), and the CNN's
best single threshold on those same cutouts. Both then decide the left-out source's
calibration cutouts. Stage 2 is used only if the ensemble's FoM is above the CNN's on every
left-out source with the paired-bootstrap 95% interval above 0; otherwise the band goes to the
CNN's threshold. With one source, two stratified halves of the calibration split stand in for
sources (the map is then fit on the whole training sample, which holds neither half), and the
verdict says so.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from service.pipeline import decide
from service.umap_fast import NeighbourTransform
from training import metrics
from training.ensemble import (
    Stage2Error,
    Stage2Verdict,
    UmapConfig,
    choose,
    constant_accuracy,
    fit_umap,
)

log = logging.getLogger(__name__)

RULE = (
    "leave one training source out: UMAP, band and SVM refit without it, and the CNN's best "
    "single threshold chosen on the same calibration cutouts; stage 2 is used only if the "
    "ensemble's FoM beats the CNN's at that threshold on every left-out source with the "
    "paired-bootstrap 95% interval above 0"
)


@dataclass(frozen=True)
class GateData:
    """What the gate refits and judges: the training sample UMAP is fit on and the calibration
    split the band, SVM and CNN threshold are chosen on, each with its rows' source."""

    sample_features: np.ndarray  # UMAP input of the training sample
    sample_origin: np.ndarray
    score: np.ndarray  # calibration CNN scores
    features: np.ndarray  # calibration UMAP input
    truth: np.ndarray
    origin: np.ndarray


def left_out_parts(data: GateData, seed: int) -> tuple[list[tuple[str, np.ndarray]], bool]:
    """(name, calibration mask) of each part to leave out, and whether the parts are sources
    (False: one source, split in two stratified halves)."""
    names = sorted(set(data.origin.tolist()))
    if len(names) >= 2:
        return [(Path(name).name, data.origin == name) for name in names], True
    halves = StratifiedKFold(n_splits=2, shuffle=True, random_state=seed)
    parts = []
    for k, (_, held) in enumerate(halves.split(data.features, data.truth)):
        mask = np.zeros(len(data.truth), bool)
        mask[held] = True
        parts.append((f"half {k + 1} of {Path(names[0]).name}", mask))
    return parts, False


def judge_left_out(
    data: GateData,
    name: str,
    held: np.ndarray,
    sample_used: np.ndarray,
    umap_config: UmapConfig,
    seed: int,
) -> dict:
    """Refit stage 2 and the CNN threshold without ``held``; both decide ``held``."""
    fit = ~held
    threshold = metrics.best_single_threshold(data.score[fit], data.truth[fit])
    truth, score = data.truth[held], data.score[held]
    cnn_kept = score >= threshold
    row: dict = {
        "left_out": name,
        "n": int(held.sum()),
        "cnn_threshold": threshold,
        "cnn": metrics.summary(truth, cnn_kept),
    }
    reducer = fit_umap(data.sample_features[sample_used], umap_config)
    coords = NeighbourTransform.from_reducer(reducer).transform(data.features)
    try:
        choice = choose(data.score[fit], coords[fit], data.truth[fit], seed, reducer.embedding_)
    except Stage2Error as refusal:
        return {**row, "passes": False, "refused": str(refusal)}
    svm = choice.svm.decision_function(coords[held])
    kept, in_band = decide(score, svm, choice.low, choice.high)
    band_truth = truth[in_band]
    difference = metrics.fom_difference_interval(truth, kept, cnn_kept, seed=seed)
    return {
        **row,
        "band": [choice.low, choice.high],
        "ensemble": metrics.summary(truth, kept),
        "ensemble_minus_cnn_fom": difference,
        "in_band": {
            "n": int(in_band.sum()),
            "svm_accuracy": float(np.mean(kept[in_band] == band_truth)),
            "cnn_accuracy": float(np.mean(cnn_kept[in_band] == band_truth)),
            "constant_accuracy": constant_accuracy(band_truth),
        }
        if in_band.any()
        else {"n": 0},
        "passes": bool(difference["ci95"][0] > 0),
    }


def gate_stage2(data: GateData, umap_config: UmapConfig, seed: int) -> Stage2Verdict:
    parts, by_source = left_out_parts(data, seed)
    rows = []
    for name, held in parts:
        sample_used = (
            data.sample_origin != data.origin[held][0]
            if by_source
            else np.ones(len(data.sample_origin), bool)
        )
        rows.append(judge_left_out(data, name, held, sample_used, umap_config, seed))
        log.info("stage 2 gate, %s left out: %s", name, describe(rows[-1]))
    used = all(row["passes"] for row in rows)
    scope = "" if by_source else "one training source, so two halves of it stood in: "
    verdict = "; ".join(f"{row['left_out']} left out: {describe(row)}" for row in rows)
    why = f"{scope}{verdict}: " + (
        "the ensemble beats the CNN at its threshold on every one"
        if used
        else "the band goes to the CNN's own threshold"
    )
    return Stage2Verdict(used, why, {"rule": RULE, "left_out": rows})


def describe(row: dict) -> str:
    cnn = f"CNN at {row['cnn_threshold']:.2f} FoM {row['cnn']['fom']:.4f}"
    if "refused" in row:
        return f"no stage 2 could be fit without it ({row['refused']}); {cnn}"
    difference = row["ensemble_minus_cnn_fom"]
    low, high = difference["ci95"]
    return (
        f"ensemble FoM {row['ensemble']['fom']:.4f} against {cnn} "
        f"({difference['difference']:+.4f}, 95% [{low:+.4f}, {high:+.4f}])"
    )
