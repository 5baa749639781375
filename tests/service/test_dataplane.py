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
    assert set(outcome.timings) == {"preprocess", "cnn", "umap", "svm", "novelty"}
    direct = Scorer(plane.scorer.bundle).score(np.delete(cutouts, 2, axis=0))
    scored = [r for r in outcome.results if "error" not in r]
    np.testing.assert_allclose([r["cnn_score"] for r in scored], direct.cnn_score, rtol=1e-6)


def test_all_invalid_items_skip_the_model(tiny_runtime):
    error = InvalidInputError("broken", pointer="/detections/0")
    outcome = tiny_runtime.plane.score([Detection(None, error=error)])
    assert outcome.scored == 0 and outcome.results[0]["error"]["pointer"] == "/detections/0"
    assert outcome.novel == 0 and "novelty" not in outcome.results[0]


def test_novelty_is_the_scoring_cores_and_flags_novel_at_the_threshold(
    tiny_runtime, tiny_data, novel_cutout
):
    plane = tiny_runtime.plane
    ordinary = tiny_data.im_sum[tiny_data.vis_class == 5][:4, :, 34:66]
    cutouts = np.concatenate([ordinary[:2], novel_cutout[None], ordinary[2:]])
    outcome = plane.score([Detection(i, cutout, 4500.0) for i, cutout in enumerate(cutouts)])
    direct = Scorer(plane.scorer.bundle).score(cutouts)
    novelty = [r["novelty"] for r in outcome.results]
    assert all(isinstance(value, float) and 0.0 <= value <= 1.0 for value in novelty)
    np.testing.assert_allclose(novelty, direct.novelty, rtol=0, atol=1e-6)
    threshold = plane.scorer.bundle.manifest["novelty"]["threshold"]
    novel = [("novel" in r["flags"]) for r in outcome.results]
    assert novel == [value >= threshold for value in novelty] == direct.novel.tolist()
    assert novel == [False, False, True, False, False]  # the bright column, and only it
    assert outcome.novel == 1
    assert [r["decision"] for r in outcome.results] == np.where(
        direct.real, "real", "fake"
    ).tolist()
