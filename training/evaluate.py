"""Held-out evaluation of a packaged model through the serving path (``service.pipeline``)."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.bundle import ModelBundle
from service.pipeline import Scorer, Scores
from training import metrics
from training.dataset import LabelledCutouts


@dataclass
class Evaluation:
    data: LabelledCutouts
    scores: Scores
    low: float
    high: float
    cnn_alone: float
    svm: Any  # the verified SVM the scores came from, for the report's map

    @property
    def truth(self) -> np.ndarray:
        return self.data.is_real

    def metrics(self) -> dict:
        truth, scores, data = self.truth, self.scores, self.data
        decisions = {"cnn_alone": scores.cnn_score >= self.cnn_alone, "ensemble": scores.real}
        families = sorted(set(data.family) - {""})
        return {
            "data": data.summary(),
            "baseline": metrics.summary(truth, np.ones(len(truth), dtype=bool)),
            **{name: metrics.summary(truth, kept) for name, kept in decisions.items()},
            "ensemble_minus_cnn_alone_fom": metrics.fom_difference_interval(
                truth, decisions["ensemble"], decisions["cnn_alone"]
            ),
            "decided_by_svm": float(scores.decided_by_svm.mean()),
            "stage2": stage2_summary(truth, scores),
            "novel_share": float(scores.novel.mean()),
            "score_bands": metrics.score_bands(scores.cnn_score, truth, self.low, self.high),
            "cnn_score_histogram": score_histogram(scores.cnn_score),
            "per_class_accuracy": {
                name: metrics.per_class_accuracy(data.vis_class, truth, kept)
                for name, kept in decisions.items()
            },
            "by_snr": {
                name: metrics.by_snr(data.sn, truth, kept) for name, kept in decisions.items()
            },
            "by_family": {
                family: {
                    "n": int(np.sum(data.family == family)),
                    "accuracy": float(np.mean((truth == scores.real)[data.family == family])),
                }
                for family in families
            },
        }


def stage2_summary(truth: np.ndarray, scores: Scores) -> dict:
    """What stage 2 decided, and whether it beat the best constant decision there."""
    band = scores.decided_by_svm
    n = int(band.sum())
    real = float(truth[band].mean()) if n else float("nan")
    return {
        "n": n,
        "share": float(band.mean()),
        "accuracy": float(np.mean(scores.real[band] == truth[band])) if n else float("nan"),
        "constant_accuracy": max(real, 1.0 - real) if n else float("nan"),
        "called_real": float(scores.real[band].mean()) if n else float("nan"),
    }


def score_all(scorer: Scorer, cutouts: np.ndarray, chunk: int = 4096) -> Scores:
    parts = [
        scorer.score(cutouts[start : start + chunk]) for start in range(0, len(cutouts), chunk)
    ]
    return Scores(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in Scores.__dataclass_fields__)
    )


def evaluate(model_dir: Path, data: LabelledCutouts, umap_transform: str = "fast") -> Evaluation:
    bundle = ModelBundle.load(model_dir, umap_transform=umap_transform)
    scores = score_all(Scorer(bundle), data.im_sum)
    low, high = bundle.thresholds
    cnn_alone = float(bundle.manifest["thresholds"]["cnn_alone"])
    return Evaluation(data, scores, low, high, cnn_alone, bundle.svm)


def score_histogram(cnn_score: np.ndarray, bins: int = 40) -> dict:
    """Counts of CNN scores in equal bins over [0, 1]: what a night's scores are compared with
    (``linescore review``)."""
    counts, edges = np.histogram(cnn_score, bins=bins, range=(0.0, 1.0))
    return {"edges": edges.round(6).tolist(), "counts": counts.tolist()}
