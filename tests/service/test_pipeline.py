import json

import numpy as np

from service import codec
from service.pipeline import Scorer, decide
from service.preprocess import prepare
from training.dataset import read_labelled
from training.fit import split


def test_decide_uses_the_cnn_outside_the_band_and_the_svm_inside():
    cnn = np.array([0.05, 0.05, 0.5, 0.5, 0.95, 0.95])
    svm = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    real, by_svm = decide(cnn, svm, low=0.2, high=0.8)
    np.testing.assert_array_equal(real, [False, False, True, False, True, True])
    np.testing.assert_array_equal(by_svm, [False, False, True, True, False, False])


def test_band_edges_low_is_ambiguous_high_is_kept():
    real, by_svm = decide(np.array([0.2, 0.8]), np.array([-1.0, -1.0]), low=0.2, high=0.8)
    np.testing.assert_array_equal(by_svm, [True, False])
    np.testing.assert_array_equal(real, [False, True])


def test_scores_are_consistent_with_the_manifest_thresholds(tiny_bundle, tiny_data):
    scores = Scorer(tiny_bundle).score(tiny_data.im_sum)
    low, high = tiny_bundle.thresholds
    n = len(tiny_data)
    assert scores.cnn_score.shape == (n,) and scores.umap.shape == (n, 2)
    assert np.all((scores.cnn_score >= 0) & (scores.cnn_score <= 1))
    confident = ~scores.decided_by_svm
    np.testing.assert_array_equal(scores.real[confident], scores.cnn_score[confident] >= high)
    np.testing.assert_array_equal(scores.real[~confident], scores.svm_score[~confident] > 0)
    np.testing.assert_array_equal(
        scores.decided_by_svm, (scores.cnn_score >= low) & (scores.cnn_score < high)
    )


def test_product_and_cropped_cutouts_score_identically(tiny_bundle, tiny_data):
    scorer = Scorer(tiny_bundle)
    product = tiny_data.im_sum[:16]
    full, cropped = scorer.score(product), scorer.score(product[:, :, 34:66])
    np.testing.assert_array_equal(full.cnn_score, cropped.cnn_score)
    np.testing.assert_array_equal(full.umap, cropped.umap)


def test_training_and_serving_paths_give_identical_model_input(tiny_file, tiny_bundle):
    """One raw cutout: HDF5 -> dataset -> split -> prepare, versus JSON bytes -> codec -> Scorer."""
    train, _ = split(read_labelled(tiny_file), seed=0)
    training_input = prepare(train.im_sum[:5], tiny_bundle.normalization)
    scorer = Scorer(tiny_bundle)
    for row in range(5):
        request = json.dumps({"detectid": 1, "cutout": train.im_sum[row].tolist()}).encode()
        detection = codec.decode_single(request)
        serving_input = scorer.model_input(detection.cutout[None])
        np.testing.assert_array_equal(training_input[row : row + 1], serving_input)
