"""Held-out evaluation of a packaged model through the serving path (``service.pipeline``)."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.bundle import ModelBundle
from service.pipeline import Scorer, Scores
from training import metrics
from training.dataset import LabelledCutouts
from training.ensemble import stage2_band

# What the served decision is judged against: the CNN alone at 0.5, at the threshold chosen on
# validation data (the manifest's ``cnn_alone``: the fair baseline), and with the whole stage-2
# band called fake (keep score >= the band's high end).
BASELINES = {
    "cnn_alone": "CNN alone at its validation threshold",
    "cnn_at_0.5": "CNN alone at 0.5",
    "cnn_band_called_fake": "CNN alone, band called fake",
}


@dataclass
class Evaluation:
    data: LabelledCutouts
    scores: Scores
    low: float  # the served thresholds (equal when stage 2 is off)
    high: float
    cnn_alone: float
    band: tuple[float, float]  # the stage-2 band (the served one, or the one judged and gated off)
    svm: Any  # the verified SVM the scores came from, for the report's map

    @property
    def truth(self) -> np.ndarray:
        return self.data.is_real

    def decisions(self) -> dict[str, np.ndarray]:
        """The served decision ("ensemble") and each baseline of :data:`BASELINES`."""
        score = self.scores.cnn_score
        return {
            "ensemble": self.scores.real,
            "cnn_alone": score >= self.cnn_alone,
            "cnn_at_0.5": score >= 0.5,
            "cnn_band_called_fake": score >= self.band[1],
        }

    def metrics(self) -> dict:
        truth, scores, data = self.truth, self.scores, self.data
        decisions = self.decisions()
        families = sorted(set(data.family) - {""})
        return {
            "data": data.summary(),
            "baseline": metrics.summary(truth, np.ones(len(truth), dtype=bool)),
            **{name: metrics.summary(truth, kept) for name, kept in decisions.items()},
            "thresholds": {"cnn_alone": self.cnn_alone, "band": list(self.band)},
            "ensemble_minus": against_baselines(truth, decisions),
            "decided_by_svm": float(scores.decided_by_svm.mean()),
            "stage2": stage2_summary(truth, scores),
            "novel_share": float(scores.novel.mean()),
            "score_bands": metrics.score_bands(scores.cnn_score, truth, *self.band),
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


def against_baselines(truth: np.ndarray, decisions: dict[str, np.ndarray]) -> dict:
    """Ensemble FoM minus each baseline's on the same detections, with a paired bootstrap 95%
    interval."""
    return {
        name: metrics.fom_difference_interval(truth, decisions["ensemble"], decisions[name])
        for name in BASELINES
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
    band = stage2_band(bundle.manifest)
    return Evaluation(data, scores, low, high, cnn_alone, band, bundle.svm)


def score_histogram(cnn_score: np.ndarray, bins: int = 40) -> dict:
    """Counts of CNN scores in equal bins over [0, 1]: what a night's scores are compared with
    (``linescore review``)."""
    counts, edges = np.histogram(cnn_score, bins=bins, range=(0.0, 1.0))
    return {"edges": edges.round(6).tolist(), "counts": counts.tolist()}
