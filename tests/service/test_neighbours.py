"""The exact k-NN search (faiss) against brute force, alone and inside placement and novelty."""

from concurrent.futures import ThreadPoolExecutor
from copy import copy

import faiss
import numpy as np
import pytest

from service.bundle import ModelBundle
from service.manifest import newest_model_dir
from service.neighbours import BLAS_FROM, ROUNDING, Neighbours, mean
from service.novelty import Novelty, space_features
from service.pipeline import Scorer, umap_features
from service.runtime import cap_thread_pools
from tests.live import ROOT


def brute_force(queries: np.ndarray, train: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pairwise distance in float64, one query at a time (bounded memory), sorted."""
    train = train.astype(np.float64)
    distances = np.stack([np.linalg.norm(train - q, axis=1) for q in queries.astype(np.float64)])
    indices = np.argsort(distances, axis=1)[:, :k]
    return indices, np.take_along_axis(distances, indices, axis=1)


class BruteForce:
    """Brute force under :class:`Neighbours`'s contract, to stand in for it in placement and
    novelty: a distance within float32 rounding of 0 is 0 (the query is that point)."""

    def __init__(self, train: np.ndarray, k: int) -> None:
        self.train_, self.k_ = train, k

    def __call__(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        indices, distances = brute_force(features, self.train_, self.k_)
        norms = np.einsum("ij,ij->i", features, features, dtype=np.float64)[:, None]
        distances[distances**2 <= ROUNDING * (1.0 + norms)] = 0.0
        return indices, distances.astype(np.float32)


@pytest.fixture
def reference(rng) -> np.ndarray:
    return rng.standard_normal((500, 8)).astype(np.float32)  # continuous: no ties


@pytest.mark.parametrize("n", [1, 7, 300], ids=["single", "direct", "blas"])
def test_same_neighbours_and_distances_as_brute_force(reference, rng, n):
    assert 7 * 8 < BLAS_FROM <= 300 * 8  # both of faiss's paths are covered
    queries = rng.standard_normal((n, 8)).astype(np.float32)
    indices, distances = Neighbours(reference, 15)(queries)
    assert indices.dtype == np.int64 and distances.dtype == np.float32
    assert indices.shape == distances.shape == (n, 15)
    expected_indices, expected = brute_force(queries, reference, 15)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [1, 500], ids=["direct", "blas"])
def test_a_reference_point_is_its_own_nearest_at_distance_zero(reference, n):
    """Exactly 0 on faiss's BLAS path too, where |x|^2 + |t|^2 - 2 x.t leaves rounding error."""
    indices, distances = Neighbours(reference, 10)(reference[:n])
    np.testing.assert_array_equal(indices[:, 0], np.arange(n))
    np.testing.assert_array_equal(distances[:, 0], 0.0)
    assert np.all(distances[:, 1] > 0.1)


def test_empty_batches_and_too_large_k(reference):
    indices, distances = Neighbours(reference, 10)(reference[:0])
    assert indices.shape == distances.shape == (0, 10)
    with pytest.raises(ValueError, match="k=501"):
        Neighbours(reference, 501)


def in_a_fresh_thread(work):
    """faiss's OpenMP thread count is per thread: test it where no other test has set it."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(work).result()


def test_cap_thread_pools_caps_faiss():
    def capped() -> int:
        faiss.omp_set_num_threads(2)
        cap_thread_pools(1)
        return faiss.omp_get_max_threads()

    assert in_a_fresh_thread(capped) == 1


def test_building_an_index_leaves_faiss_on_one_thread(reference):
    def built() -> int:
        faiss.omp_set_num_threads(2)
        Neighbours(reference, 10)
        return faiss.omp_get_max_threads()

    assert in_a_fresh_thread(built) == 1


@pytest.fixture(scope="module")
def packaged() -> ModelBundle:
    return ModelBundle.load(newest_model_dir(ROOT / "models"))


def same_neighbours(neighbours: Neighbours, features: np.ndarray) -> np.ndarray:
    """Rows where the search picks brute force's k nearest. In the others it may only have
    swapped points tied at the k-th place up to rounding: what it picked is as near."""
    indices, _ = neighbours(features)
    expected_indices, expected = brute_force(features, neighbours.train_, neighbours.k_)
    train, queries = neighbours.train_.astype(np.float64), features.astype(np.float64)
    picked = np.linalg.norm(train[indices] - queries[:, None, :], axis=2)
    np.testing.assert_allclose(np.sort(picked, axis=1), expected, rtol=1e-4, atol=5e-4)
    same = np.all(np.sort(indices, axis=1) == np.sort(expected_indices, axis=1), axis=1)
    assert same.mean() > 0.95
    return same


def test_packaged_placement_and_novelty_match_a_brute_force_search(packaged, tiny_data):
    """The packaged model's places and novelty of a few hundred cutouts, from faiss's neighbours
    and from brute force's through the same formulas: a wrong neighbour would move both.

    Distances differ by float32 rounding of |x|^2 + |t|^2 - 2 x.t (what the numpy search did
    too), which can swap points nearly tied at the k-th place: such rows are only checked
    to pick points as near."""
    scorer = Scorer(packaged)
    model_input = scorer.model_input(tiny_data.im_sum[:300])
    _, embedding = scorer.cnn(model_input)
    search = packaged.shared_search
    assert search is not None  # the packaged model places and measures novelty with one search
    features = umap_features(model_input, embedding, packaged.umap_source)
    train, k = search.neighbours.train_, search.n_neighbors_

    brute = copy(search)
    brute.neighbours = BruteForce(train, k)
    places, distances = search.transform_with_distances(features)
    expected_places, expected_distances = brute.transform_with_distances(features)
    same = same_neighbours(search.neighbours, features)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-4, atol=5e-4)
    np.testing.assert_allclose(places[same], expected_places[same], atol=1e-4)

    novelty = packaged.novelty
    references = {s: BruteForce(n.train_, n.k_) for s, n in novelty.references_.items()}
    brute_novelty = Novelty(references, novelty.calibration_, novelty.combined_, novelty.threshold)
    same = np.ones(len(features), dtype=bool)
    for space, neighbours in novelty.references_.items():
        same &= same_neighbours(neighbours, space_features(space, model_input, embedding))
    unusual = novelty.unusualness(model_input, embedding)
    expected_unusual = brute_novelty.unusualness(model_input, embedding)
    for space in novelty.references_:
        np.testing.assert_allclose(
            unusual[space][same], expected_unusual[space][same], rtol=1e-4, atol=5e-4
        )
    # Novelty ranks among 20000 calibration cutouts: rounding can move a rank by a few.
    got, expected = novelty(model_input, embedding), brute_novelty(model_input, embedding)
    np.testing.assert_allclose(got[same], expected[same], atol=5e-3)
    assert np.mean(got[same] == expected[same]) > 0.95


@pytest.mark.parametrize("scale", [1e-30, 1e-3, 1.0, 1e3, 1e30])
def test_mean_is_numpys_mean_to_the_last_bit(rng, scale):
    rows = (rng.random((2000, 15)) * scale).astype(np.float32)
    blocks = (rng.random((200, 2, 3, 3, 16, 2)) * scale).astype(np.float32)
    masked = rng.random((200, 9, 32)) < 0.3
    for values, axis, dtype in ((rows, 1, None), (blocks, (3, 5), np.float32)):
        expected = values.mean(axis=axis, dtype=dtype)
        got = mean(values, axis, dtype)
        assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()
    expected = masked.mean(axis=(1, 2))
    assert mean(masked, (1, 2), np.float64).tobytes() == expected.tobytes()
