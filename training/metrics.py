"""Survey metrics: completeness and contamination against the truth, and the 2020 FoM.

Completeness is the share of real lines kept; contamination the share of kept detections that
are fake; FoM = completeness x (1 - contamination), which HETDEX cosmology needs >= 0.94.
"""

import numpy as np

from service.domain import VISUAL_CLASSES


def summary(truth: np.ndarray, kept: np.ndarray) -> dict:
    truth, kept = np.asarray(truth, bool), np.asarray(kept, bool)
    true_pos = int(np.sum(truth & kept))
    real, fake, n_kept = int(truth.sum()), int((~truth).sum()), int(kept.sum())
    completeness = true_pos / real if real else float("nan")
    contamination = (n_kept - true_pos) / n_kept if n_kept else 0.0
    specificity = int(np.sum(~truth & ~kept)) / fake if fake else float("nan")
    return {
        "n": len(truth),
        "real": real,
        "kept": n_kept,
        "completeness": completeness,
        "contamination": contamination,
        "fom": completeness * (1.0 - contamination),
        "balanced_accuracy": (completeness + specificity) / 2.0,
        "accuracy": float(np.mean(truth == kept)) if len(truth) else float("nan"),
    }


def fom(truth: np.ndarray, kept: np.ndarray) -> float:
    return summary(truth, kept)["fom"]


def per_class_accuracy(vis_class: np.ndarray, truth: np.ndarray, kept: np.ndarray) -> dict:
    """Share of each visual class that got the right decision."""
    correct = np.asarray(truth) == np.asarray(kept)
    return {
        str(c): {
            "n": int(np.sum(vis_class == c)),
            "accuracy": float(correct[vis_class == c].mean()),
        }
        for c in VISUAL_CLASSES
        if np.any(vis_class == c)
    }


def score_bands(score: np.ndarray, truth: np.ndarray, low: float, high: float) -> list[dict]:
    """The 2020 table: count and contamination of the discard, ambiguous and keep bands."""
    bands = (
        ("discard", score < low),
        ("ambiguous", (score >= low) & (score < high)),
        ("keep", score >= high),
    )
    return [
        {
            "band": name,
            "count": int(inside.sum()),
            "contamination": float(np.mean(~truth[inside])) if inside.any() else float("nan"),
        }
        for name, inside in bands
    ]


def threshold_curve(score: np.ndarray, truth: np.ndarray, thresholds: np.ndarray) -> dict:
    """Completeness, contamination and FoM when keeping score >= t, for each t."""
    rows = [summary(truth, score >= t) for t in thresholds]
    return {
        key: np.array([r[key] for r in rows]) for key in ("completeness", "contamination", "fom")
    }


def best_single_threshold(score: np.ndarray, truth: np.ndarray) -> float:
    grid = np.linspace(0.01, 0.99, 99)
    return float(grid[np.argmax(threshold_curve(score, truth, grid)["fom"])])


SNR_BINS = (("4.8-5.5", 4.8, 5.5), ("5.5-7", 5.5, 7.0), (">7", 7.0, np.inf))


def by_snr(sn: np.ndarray, truth: np.ndarray, kept: np.ndarray) -> dict:
    """Metrics split by catalogue S/N (empty where S/N is unknown)."""
    out = {}
    for name, low, high in SNR_BINS:
        inside = (sn >= low) & (sn < high)
        if inside.any():
            out[name] = summary(truth[inside], kept[inside])
    return out


def fom_difference_interval(
    truth: np.ndarray,
    kept_a: np.ndarray,
    kept_b: np.ndarray,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """FoM(a) - FoM(b) on the same detections, with a paired bootstrap 95% interval."""

    def fom_from_counts(true_pos, kept, real):
        return (true_pos / real) * (true_pos / np.maximum(kept, 1))

    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(truth), size=(resamples, len(truth)))
    t = truth[draws]
    real = t.sum(axis=1)
    differences = fom_from_counts((t & kept_a[draws]).sum(1), kept_a[draws].sum(1), real) - (
        fom_from_counts((t & kept_b[draws]).sum(1), kept_b[draws].sum(1), real)
    )
    low, high = np.percentile(differences, [2.5, 97.5])
    return {"difference": fom(truth, kept_a) - fom(truth, kept_b), "ci95": [low, high]}
