"""``linescore labels suggest``: every cluster of the map early, the unsure first within each."""

import csv
from dataclasses import replace

import numpy as np
import pytest

from service.cli import main
from service.client.review.app import Review
from service.client.review.night import read_catalogue
from service.client.suggest import SUGGEST_COLUMNS, Thresholds, interleave, rank, uncertainty
from tests.service.client.conftest import MODELS

THRESHOLDS = Thresholds(0.3, 0.7, 0.5)


def synthetic_catalogue(night_journal, n_per_blob=300, seed=0):
    """The night's catalogue reshaped: three well-separated blobs of the map, one confidently
    real (scores near 1), one confidently fake, one unsure (scores near the threshold)."""
    catalogue = read_catalogue(night_journal)
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    umap = np.concatenate([c + rng.normal(0, 1, (n_per_blob, 2)) for c in centres])
    score = np.concatenate(
        [
            rng.uniform(0.97, 1.0, n_per_blob),
            rng.uniform(0.0, 0.03, n_per_blob),
            rng.uniform(0.4, 0.6, n_per_blob),
        ]
    )
    n = len(score)
    return replace(
        catalogue,
        detectid=np.arange(n, dtype=np.int64) + 1,
        cnn_score=score,
        umap=umap,
        svm_score=np.zeros(n),
        novelty=np.zeros(n),
        decision=np.where(score >= 0.5, "real", "fake"),
        stage=np.full(n, "cnn"),
        flags=np.zeros((n, len(catalogue.flag_names)), dtype=bool),
    )


def test_uncertainty_is_one_at_the_threshold_and_zero_at_the_ends():
    assert uncertainty(np.array([0.0, 0.25, 0.5, 0.75, 1.0]), 0.5).tolist() == [0, 0.5, 1, 0.5, 0]
    assert uncertainty(np.array([0.2, 0.6]), 0.2).tolist() == pytest.approx([1.0, 0.5])


def test_every_cluster_gets_labels_early_and_the_unsure_one_gets_most(night_journal):
    catalogue = synthetic_catalogue(night_journal)
    ranking = rank(catalogue, THRESHOLDS)
    order = ranking.order
    assert sorted(order.tolist()) == list(range(len(catalogue)))  # each detection once
    blob = order // 300
    assert set(blob[:30].tolist()) == {0, 1, 2}  # the confident blobs are not starved
    first_hundred = np.bincount(blob[:100], minlength=3)
    assert first_hundred[2] > first_hundred[0] and first_hundred[2] > first_hundred[1]
    for cluster in np.unique(ranking.cluster):  # the most uncertain first, then alternating
        inside = order[ranking.cluster[order] == cluster]
        most_uncertain = inside[np.argsort(-ranking.uncertainty[inside], kind="stable")]
        assert inside[0] == most_uncertain[0]
        assert set(most_uncertain[:10]) <= set(inside[:20])  # every other pick is one of them


def test_interleave_alternates_and_keeps_each_item_once():
    assert interleave(np.array([1, 2, 3, 4]), np.array([3, 1, 4, 2])).tolist() == [1, 3, 2, 4]


def test_uncertainty_alone_would_starve_the_confident_blobs(night_journal):
    """What the quota buys: ordered by uncertainty only, the first 100 are all one blob."""
    catalogue = synthetic_catalogue(night_journal)
    by_uncertainty = np.argsort(-uncertainty(catalogue.cnn_score, 0.5), kind="stable")
    assert set((by_uncertainty[:100] // 300).tolist()) == {2}


def test_the_command_writes_the_queue_order_and_skips_voted(night_journal, night_file, tmp_path):
    db = tmp_path / "r.sqlite"
    review = Review.load(night_journal, night_file, db, MODELS)
    order = review.queue.order
    ids = review.night.catalogue.detectid
    voted = int(ids[order[0]])
    review.store.vote(voted, "ann", 5)
    review.night.close()
    out = tmp_path / "ask.csv"
    argv = ["labels", "suggest", str(night_journal), "--data", str(night_file), "--n", "10"]
    assert main([*argv, "--out", str(out), "--db", str(db)]) == 0
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == SUGGEST_COLUMNS and SUGGEST_COLUMNS[0] == "detectid"
    assert [int(r["detectid"]) for r in rows] == ids[order[1:11]].tolist()
    assert [int(r["rank"]) for r in rows] == list(range(1, 11))
    assert all(r["why"] for r in rows)


def test_the_command_refuses_another_nights_database(night_journal, night_file, tmp_path):
    other = tmp_path / "other.h5"
    other.write_bytes(night_file.read_bytes())
    db = tmp_path / "r.sqlite"
    Review.load(night_journal, other, db, MODELS).night.close()
    argv = ["labels", "suggest", str(night_journal), "--data", str(night_file), "--n", "5"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path / "ask.csv"), "--db", str(db)])
    assert str(exit_info.value) == (
        f"linescore labels: error: {db}: a review database of another night, not night.h5"
    )
