"""The scoring core: decode-free numpy from canonical cutouts to decisions. Knows nothing of HTTP.

cutouts -> contract -> normalise -> CNN (score, embedding) -> UMAP (x, y) -> SVM -> decision.
A confident CNN score decides alone (stage "cnn"); a score in [low, high) is decided by the sign
of the SVM's signed distance in the UMAP plane (stage "svm"). Beside the decision, never
changing it, novelty says how unusual the cutout is next to the training sample
(:mod:`service.novelty`).
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

import numpy as np

from service.bundle import ModelBundle
from service.preprocess import prepare

CHUNK = 256  # cutouts per pass: bounded memory for ONNX Runtime's arena and the k-NN search


@dataclass(frozen=True)
class Scores:
    """Per-cutout outputs of the ensemble, as parallel arrays."""

    cnn_score: np.ndarray  # (N,) float32 in [0, 1]
    umap: np.ndarray  # (N, 2) float32
    svm_score: np.ndarray  # (N,) float64, signed distance, > 0 means real
    real: np.ndarray  # (N,) bool, the final decision
    decided_by_svm: np.ndarray  # (N,) bool, False means the CNN decided alone
    novelty: np.ndarray  # (N,) float32 in [0, 1]: share of in-distribution cutouts less unusual
    novel: np.ndarray  # (N,) bool, novelty at or above the manifest's threshold


def umap_features(model_input: np.ndarray, embedding: np.ndarray, source: str) -> np.ndarray:
    """What UMAP embeds: the normalised pixels (the 2020 way) or the CNN's penultimate layer."""
    if source == "pixels":
        return model_input[:, 0].reshape(len(model_input), -1)
    return embedding


def decide(
    cnn_score: np.ndarray, svm_score: np.ndarray, low: float, high: float
) -> tuple[np.ndarray, np.ndarray]:
    """Final decision and which stage made it, from the two thresholds."""
    ambiguous = (cnn_score >= low) & (cnn_score < high)
    real = np.where(ambiguous, svm_score > 0, cnn_score >= high)
    return real, ambiguous


class Scorer:
    """Scores batches of cutouts with one loaded :class:`ModelBundle`."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self._input_name = bundle.cnn.get_inputs()[0].name
        self._umap_source = bundle.umap_source  # read once: manifest lookups per call add up
        self._thresholds = bundle.thresholds

    def model_input(self, cutouts: np.ndarray) -> np.ndarray:
        """Contract check and normalisation: the exact tensor the CNN sees."""
        return prepare(cutouts, self.bundle.normalization)

    def cnn(self, model_input: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        score, embedding = self.bundle.cnn.run(None, {self._input_name: model_input})
        return score, embedding

    def score(self, cutouts: np.ndarray, timings: dict[str, float] | None = None) -> Scores:
        """Score a batch in chunks of ``CHUNK`` (bounded memory, same speed); if ``timings`` is
        given, add each stage's seconds to it."""
        timings = {} if timings is None else timings
        if len(cutouts) <= CHUNK:
            return self._score(cutouts, timings)
        parts = [
            self._score(cutouts[i : i + CHUNK], timings) for i in range(0, len(cutouts), CHUNK)
        ]
        return Scores(
            *(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Scores))
        )

    def _score(self, cutouts: np.ndarray, timings: dict[str, float]) -> Scores:
        """One pass; the clock is read once between stages (a context manager per stage costs
        as much as a stage's arithmetic on one cutout)."""
        bundle, clock = self.bundle, time.perf_counter
        started = clock()
        model_input = self.model_input(cutouts)
        preprocessed = clock()
        cnn_score, embedding = self.cnn(model_input)
        scored = clock()
        features = umap_features(model_input, embedding, self._umap_source)
        known: dict[str, np.ndarray] = {}
        if bundle.shared_search is not None:  # one search serves novelty too
            coords, known["embedding"] = bundle.shared_search.transform_with_distances(features)
        else:
            coords = bundle.place(features).astype(np.float32)
        placed = clock()
        svm_score = bundle.svm_decision(coords)
        real, by_svm = decide(cnn_score, svm_score, *self._thresholds)
        decided = clock()
        novelty = bundle.novelty(model_input, embedding, known)
        done = clock()
        for name, seconds in (
            ("preprocess", preprocessed - started),
            ("cnn", scored - preprocessed),
            ("umap", placed - scored),
            ("svm", decided - placed),
            ("novelty", done - decided),
        ):
            timings[name] = timings.get(name, 0.0) + seconds
        return Scores(
            cnn_score, coords, svm_score, real, by_svm, novelty, bundle.novelty.flag(novelty)
        )


@contextmanager
def stage(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started
