"""Which detections of a scored night are most worth a human look: ``linescore labels suggest``.

A model trained on simulators is wrong on a real night in two ways: near its boundary (scores
near the threshold, the ambiguous band) and wholesale, on a kind of cutout it never saw, which it
may score confidently. Labels spent only near the boundary never find the second kind, and 500
labels chosen by uncertainty alone can all go to one artifact. So the night's UMAP map is cut into
clusters (k-means on the places the server returned) and labels are dealt to the clusters in turn,
each cluster's share in proportion to its size and growing with how uncertain the model is
there. Within a cluster, picks alternate between the most uncertain (and novel) detection left
and a random one: the first find the boundary, the second keep the labels a fair sample of the
cluster, which ``training adapt`` needs to calibrate its threshold for the whole night and to
learn the night's own mix. Every cluster, confident or not, gets labels early, so a cluster the
model gets wholly wrong shows itself.

The review queue serves detections in this same order (:func:`rank`).
"""

import csv
import heapq
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans

from service.client.review.model import load_model
from service.client.review.night import Catalogue, Night, ReviewError, read_catalogue
from service.client.review.queue import flag_column
from service.client.review.votes import VoteStore
from service.flags import NOVEL

MAX_CLUSTERS = 40
PER_CLUSTER = 200  # about this many detections per cluster on small nights
NOVELTY_WEIGHT = 0.5


@dataclass(frozen=True)
class Thresholds:
    """The scoring model's decision thresholds (from its manifest)."""

    low: float
    high: float
    cnn_alone: float


@dataclass(frozen=True)
class Ranking:
    """Catalogue indices, best first, with why each was chosen."""

    order: np.ndarray  # (N,) catalogue indices
    cluster: np.ndarray  # (N,) cluster of each catalogue index
    uncertainty: np.ndarray  # (N,) in [0, 1], 1 at the decision threshold
    reasons: list[str]  # per catalogue index


def uncertainty(score: np.ndarray, threshold: float) -> np.ndarray:
    """1 at the threshold, 0 at the far end of the score range (0 or 1)."""
    reach = np.where(score >= threshold, 1.0 - threshold, threshold)
    return np.clip(1.0 - np.abs(score - threshold) / np.maximum(reach, 1e-9), 0.0, 1.0)


def clusters(coords: np.ndarray, seed: int = 0) -> np.ndarray:
    """k-means on the standardised map places; about ``PER_CLUSTER`` detections per cluster."""
    k = int(np.clip(len(coords) // PER_CLUSTER, 1, MAX_CLUSTERS))
    if k == 1:
        return np.zeros(len(coords), dtype=np.int64)
    spread = coords.std(axis=0)
    scaled = (coords - coords.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(scaled).astype(np.int64)


def rank(catalogue: Catalogue, thresholds: Thresholds, seed: int = 0) -> Ranking:
    """Every catalogue detection, most useful label first (see the module docstring)."""
    score = catalogue.cnn_score
    unsure = uncertainty(score, thresholds.cnn_alone)
    novelty = np.nan_to_num(catalogue.novelty, nan=0.0)
    band = ((score >= thresholds.low) & (score < thresholds.high)) | (catalogue.stage == "svm")
    novel = flag_column(catalogue, NOVEL)
    cluster = clusters(catalogue.umap, seed)
    priority = unsure + NOVELTY_WEIGHT * novelty
    rng = np.random.default_rng(seed)
    queues = {}
    for c in np.unique(cluster):
        members = np.flatnonzero(cluster == c)
        surest = members[np.lexsort((catalogue.detectid[members], -priority[members]))]
        queues[int(c)] = (
            interleave(surest, rng.permutation(members)),
            len(members) * (0.5 + unsure[members].mean()),
        )
    # stride scheduling: the cluster that has had the fewest labels for its weight goes next
    heap = [(1.0 / weight, c) for c, (_, weight) in queues.items()]
    heapq.heapify(heap)
    taken = dict.fromkeys(queues, 0)
    order = np.empty(len(catalogue), dtype=np.int64)
    for position in range(len(catalogue)):
        _, c = heapq.heappop(heap)
        members, weight = queues[c]
        order[position] = members[taken[c]]
        taken[c] += 1
        if taken[c] < len(members):
            heapq.heappush(heap, ((taken[c] + 1) / weight, c))
    reasons = [
        "; ".join(
            part
            for part, on in (
                ("band", band[i]),
                ("novel", novel[i]),
                (f"uncertain {unsure[i]:.2f}", unsure[i] >= 0.5),
                (f"cluster {cluster[i]}", True),
            )
            if on
        )
        for i in range(len(catalogue))
    ]
    return Ranking(order, cluster, unsure, reasons)


def interleave(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The same items, taken alternately from each order, each item at its first appearance."""
    both = np.column_stack([first, second]).reshape(-1)
    _, at = np.unique(both, return_index=True)
    return both[np.sort(at)]


SUGGEST_COLUMNS = (
    "detectid",
    "rank",
    "why",
    "cluster",
    "uncertainty",
    "cnn_score",
    "svm_score",
    "novelty",
    "decision",
    "stage",
    "umap_x",
    "umap_y",
    "flags",
)


def write_suggestions(
    path: Path, catalogue: Catalogue, ranking: Ranking, count: int, voted: np.ndarray
) -> int:
    """The first ``count`` ranked detections without votes, as CSV; how many were written."""
    skip = np.isin(catalogue.detectid[ranking.order], voted)
    chosen = ranking.order[~skip][:count]
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", newline="", encoding="ascii") as handle:
        writer = csv.writer(handle)
        writer.writerow(SUGGEST_COLUMNS)
        for position, i in enumerate(chosen, start=1):
            writer.writerow(
                (
                    int(catalogue.detectid[i]),
                    position,
                    ranking.reasons[i],
                    int(ranking.cluster[i]),
                    f"{ranking.uncertainty[i]:.4f}",
                    repr(float(catalogue.cnn_score[i])),
                    repr(float(catalogue.svm_score[i])),
                    repr(float(catalogue.novelty[i])),
                    catalogue.decision[i],
                    catalogue.stage[i],
                    repr(float(catalogue.umap[i, 0])),
                    repr(float(catalogue.umap[i, 1])),
                    ";".join(catalogue.flags_of(int(i))),
                )
            )
    partial.replace(path)
    return len(chosen)


def suggest(
    catalogue_path: Path, data: Path, count: int, out: Path, db: Path | None, models_root: Path
) -> int:
    """``linescore labels suggest``: check the night as the review does, rank, write the CSV."""
    catalogue = read_catalogue(catalogue_path)
    model = load_model(models_root, catalogue.model_version, catalogue_path)
    night = Night(catalogue, data)  # refuses a catalogue of another file, a missing detection
    night.close()
    voted = np.empty(0, dtype=np.int64)
    if db is not None:
        store = VoteStore.existing(db)
        if store.night().get("fingerprint") != night.fingerprint:
            raise ReviewError(f"{db}: a review database of another night, not {data.name}")
        voted, _ = store.vote_counts()
    ranking = rank(catalogue, Thresholds(model.low, model.high, model.cnn_alone))
    return write_suggestions(out, catalogue, ranking, count, voted)
