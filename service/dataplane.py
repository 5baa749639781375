"""The data plane: decoded detections in, one result or error per item out, in order.

It batches every valid item into one pass through the scoring core, then puts each result back
in its item's place. It knows nothing of HTTP.
"""

from dataclasses import dataclass, field

import numpy as np

from service.codec import Detection
from service.flags import flags_for, masked_fraction
from service.pipeline import Scorer, Scores


@dataclass
class Outcome:
    """Results in request order, plus what the metrics need to know about the pass."""

    results: list[dict]
    scored: int
    timings: dict[str, float] = field(default_factory=dict)
    decisions: dict[tuple[str, str], int] = field(default_factory=dict)


class DataPlane:
    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    @property
    def model_version(self) -> str:
        return self.scorer.bundle.version

    def score(self, detections: list[Detection]) -> Outcome:
        valid = [i for i, d in enumerate(detections) if d.error is None]
        results = [error_result(i, d) if d.error else {} for i, d in enumerate(detections)]
        outcome = Outcome(results, scored=len(valid))
        if not valid:
            return outcome
        cutouts = np.stack([detections[i].cutout for i in valid])
        scores = self.scorer.score(cutouts, outcome.timings)
        masked = masked_fraction(cutouts)
        for row, index in enumerate(valid):
            result = result_of(detections[index], scores, row, float(masked[row]))
            results[index] = result
            key = (result["decision"], result["stage"])
            outcome.decisions[key] = outcome.decisions.get(key, 0) + 1
        return outcome


def result_of(detection: Detection, scores: Scores, row: int, masked: float) -> dict:
    return {
        "detectid": detection.detectid,
        "cnn_score": float(scores.cnn_score[row]),
        "umap": [float(scores.umap[row, 0]), float(scores.umap[row, 1])],
        "svm_score": float(scores.svm_score[row]),
        "decision": "real" if scores.real[row] else "fake",
        "stage": "svm" if scores.decided_by_svm[row] else "cnn",
        "flags": flags_for(masked, detection.wave),
    }


def error_result(index: int, detection: Detection) -> dict:
    return {"detectid": detection.detectid, "error": {**detection.error.problem(), "index": index}}
