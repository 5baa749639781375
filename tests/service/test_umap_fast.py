import numpy as np
import pytest

from service.umap_fast import NeighbourTransform, membership


@pytest.fixture
def sample(rng):
    features = rng.standard_normal((500, 8)).astype(np.float32)
    embedding = rng.standard_normal((500, 2)).astype(np.float32)
    return NeighbourTransform(features, embedding, n_neighbors=15)


def test_membership_matches_umap_learn(rng):
    from umap.umap_ import smooth_knn_dist

    distances = np.sort(rng.gamma(2.0, 1.0, (300, 15)).astype(np.float32), axis=1)
    distances[:5, 0] = 0.0  # exact matches occur
    sigmas, rhos = smooth_knn_dist(distances, 15.0, local_connectivity=0.0)
    assert np.all(rhos == 0.0)  # transform uses local connectivity 0
    expected = np.where(distances > 0, np.exp(-distances / sigmas[:, None]), 1.0)
    np.testing.assert_allclose(membership(distances, 15), expected, rtol=1e-4)


def test_a_training_point_lands_on_its_own_place(sample):
    np.testing.assert_allclose(
        sample.transform(sample.neighbours.train_[:10]), sample.embedding_[:10], atol=1e-5
    )


def test_placement_is_a_weighted_mean_inside_the_neighbours_hull(sample, rng):
    queries = rng.standard_normal((30, 8)).astype(np.float32)
    placed = sample.transform(queries)
    indices, _ = sample.neighbours(queries)
    neighbours = sample.embedding_[indices]
    assert np.all(placed >= neighbours.min(axis=1) - 1e-5)
    assert np.all(placed <= neighbours.max(axis=1) + 1e-5)


def test_a_point_does_not_depend_on_its_batch(sample, rng):
    queries = rng.standard_normal((2100, 8)).astype(np.float32)  # faiss's BLAS path
    batch = sample.transform(queries)
    one_by_one = np.concatenate(  # one at a time: faiss's direct path
        [sample.transform(queries[i : i + 1]) for i in range(0, 2100, 300)]
    )
    np.testing.assert_allclose(one_by_one, batch[::300], atol=1e-4)
    assert sample.transform(queries[:0]).shape == (0, 2)


def test_membership_of_duplicates_weighs_only_the_exact_matches():
    distances = np.array([[0.0] * 6 + [1.0] * 9, [0.0] * 15], dtype=np.float32)
    weights = membership(distances, 15)
    np.testing.assert_allclose(weights[0], [1.0] * 6 + [0.0] * 9, atol=1e-12)
    np.testing.assert_array_equal(weights[1], np.ones(15))


def test_membership_without_zero_distances_takes_a_shortcut_to_the_same_numbers(rng):
    """Rows with no zero distance weigh as through the general path, to the last bit: beside an
    all-zero row (which takes the general path, and being unsolvable, never holds the batch's
    Newton steps back)."""
    distances = np.sort(rng.gamma(2.0, 1.0, (300, 15)).astype(np.float32), axis=1)
    zero = np.zeros((1, 15), dtype=np.float32)
    for rows in (distances, distances[:1], distances[7:8], distances[299:]):
        general = membership(np.concatenate([rows, zero]), 15)[:-1]
        assert membership(rows, 15).tobytes() == general.tobytes()
