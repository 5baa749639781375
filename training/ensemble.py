"""UMAP + SVM stage and the two CNN thresholds, chosen on validation data.

UMAP is fitted on a sample of training cutouts. For every candidate pair of thresholds
(low < high), the SVM is trained on the validation cutouts whose CNN score falls in [low, high)
and judged by 5-fold out-of-fold decisions, so the FoM that picks the thresholds (and the UMAP
input) is never measured on the points an SVM was fitted to. The held-out set stays untouched.
"""

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from service.pipeline import decide
from training import metrics

log = logging.getLogger(__name__)

LOW_GRID = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
HIGH_GRID = (0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)
MIN_AMBIGUOUS = 40


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
WIDE_BAND = (0.05, 0.95)


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
    return cross_val_predict(
        make_svm(seed, c, gamma), coords, truth, cv=folds, method="decision_function"
    )


def choose_svm_parameters(
    score: np.ndarray, coords: np.ndarray, truth: np.ndarray, seed: int
) -> dict:
    """C and gamma with the best out-of-fold accuracy on a wide ambiguous band."""
    band = (score >= WIDE_BAND[0]) & (score < WIDE_BAND[1])
    best, chosen = -1.0, {"c": 1.0, "gamma": 0.5}
    for c in SVM_C:
        for gamma in SVM_GAMMA:
            decision = out_of_fold_svm(coords[band], truth[band], seed, c, gamma)
            if decision is None:
                return chosen
            accuracy = float(np.mean((decision > 0) == truth[band]))
            if accuracy > best:
                best, chosen = accuracy, {"c": c, "gamma": gamma}
    return chosen


def choose(score: np.ndarray, coords: np.ndarray, truth: np.ndarray, seed: int) -> Choice:
    """SVM parameters, then (low, high) on validation by out-of-fold ensemble FoM."""
    parameters = choose_svm_parameters(score, coords, truth, seed)
    grid, best = [], None
    for low in LOW_GRID:
        for high in HIGH_GRID:
            band = (score >= low) & (score < high)
            svm_score = np.zeros(len(score))
            out_of_fold = out_of_fold_svm(coords[band], truth[band], seed, **parameters)
            if out_of_fold is None:
                continue
            svm_score[band] = out_of_fold
            kept, _ = decide(score, svm_score, low, high)
            summary = metrics.summary(truth, kept)
            grid.append({"low": low, "high": high, "ambiguous": int(band.sum()), **summary})
            if best is None or summary["fom"] > best[2]["fom"]:
                best = (low, high, summary)
    if best is None:
        raise ValueError("no threshold pair leaves enough two-class ambiguous validation cutouts")
    low, high, summary = best
    band = (score >= low) & (score < high)
    svm = make_svm(seed, **parameters).fit(coords[band], truth[band])
    log.info(
        "SVM %s, thresholds low=%.2f high=%.2f: out-of-fold validation FoM %.4f",
        parameters,
        low,
        high,
        summary["fom"],
    )
    return Choice(low, high, svm, parameters, summary["fom"], summary, grid)
