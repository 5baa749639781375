"""Exact k nearest neighbours among a fixed reference sample, through faiss.

UMAP placement and novelty both need, for each cutout, its exact k nearest among a few thousand
packaged training cutouts. faiss's flat index finds them with a blocked BLAS product and a fused
top-k selection, about twice as fast per cutout in a batch as numpy's matrix product and
argpartition were, and no faster for a single cutout (bench/CHOICES.md).
"""

import math

import faiss
import numpy as np

# faiss computes a batch through BLAS (|x|^2 + |t|^2 - 2 x.t) only from rows x dims >= this, and
# one distance at a time below it. Its default (128000: 4000 rows of 32 dims) left every batch
# of the pipeline on the slow path, 3x slower; BLAS wins from 4-8 rows at 32 to 288 dims
# (measured), so the switch is at 24 rows of 32 dims, 8 of 96, 3 of 288.
BLAS_FROM = 8 * 96
ROUNDING = 1e-5  # relative size of float32 cancellation error in |x|^2 + |t|^2 - 2 x.t


class Neighbours:
    """Exact euclidean k nearest neighbours among a fixed sample (a faiss ``IndexFlatL2``).

    Building one sets faiss to one thread in the calling thread (OpenMP's count is per thread):
    its default is every core, and two threads on a busy two-core machine searched 3 to 30
    times slower than one. :func:`service.runtime.cap_thread_pools` sets the service's count.
    It also sets faiss's process-wide BLAS switch to :data:`BLAS_FROM` (on use, not on import).
    """

    def __init__(self, features: np.ndarray, k: int) -> None:
        self.train_ = np.ascontiguousarray(features, dtype=np.float32)
        self.k_ = int(k)
        if not 0 < self.k_ <= len(self.train_):
            raise ValueError(f"k={self.k_} needs 1 to {len(self.train_)} reference points")
        faiss.omp_set_num_threads(1)
        faiss.cvar.distance_compute_blas_threshold = BLAS_FROM
        self.index_ = faiss.IndexFlatL2(self.train_.shape[1])
        self.index_.add(self.train_)

    def __call__(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices (int64) and euclidean distances (float32) of the k nearest sample points,
        nearest first. A distance within float32 cancellation error of 0 is 0: the query is
        that sample point, whether faiss took the BLAS path or not."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        squared, indices = self.index_.search(features, self.k_)  # squared distances, >= 0
        norms = np.einsum("ij,ij->i", features, features)[:, None]
        rounding = ROUNDING * (1.0 + norms)
        if (squared[:, :1] <= rounding).any():  # nearest first: only a leading one can be 0
            squared[squared <= rounding] = 0.0
        return indices, np.sqrt(squared, out=squared)


def mean(values: np.ndarray, axis: int | tuple[int, ...], dtype: type | None = None) -> np.ndarray:
    """``values.mean(axis, dtype=dtype)`` of a float array (or of any array, given ``dtype``)
    without the Python-level argument handling of ``np.mean``, which costs more than the
    arithmetic on one cutout. The same numbers: numpy sums the same way, then divides by the
    count in float64 and rounds to the sum's type, and a float32 division rounds the same (one
    rounding of a quotient is exact to within float64's, which has twice float32's digits + 2).
    """
    count = (
        values.shape[axis]
        if isinstance(axis, int)
        else math.prod(map(values.shape.__getitem__, axis))
    )
    return np.add.reduce(values, axis=axis, dtype=dtype) / count
