"""The data plane: decoded detections in, one result or error per item out, in order.

It batches every valid item into one pass through the scoring core, then puts each result back
in its item's place. It knows nothing of HTTP.
"""

from dataclasses import dataclass, field

import numpy as np

from service.codec import Detection
from service.flags import flags_for, masked_fraction
from service.pipeline import Scorer


@dataclass
class Outcome:
    """Results in request order, plus what the metrics need to know about the pass."""

    results: list[dict]
    scored: int
    timings: dict[str, float] = field(default_factory=dict)
    decisions: dict[tuple[str, str], int] = field(default_factory=dict)
    novel: int = 0  # scored detections flagged novel


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
        cutouts = (
            detections[valid[0]].cutout[None]  # one detection: no copy to make
            if len(valid) == 1
            else np.stack([detections[i].cutout for i in valid])
        )
        scores = self.scorer.score(cutouts, outcome.timings)
        rows = zip(
            valid,
            scores.cnn_score.tolist(),
            scores.umap.tolist(),
            scores.svm_score.tolist(),
            ["real" if real else "fake" for real in scores.real.tolist()],
            ["svm" if by_svm else "cnn" for by_svm in scores.decided_by_svm.tolist()],
            scores.novelty.tolist(),
            scores.novel.tolist(),
            masked_fraction(cutouts).tolist(),
            strict=True,
        )
        for index, cnn_score, umap, svm_score, decision, stage, novelty, novel, masked in rows:
            detection = detections[index]
            results[index] = {
                "detectid": detection.detectid,
                "cnn_score": cnn_score,
                "umap": umap,
                "svm_score": svm_score,
                "decision": decision,
                "stage": stage,
                "novelty": novelty,
                "flags": flags_for(masked, detection.wave, novel),
            }
            outcome.decisions[(decision, stage)] = outcome.decisions.get((decision, stage), 0) + 1
        outcome.novel = int(scores.novel.sum())
        return outcome


def error_result(index: int, detection: Detection) -> dict:
    return {"detectid": detection.detectid, "error": {**detection.error.problem(), "index": index}}
