import numpy as np

from service.svm_fast import RbfDecision
from training.ensemble import make_svm


def test_equals_scikit_learns_decision_function(rng):
    points = rng.standard_normal((400, 2)) * [3.0, 0.5] + [1.0, -2.0]
    labels = points[:, 0] + np.sin(3 * points[:, 1]) + 0.3 * rng.standard_normal(400) > 1
    svm = make_svm(seed=0, c=3.0, gamma=2.0).fit(points, labels)
    queries = rng.standard_normal((250, 2)) * 4
    np.testing.assert_allclose(
        RbfDecision(svm)(queries), svm.decision_function(queries), rtol=1e-9, atol=1e-9
    )
    np.testing.assert_allclose(
        RbfDecision(svm)(queries[:1]), svm.decision_function(queries[:1]), rtol=1e-9, atol=1e-9
    )
