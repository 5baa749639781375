"""A fast, per-point deterministic replacement for ``umap.UMAP.transform``.

umap-learn places a new point by (1) an approximate nearest-neighbour search among the training
points, (2) fuzzy membership weights from the neighbour distances, (3) the weighted mean of the
neighbours' embedded positions, then (4) ~100 epochs of stochastic refinement whose random
negative samples and pruning depend on the whole batch. Here (1) is an exact search (faiss's
flat index, :mod:`service.neighbours`) among the packaged training sample, (2) and (3) follow
umap-learn's formulas vectorised over the batch, and (4) is left out: the refinement is what
costs the time, and it makes a detection's coordinates depend on the rest of its request.
``bench/umap.py`` measures what leaving it out changes.
"""

import numpy as np

from service.neighbours import Neighbours

SMOOTH_K_TOLERANCE = 1e-5  # as in umap-learn
MIN_K_DIST_SCALE = 1e-3
NEWTON_STEPS = 50


class NeighbourTransform:
    """Embeds new points into a fitted UMAP plane from their exact k nearest training points."""

    def __init__(self, features: np.ndarray, embedding: np.ndarray, n_neighbors: int) -> None:
        """``features``: the UMAP inputs of the training sample; ``embedding``: their places."""
        self.neighbours = Neighbours(features, n_neighbors)
        self.embedding_ = np.ascontiguousarray(embedding, dtype=np.float32)
        self.n_neighbors_ = int(n_neighbors)

    @classmethod
    def from_reducer(cls, reducer) -> "NeighbourTransform":
        """From a fitted euclidean ``umap.UMAP``."""
        if reducer.metric != "euclidean":
            raise ValueError(f"only the euclidean metric is supported, not {reducer.metric!r}")
        return cls(reducer._raw_data, reducer.embedding_, reducer.n_neighbors)

    def transform(self, features: np.ndarray) -> np.ndarray:
        return self.transform_with_distances(features)[0]

    def transform_with_distances(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Places, and each point's distances to its ``n_neighbors`` nearest training points
        (nearest first): novelty reuses them when its reference is this same sample."""
        indices, distances = self.neighbours(features)
        weights = membership(distances, self.n_neighbors_)
        placed = np.einsum("nk,nkd->nd", weights, self.embedding_[indices])
        placed /= weights.sum(axis=1, keepdims=True)
        exact = distances[:, 0] <= 0.0  # a training point itself: umap returns its position
        placed[exact] = self.embedding_[indices[exact, 0]]
        return placed.astype(np.float32), distances


def membership(distances: np.ndarray, k: int) -> np.ndarray:
    """umap-learn's fuzzy weights exp(-d / sigma) for transform (local connectivity 0).

    sigma solves sum over neighbours 2..k of exp(-d / sigma) = log2(k), as in
    ``umap.umap_.smooth_knn_dist``, floored at 1e-3 of the point's mean neighbour distance
    (umap-learn floors at the batch's mean, which would make a point depend on its batch; the
    floor practically never binds). umap-learn bisects; here Newton's method runs on
    beta = 1 / sigma: the sum is convex and decreasing in beta, and Jensen's inequality puts the
    start exp(-beta d_mean) = target / n left of the root, so the steps climb to it
    monotonically in a handful of iterations, and a single point costs microseconds.
    """
    target = np.log2(k)
    rest = distances[:, 1:].astype(np.float64)
    positive = rest > 0
    exact = (~positive).sum(axis=1)  # zero distances weigh 1 whatever sigma is
    free = np.maximum(positive.sum(axis=1), 1)
    near = np.where(positive, rest, 0.0)
    mean = near.sum(axis=1) / free
    solvable = (exact < target) & (mean > 0)
    beta = np.where(
        solvable,
        np.log(free / np.maximum(target - exact, 1e-12)) / np.where(mean > 0, mean, 1.0),
        1.0,  # any positive value: these rows are not moved and get the floor below
    )
    # exp(beta * -inf) = 0: zero distances carry no weight here. Rows that are not solved get
    # finite stand-ins, so every step below is a finite zero for them.
    minus_rest = np.where(positive, -rest, -np.inf)
    minus_rest[~solvable] = -1.0
    near[~solvable] = 1.0
    need = target - exact
    moving = solvable.astype(np.float64)
    for _ in range(NEWTON_STEPS):
        weights = np.exp(beta[:, None] * minus_rest)
        excess = (weights.sum(axis=1) - need) * moving
        if np.abs(excess).max(initial=0.0) < SMOOTH_K_TOLERANCE:
            break
        # Newton: f / -f'. From the left of the root beta only grows towards it, where the
        # weights sum to need > 0, so -f' (the weighted distances) stays positive.
        beta += excess / np.einsum("nk,nk->n", weights, near)
    beta = np.where(solvable, beta, 0.0)
    # Unsolvable rows (mostly exact duplicates) get the floor: only the exact matches weigh,
    # as umap-learn's bisection ends up doing.
    sigma = np.where(beta > 0, 1.0 / np.where(beta > 0, beta, 1.0), 0.0)
    sigma = np.maximum(sigma, MIN_K_DIST_SCALE * distances.mean(axis=1))
    sigma = np.maximum(sigma, np.finfo(np.float64).tiny)
    return np.where(distances > 0, np.exp(-distances / sigma[:, None]), 1.0)
