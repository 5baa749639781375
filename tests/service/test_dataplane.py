import numpy as np

from service.codec import Detection
from service.errors import InvalidInputError
from service.pipeline import Scorer


def test_one_result_per_item_in_order(tiny_runtime, tiny_data):
    plane = tiny_runtime.plane
    cutouts = tiny_data.im_sum[:6, :, 34:66]
    detections = [Detection(i, cutouts[i], 4500.0) for i in range(6)]
    detections[2] = Detection("bad", error=InvalidInputError("broken", pointer="/detections/2"))
    outcome = plane.score(detections)
    assert [r["detectid"] for r in outcome.results] == [0, 1, "bad", 3, 4, 5]
    assert outcome.results[2]["error"]["index"] == 2
    assert outcome.results[2]["error"]["status"] == 422
    assert outcome.scored == 5
    assert sum(outcome.decisions.values()) == 5
    assert set(outcome.timings) == {"preprocess", "cnn", "umap", "svm"}
    direct = Scorer(plane.scorer.bundle).score(np.delete(cutouts, 2, axis=0))
    scored = [r for r in outcome.results if "error" not in r]
    np.testing.assert_allclose([r["cnn_score"] for r in scored], direct.cnn_score, rtol=1e-6)


def test_all_invalid_items_skip_the_model(tiny_runtime):
    error = InvalidInputError("broken", pointer="/detections/0")
    outcome = tiny_runtime.plane.score([Detection(None, error=error)])
    assert outcome.scored == 0 and outcome.results[0]["error"]["pointer"] == "/detections/0"
