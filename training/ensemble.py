"""UMAP + SVM stage and the two CNN thresholds, chosen on the calibration (validation) split.

UMAP is fitted on a sample of training cutouts. For every candidate pair of thresholds
(low < high) whose band holds at least ``min_band_share`` of the calibration cutouts, the SVM
is trained on the calibration cutouts whose CNN score falls in [low, high) and judged by 5-fold
out-of-fold decisions, so the FoM that picks the thresholds (and the UMAP input) is never
measured on the points an SVM was fitted to. The held-out set stays untouched.

Stage 2 must decide: a band where the SVM does not beat the best constant decision out of fold
is never chosen (:class:`NoBandBeatsConstantError` when none is left), and an SVM whose sign is
the same over the whole training map is refused (:class:`ConstantOverMapError`), since "svm"
would then only mean "keep everything in the band". Both refusals are :class:`Stage2Error`.
"""

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from service.pipeline import decide
from training import metrics

log = logging.getLogger(__name__)

LOW_GRID = (0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
HIGH_GRID = (0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 0.995)
MIN_AMBIGUOUS = 40
MAX_SVM_POINTS = 3000
MIN_BAND_SHARE = 0.05


@dataclass
class Stage2Verdict:
    """Whether stage 2 decides the band in a packaged model, why, and the numbers behind it
    (written to the manifest's ``stage2`` and served by ``GET /v1/model``)."""

    used: bool
    why: str
    numbers: dict


def stage2_band(manifest: dict) -> tuple[float, float]:
    """The band stage 2 was judged on: the served thresholds, or, where stage 2 is off (both
    thresholds equal), the band the manifest's ``stage2`` records (the 2020 one around 0.5 for a
    model that records none)."""
    low, high = float(manifest["thresholds"]["low"]), float(manifest["thresholds"]["high"])
    if low < high:
        return low, high
    band = manifest.get("stage2", {}).get("band", (0.3, 0.7))
    return float(band[0]), float(band[1])


class Stage2Error(ValueError):
    """The SVM stage would not decide anything: training refuses to package it."""


class NoBandBeatsConstantError(Stage2Error):
    """No band's SVM beats the best constant decision out of fold."""


class ConstantOverMapError(Stage2Error):
    """Some bands' SVMs beat the constant out of fold, but each refit one has one sign over the
    whole training map."""


@dataclass(frozen=True)
class UmapConfig:
    n_neighbors: int = 15
    min_dist: float = 0.1
    sample: int = 6000
    seed: int = 0


def fit_umap(features: np.ndarray, config: UmapConfig):
    from umap import UMAP  # heavy import (numba); only the ensemble step needs it

    reducer = UMAP(
        n_neighbors=config.n_neighbors,
        min_dist=config.min_dist,
        n_components=2,
        random_state=config.seed,
        transform_seed=config.seed,
        n_jobs=1,
    )
    reducer.fit(features)
    return reducer


SVM_C = (0.3, 1.0, 3.0)
SVM_GAMMA = (0.1, 0.5, 2.0)  # on standardised coordinates; sklearn's "scale" gives 0.5 here


def make_svm(seed: int, c: float = 1.0, gamma: float = 0.5) -> Pipeline:
    return make_pipeline(StandardScaler(), SVC(C=c, kernel="rbf", gamma=gamma, random_state=seed))


@dataclass
class Choice:
    """The best thresholds for one UMAP input, with the SVM refitted on their ambiguous band."""

    low: float
    high: float
    svm: Pipeline
    svm_parameters: dict
    val_fom: float
    val_metrics: dict
    grid: list[dict]


def out_of_fold_svm(
    coords: np.ndarray, truth: np.ndarray, seed: int, c: float = 1.0, gamma: float = 0.5
) -> np.ndarray | None:
    """Out-of-fold SVM signed distances, or None where the band is too small or one-class."""
    if len(truth) < MIN_AMBIGUOUS or truth.all() or not truth.any():
        return None
    folds = StratifiedKFold(
        n_splits=min(5, int(min(truth.sum(), (~truth).sum()))), shuffle=True, random_state=seed
    )
    if folds.n_splits < 2:
        return None
    decision = np.empty(len(truth))
    for fit_on, held in folds.split(coords, truth):
        fit_on = capped(fit_on, seed)
        svm = make_svm(seed, c, gamma).fit(coords[fit_on], truth[fit_on])
        decision[held] = svm.decision_function(coords[held])
    return decision


def capped(index: np.ndarray, seed: int) -> np.ndarray:
    """At most ``MAX_SVM_POINTS`` of ``index`` (a random, reproducible subset): an RBF SVM costs
    O(n^2) to fit and O(support vectors) per served detection, and 3000 points draw the
    boundary of a 2D map as well as 10,000."""
    if len(index) <= MAX_SVM_POINTS:
        return index
    return np.sort(np.random.default_rng(seed).choice(index, MAX_SVM_POINTS, replace=False))


def fit_svm(coords: np.ndarray, truth: np.ndarray, seed: int, c: float, gamma: float) -> Pipeline:
    chosen = capped(np.arange(len(truth)), seed)
    return make_svm(seed, c, gamma).fit(coords[chosen], truth[chosen])


def choose_svm_parameters(coords: np.ndarray, truth: np.ndarray, seed: int) -> dict:
    """C and gamma with the best out-of-fold accuracy on the chosen band."""
    best, chosen = -1.0, {"c": 1.0, "gamma": 0.5}
    for c in SVM_C:
        for gamma in SVM_GAMMA:
            decision = out_of_fold_svm(coords, truth, seed, c, gamma)
            accuracy = float(np.mean((decision > 0) == truth))
            if accuracy > best:
                best, chosen = accuracy, {"c": c, "gamma": gamma, "out_of_fold_accuracy": accuracy}
    return chosen


def constant_accuracy(truth: np.ndarray) -> float:
    """Accuracy of the best constant decision (all real or all fake)."""
    real = float(np.mean(truth))
    return max(real, 1.0 - real)


def beats_constant(row: dict) -> bool:
    """Out-of-fold SVM accuracy above the best constant's by more than two standard errors: a
    per-band guard (about 2% of useless bands still pass; the constant-map refusal and the
    held-out reports catch what slips through)."""
    constant = row["constant_accuracy"]
    margin = 2.0 * np.sqrt(constant * (1.0 - constant) / row["ambiguous"])
    return row["svm_accuracy"] > constant + margin


def is_constant(svm: Pipeline, map_coords: np.ndarray) -> bool:
    """True when the SVM has one sign over every point of the training map."""
    return len(np.unique(svm.decision_function(map_coords) > 0)) < 2


def choose(
    score: np.ndarray,
    coords: np.ndarray,
    truth: np.ndarray,
    seed: int,
    map_coords: np.ndarray,
    min_band_share: float = MIN_BAND_SHARE,
) -> Choice:
    """(low, high) by out-of-fold ensemble FoM among bands of at least ``min_band_share`` where
    the SVM clearly beats the best constant decision out of fold; then C and gamma on that
    band. The
    best band whose refitted SVM is not constant over the training map wins."""
    grid, seen = [], set()
    for low in LOW_GRID:
        for high in HIGH_GRID:
            band = (score >= low) & (score < high)
            if band.mean() < min_band_share or band.tobytes() in seen:
                continue  # too narrow, or the same cutouts as a band already tried
            seen.add(band.tobytes())
            out_of_fold = out_of_fold_svm(coords[band], truth[band], seed)
            if out_of_fold is None:
                continue
            svm_score = np.zeros(len(score))
            svm_score[band] = out_of_fold
            kept, _ = decide(score, svm_score, low, high)
            grid.append(
                {
                    "low": low,
                    "high": high,
                    "ambiguous": int(band.sum()),
                    "band_share": float(band.mean()),
                    "svm_accuracy": float(np.mean((out_of_fold > 0) == truth[band])),
                    "constant_accuracy": constant_accuracy(truth[band]),
                    **metrics.summary(truth, kept),
                }
            )
    eligible = [row for row in grid if beats_constant(row)]
    constant = 0
    for row in sorted(eligible, key=lambda r: r["fom"], reverse=True):
        low, high = row["low"], row["high"]
        band = (score >= low) & (score < high)
        parameters = choose_svm_parameters(coords[band], truth[band], seed)
        svm = fit_svm(coords[band], truth[band], seed, parameters["c"], parameters["gamma"])
        if is_constant(svm, map_coords):
            constant += 1
            continue
        summary = {k: v for k, v in row.items() if k not in ("low", "high")}
        break
    else:
        bands = f"band holding >= {min_band_share:.0%} of the {len(score)} calibration cutouts"
        if not eligible:
            raise NoBandBeatsConstantError(
                f"no {bands} has an SVM that beats the best constant decision out of fold "
                f"(0 of {len(grid)} bands do)"
            )
        raise ConstantOverMapError(
            f"every {bands} whose SVM beats the best constant out of fold ({len(eligible)} of "
            f"{len(grid)}) has an SVM with one sign over the whole training map"
        )
    log.info(
        "SVM %s, thresholds low=%.3f high=%.3f: out-of-fold calibration FoM %.4f",
        parameters,
        low,
        high,
        summary["fom"],
    )
    return Choice(low, high, svm, parameters, summary["fom"], summary, grid)
