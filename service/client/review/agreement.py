"""How reviewers agree with each other and with the model, on the detections they labelled.

Per reviewer pair: Cohen's kappa with quadratic weights on classes 0-5 (an ordinal scale: 1 vs
2 is a smaller disagreement than 0 vs 5), and on the artifact classes the share of agreement
among detections either reviewer called an artifact (-2 bad amp, -1 bad pixel). Over all
reviewers: Krippendorff's alpha, ordinal, on 0-5. Against the model: the votes per visual class
against its decision, and per consensus class the model's accuracy (real means class 3-5), the
2020 per-class table on this night. Statistics come from scikit-learn and ``krippendorff``.
"""

from dataclasses import dataclass
from itertools import combinations

import krippendorff
import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix

from service.client.labels import consensus
from service.client.review.night import Night
from service.client.review.votes import Vote
from service.domain import FIRST_REAL_CLASS, VISUAL_CLASSES

GRADED = (0, 1, 2, 3, 4, 5)
ARTIFACTS = (-2, -1)
DECISIONS = ("fake", "real")


@dataclass(frozen=True)
class Pair:
    first: str
    second: str
    both: int  # detections both labelled
    graded: int  # of those, both in 0-5
    kappa: float | None  # quadratic-weighted, on the graded ones
    artifact_cases: int  # either called an artifact
    artifact_agreement: float | None  # share of those with the same class from both


@dataclass(frozen=True)
class Agreement:
    reviewers: list[str]
    votes: int
    pairs: list[Pair]
    alpha: float | None
    by_class: np.ndarray  # (8, 2): votes per visual class against the model's decision
    per_class: list[tuple[int, int, float | None, float | None]]  # class, n, accuracy, held-out


def measure(votes: list[Vote], night: Night, heldout: dict[int, float]) -> Agreement:
    known = [vote for vote in votes if night.index_of(vote.detectid) is not None]
    by_reviewer: dict[str, dict[int, int]] = {}
    for vote in known:
        by_reviewer.setdefault(vote.reviewer, {})[vote.detectid] = vote.vis_class
    reviewers = sorted(by_reviewer)
    pairs = [pair(a, b, by_reviewer[a], by_reviewer[b]) for a, b in combinations(reviewers, 2)]
    decisions = [night.catalogue.decision[night.index_of(vote.detectid)] for vote in known]
    by_class = np.zeros((len(VISUAL_CLASSES), len(DECISIONS)), dtype=np.int64)
    if known:  # one matrix over classes and decisions; its class-by-decision block is wanted
        by_class = confusion_matrix(
            [str(vote.vis_class) for vote in known],
            decisions,
            labels=[*map(str, VISUAL_CLASSES), *DECISIONS],
        )[: len(VISUAL_CLASSES), len(VISUAL_CLASSES) :]
    return Agreement(
        reviewers, len(known), pairs, alpha(by_reviewer), by_class, per_class(known, night, heldout)
    )


def pair(a: str, b: str, first: dict[int, int], second: dict[int, int]) -> Pair:
    common = sorted(set(first) & set(second))
    x = np.array([first[d] for d in common], dtype=np.int64)
    y = np.array([second[d] for d in common], dtype=np.int64)
    graded = np.isin(x, GRADED) & np.isin(y, GRADED)
    kappa = None
    if graded.sum() >= 2 and len(set(x[graded]) | set(y[graded])) >= 2:
        kappa = float(cohen_kappa_score(x[graded], y[graded], labels=GRADED, weights="quadratic"))
    artifact = np.isin(x, ARTIFACTS) | np.isin(y, ARTIFACTS)
    share = float(np.mean(x[artifact] == y[artifact])) if artifact.any() else None
    return Pair(a, b, len(common), int(graded.sum()), kappa, int(artifact.sum()), share)


def alpha(by_reviewer: dict[str, dict[int, int]]) -> float | None:
    """Krippendorff's ordinal alpha on 0-5 (artifact votes count as missing); None if undefined."""
    detections = sorted({d for votes in by_reviewer.values() for d in votes})
    column = {d: i for i, d in enumerate(detections)}
    data = np.full((len(by_reviewer), len(detections)), np.nan)
    for row, votes in enumerate(by_reviewer.values()):
        for detectid, vis_class in votes.items():
            if vis_class in GRADED:
                data[row, column[detectid]] = vis_class
    paired = np.sum(~np.isnan(data), axis=0) >= 2
    values = data[:, paired]
    if len(by_reviewer) < 2 or len(np.unique(values[~np.isnan(values)])) < 2:
        return None
    return float(
        krippendorff.alpha(
            reliability_data=values, level_of_measurement="ordinal", value_domain=list(GRADED)
        )
    )


def per_class(
    votes: list[Vote], night: Night, heldout: dict[int, float]
) -> list[tuple[int, int, float | None, float | None]]:
    """Per consensus class: reviewed detections, the model's accuracy on them, held-out's."""
    agreed = consensus(votes)
    decided_real = night.catalogue.decision[night.indices_of(agreed.detectid)] == "real"
    rows = []
    for vis_class in VISUAL_CLASSES:
        chosen = agreed.vis_class == vis_class
        truth = np.full(int(chosen.sum()), vis_class >= FIRST_REAL_CLASS)
        accuracy = float(accuracy_score(truth, decided_real[chosen])) if chosen.any() else None
        rows.append((vis_class, int(chosen.sum()), accuracy, heldout.get(vis_class)))
    return rows
