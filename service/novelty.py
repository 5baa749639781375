"""Novelty: how unusual a cutout is next to the training sample, on a scale people can read.

A real night will bring artifacts no simulator rendered. The CNN may still score them
confidently, so the decision cannot say "I have never seen this"; novelty can. A cutout is
looked at in two spaces: the CNN's embedding (what the model learned to care about) and the
normalised pixels pooled to 3 x 16 blocks, both channels (what it may have learned to ignore).
In each, its unusualness is the mean distance to its k nearest training cutouts, turned into
the share of in-distribution held-out (calibration) cutouts that are closer. The larger share
of the two is ranked once more against the calibration cutouts, so

    novelty = share of in-distribution held-out cutouts less unusual than this one,

a number in [0, 1] that is uniform on in-distribution data; ``novel`` means novelty reached the
manifest's threshold, chosen for at most 1% false alarms. Novelty never changes the decision.
"""

from dataclasses import dataclass
from functools import reduce

import numpy as np

from service.neighbours import Neighbours, mean

SPACES = ("embedding", "pixels")
POOL_ROWS, POOL_COLUMNS = 3, 2  # (9, 32) -> (3, 16) blocks: 6 pixels each, noise / sqrt(6)


def pooled_pixels(model_input: np.ndarray) -> np.ndarray:
    """(N, 2, 9, 32) model input -> (N, 96) block means of both channels (values and mask)."""
    n, channels, rows, columns = model_input.shape
    blocks = model_input.reshape(
        n, channels, rows // POOL_ROWS, POOL_ROWS, columns // POOL_COLUMNS, POOL_COLUMNS
    )
    return mean(blocks, axis=(3, 5), dtype=np.float32).reshape(n, -1)


def space_features(space: str, model_input: np.ndarray, embedding: np.ndarray) -> np.ndarray:
    if space == "embedding":
        return np.asarray(embedding, dtype=np.float32)
    if space == "pixels":
        return pooled_pixels(model_input)
    raise ValueError(f"unknown novelty space {space!r}")


def share_below(sorted_reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Share of the (sorted) reference strictly below each value: an empirical CDF in [0, 1]."""
    return sorted_reference.searchsorted(values, side="left") / len(sorted_reference)


@dataclass
class Novelty:
    """Fitted novelty: reference samples per space and the calibration distributions."""

    references_: dict[str, Neighbours]
    calibration_: dict[str, np.ndarray]  # per space: sorted mean k-NN distances, calibration set
    combined_: np.ndarray  # sorted larger per-space share of the calibration cutouts
    threshold: float

    def unusualness(
        self,
        model_input: np.ndarray,
        embedding: np.ndarray,
        known: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Mean distance to the k nearest reference cutouts, per space. ``known``: distances to
        the nearest reference cutouts (nearest first, at least k) a caller already has."""
        out = {}
        for space, neighbours in self.references_.items():
            if known and space in known:
                distances = known[space][:, : self.k]
            else:
                _, distances = neighbours(space_features(space, model_input, embedding))
            out[space] = mean(distances, axis=1)
        return out

    def combine(self, unusualness: dict[str, np.ndarray]) -> np.ndarray:
        shares = [share_below(self.calibration_[s], unusualness[s]) for s in self.references_]
        return reduce(np.maximum, shares)  # np.max(shares, axis=0), without stacking them

    def __call__(
        self,
        model_input: np.ndarray,
        embedding: np.ndarray,
        known: dict[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Novelty in [0, 1] per cutout (float32); ``known`` as for :meth:`unusualness`."""
        combined = self.combine(self.unusualness(model_input, embedding, known))
        return share_below(self.combined_, combined).astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """What ``novelty.npz`` holds; ``from_arrays`` reverses it."""
        arrays = {
            "combined": self.combined_,
            "threshold": np.float64(self.threshold),
            "k": np.int64(self.k),
        }
        for space, neighbours in self.references_.items():
            arrays[f"{space}_reference"] = neighbours.train_
            arrays[f"{space}_calibration"] = self.calibration_[space]
        return arrays

    @property
    def k(self) -> int:
        """Neighbours averaged per space (the same in every space)."""
        return next(iter(self.references_.values())).k_

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Novelty":
        k = int(arrays["k"])
        spaces = [s for s in SPACES if f"{s}_reference" in arrays]
        return cls(
            references_={s: Neighbours(arrays[f"{s}_reference"], k) for s in spaces},
            calibration_={s: np.asarray(arrays[f"{s}_calibration"]) for s in spaces},
            combined_=np.asarray(arrays["combined"]),
            threshold=float(arrays["threshold"]),
        )

    @classmethod
    def fit(
        cls,
        reference: tuple[np.ndarray, np.ndarray],
        calibration: tuple[np.ndarray, np.ndarray],
        *,
        k: int = 10,
        false_alarm: float = 0.01,
        spaces: tuple[str, ...] = SPACES,
    ) -> "Novelty":
        """``reference`` and ``calibration``: (model_input, embedding) of training cutouts and
        of in-distribution cutouts the reference does not contain (e.g. the validation split).

        The threshold sits two binomial standard errors above the ``1 - false_alarm`` quantile
        of the calibration novelty, so fresh in-distribution data sees at most ``false_alarm``.
        """
        references = {s: Neighbours(space_features(s, *reference), k) for s in spaces}
        partial = cls(references, {}, np.zeros(1), 1.0)
        raw = partial.unusualness(*calibration)
        partial.calibration_ = {s: np.sort(raw[s]) for s in spaces}
        partial.combined_ = np.sort(partial.combine(raw))
        n = len(partial.combined_)
        margin = 2.0 * np.sqrt(false_alarm * (1.0 - false_alarm) / n)
        partial.threshold = float(min(1.0, 1.0 - false_alarm + margin))
        return partial

    def calibration_flagged(self) -> float:
        """Share of the calibration cutouts themselves that reach the threshold (in-sample)."""
        return float(self.flag(share_below(self.combined_, self.combined_)).mean())

    def flag(self, novelty: np.ndarray) -> np.ndarray:
        return novelty >= self.threshold
