"""Consensus, agreement and export: the Labels file trains a tiny model."""

import json
import sqlite3

import h5py
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from service.cli import main
from service.client.labels import consensus, rule
from service.client.review.agreement import measure
from service.client.review.app import Review, create_app
from service.client.review.night import ReviewError
from service.client.review.votes import Vote, VoteStore
from tests.service.client.conftest import MODELS
from training.cli import main as training_cli
from training.dataset import read_labelled


def votes(*triples: tuple[int, str, int]) -> list[Vote]:
    return [Vote(detectid, who, vis_class, "t") for detectid, who, vis_class in triples]


def test_consensus_is_a_strict_majority_with_enough_votes():
    cast = votes((1, "a", 5), (1, "b", 5), (1, "c", 4), (2, "a", 0), (2, "b", -2), (3, "a", -1))
    agreed = consensus(cast)
    assert agreed.detectid.tolist() == [1, 3]  # 2 is a tie
    assert agreed.vis_class.tolist() == [5, -1]
    assert agreed.votes[0].tolist() == [0, 0, 0, 0, 0, 0, 1, 2]
    assert consensus(cast, min_votes=2).detectid.tolist() == [1]
    assert "ties" in rule(2) and "fewer than 2 vote(s)" in rule(2)


def test_agreement_uses_the_library_statistics(night_journal, night_file, tmp_path):
    review = Review.load(night_journal, night_file, tmp_path / "r.sqlite", MODELS)
    ids = review.night.catalogue.detectid[:8].tolist()
    ann = [5, 4, 0, 1, 3, -2, -1, 2]
    bob = [5, 3, 0, 2, 3, -2, -2, 2]
    cast = votes(*zip(ids, ["ann"] * 8, ann, strict=True), *zip(ids, ["bob"] * 8, bob, strict=True))
    measured = measure(cast, review.night, review.model.heldout_class_accuracy)
    (pair,) = measured.pairs
    graded = [i for i in range(8) if ann[i] >= 0 and bob[i] >= 0]
    expected = cohen_kappa_score(
        [ann[i] for i in graded], [bob[i] for i in graded], labels=range(6), weights="quadratic"
    )
    assert (pair.both, pair.graded) == (8, 6) and pair.kappa == pytest.approx(expected)
    assert (pair.artifact_cases, pair.artifact_agreement) == (2, 0.5)
    # Krippendorff's ordinal alpha, by hand. Artifact votes (-2, -1) are missing, so the units
    # are the six graded pairs (5,5) (4,3) (0,0) (1,2) (3,3) (2,2): value totals n_0..n_5 =
    # 2, 1, 3, 3, 1, 2 (n = 12). Ordinal distance d(c, k) = (n_c + ... + n_k - (n_c + n_k) / 2)^2;
    # only (4,3) and (1,2) disagree, each d = ((1 + 3) / 2)^2 = 4, counted both ways: the
    # observed sum is 16. Summed over all value pairs, n_c n_k d(c, k) = 3312, so
    # alpha = 1 - (n - 1) * 16 / 3312 = 1 - 176 / 3312 = 196 / 207.
    assert measured.alpha == pytest.approx(196 / 207, rel=1e-12)
    assert measured.by_class.sum() == 16
    per_class = {cls: (n, acc) for cls, n, acc, _ in measured.per_class}
    assert per_class[5][0] == 1 and per_class[-1][0] == 0  # -1 vs -2 is a tie: left out
    decision = review.night.catalogue.decision[0]
    assert per_class[5][1] == (1.0 if decision == "real" else 0.0)
    page = create_app(review)
    review.store.vote(ids[0], "ann", 5)
    assert page.test_client().get("/agreement").status_code == 200


def test_export_writes_labels_that_training_reads_and_trains_on(tiny_file, tmp_path):
    """Votes on the tiny labelled file (true classes, five ties) retrain a tiny model, on the
    exported labels: its images file has no Labels table of its own."""
    with h5py.File(tiny_file) as handle:
        truth = handle["Labels"][...]
    db = tmp_path / "r.sqlite"
    store = VoteStore.open(
        db, {"fingerprint": "tiny", "file": tiny_file.name, "model_version": "0.0.1"}
    )
    for detectid, vis_class in zip(
        truth["detectid"].tolist(), truth["vis_class"].tolist(), strict=True
    ):
        store.vote(detectid, "ann", vis_class)
    tied = truth["detectid"][:5]
    for detectid, vis_class in zip(tied.tolist(), truth["vis_class"][:5].tolist(), strict=True):
        store.vote(detectid, "bob", 5 if vis_class != 5 else 0)  # against ann on each: a tie
    for detectid, vis_class in zip(
        truth["detectid"][5:8].tolist(), truth["vis_class"][5:8].tolist(), strict=True
    ):
        store.vote(detectid, "bob", vis_class)  # with ann: two votes
    out = tmp_path / "labels.h5"
    assert main(["labels", "export", "--db", str(db), "--out", str(out)]) == 0
    with h5py.File(out) as handle:
        table = handle["Labels"]
        assert "majority of votes" in table.attrs["consensus_rule"]
        assert table.attrs["classes"].tolist() == list(range(-2, 6))
        assert handle.attrs["reviewers"] == "ann,bob"
        assert handle.attrs["vote_model_versions"] == "0.0.1"  # what the votes were cast against
        assert int((table["n_votes"] == 2).sum()) == 3
        exported = table[...]
    kept = ~np.isin(truth["detectid"], tied)
    assert sorted(exported["detectid"].tolist()) == sorted(truth["detectid"][kept].tolist())
    images_only = tmp_path / "images.h5"  # the same cutouts, no Labels table
    with h5py.File(tiny_file) as source, h5py.File(images_only, "w") as target:
        source.copy("FiberImages", target)
    labelled = read_labelled(images_only, out)
    assert len(labelled) == len(truth) - 5
    np.testing.assert_array_equal(labelled.vis_class, truth["vis_class"][kept])
    model = tmp_path / "model"
    arguments = ["train", "--data", str(images_only), "--labels", str(out), "--out", str(model)]
    assert training_cli([*arguments, "--version", "0.0.9", "--epochs", "1"]) == 0
    trained_on = json.loads((model / "manifest.json").read_text())["training"]["data"]
    classes, counts = np.unique(exported["vis_class"], return_counts=True)
    assert trained_on["detections"] == len(exported) == len(truth) - 5
    assert trained_on["class_counts"] == {
        str(int(c)): int(n) for c, n in zip(classes, counts, strict=True)
    }


def test_export_refuses_a_database_without_consensus(tmp_path):
    db = tmp_path / "r.sqlite"
    VoteStore.open(db, {"fingerprint": "x", "file": "x.h5"})
    with pytest.raises(SystemExit, match=f"error: {db}: no detection has a consensus label"):
        main(["labels", "export", "--db", str(db), "--out", str(tmp_path / "l.h5")])
    with pytest.raises(SystemExit, match=f"error: {tmp_path / 'no.sqlite'}: no such file"):
        main(["labels", "export", "--db", str(tmp_path / "no.sqlite"), "--out", "l.h5"])


def test_a_database_of_the_older_schema_is_refused_by_review_and_export(
    night_journal, night_file, tmp_path
):
    """Schema 1 kept no model version and no address per vote: nothing is guessed for them."""
    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as old:
        old.executescript(
            "CREATE TABLE night (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE votes (detectid INTEGER NOT NULL, reviewer TEXT NOT NULL, "
            "vis_class INTEGER NOT NULL, at TEXT NOT NULL, PRIMARY KEY (detectid, reviewer));"
            "INSERT INTO votes VALUES (1, 'ada', 5, '2025-01-01T00:00:00+00:00');"
        )
    with pytest.raises(SystemExit) as stopped:
        main(["labels", "export", "--db", str(db), "--out", str(tmp_path / "l.h5")])
    message = str(stopped.value)
    assert "\n" not in message
    assert message.startswith(
        f"linescore labels: error: {db}: written by an older linescore review (schema 1; this one "
        "reads schema 2)"
    )
    assert not (tmp_path / "l.h5").exists()
    with pytest.raises(ReviewError, match=r"written by an older linescore review \(schema 1"):
        Review.load(night_journal, night_file, db, MODELS)
    with sqlite3.connect(db) as newer:
        newer.execute("PRAGMA user_version = 3")
    with pytest.raises(ReviewError, match=r"written by a newer linescore review \(schema 3"):
        VoteStore.existing(db)
