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
from service.neighbours import mean as mean_of

SMOOTH_K_TOLERANCE = 1e-5  # as in umap-learn
MIN_K_DIST_SCALE = 1e-3
NEWTON_STEPS = 50
TINY = np.finfo(np.float64).tiny


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
        placed /= np.add.reduce(weights, axis=1, keepdims=True)
        exact = distances[:, 0] <= 0.0  # a training point itself: umap returns its position
        if exact.any():
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
    if rest.shape[1] and (distances > 0).all():
        # The usual case: every row is solved and none has an exact match, so the bookkeeping
        # below (which costs more than the arithmetic for one point) changes no number.
        free = rest.shape[1]
        beta = np.log(free / target) / (np.add.reduce(rest, axis=1) / free)
        return weights_for(distances, newton(beta, np.negative(rest), rest, target))
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
    beta = newton(beta, minus_rest, near, target - exact, solvable.astype(np.float64))
    # Unsolvable rows (mostly exact duplicates) get the floor: only the exact matches weigh,
    # as umap-learn's bisection ends up doing.
    beta = np.where(solvable, beta, 0.0)
    return np.where(distances > 0, weights_for(distances, beta), 1.0)


def newton(
    beta: np.ndarray,
    minus_rest: np.ndarray,
    near: np.ndarray,
    need: np.ndarray,
    moving: np.ndarray | None = None,
) -> np.ndarray:
    """beta where sum(exp(beta * minus_rest)) = need, for rows with ``moving`` 1 (all if None).

    Newton: f / -f'. From the left of the root beta only grows towards it, where the weights
    sum to need > 0, so -f' (the weighted distances) stays positive."""
    for _ in range(NEWTON_STEPS):
        weights = np.exp(beta[:, None] * minus_rest)
        excess = np.add.reduce(weights, axis=1) - need
        if moving is not None:
            excess *= moving
        if np.maximum.reduce(np.abs(excess), initial=0.0) < SMOOTH_K_TOLERANCE:
            break
        beta += excess / np.einsum("nk,nk->n", weights, near)
    return beta


def weights_for(distances: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """exp(-d / sigma) with sigma = 1 / beta (0 where beta is not positive), floored."""
    sigma = np.where(beta > 0, 1.0 / np.where(beta > 0, beta, 1.0), 0.0)
    sigma = np.maximum(sigma, MIN_K_DIST_SCALE * mean_of(distances, axis=1))
    sigma = np.maximum(sigma, TINY)
    return np.exp(-distances / sigma[:, None])
