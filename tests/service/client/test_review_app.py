"""The review app through Flask's test client: pages, labelling, queue, persistence, refusals.

Reviewers sign in by the name prompt and post with their session token (tests/service/client/
reviewing.py); what forged requests get is in test_review_security.py.
"""

import re
import shutil
import sqlite3
from pathlib import Path

import h5py
import numpy as np
import pytest

from service.cli import main
from service.client.catalogue import write_table
from service.client.review.app import Review, create_app
from service.client.review.model import heldout_histogram
from service.client.review.night import ReviewError, read_catalogue
from service.client.suggest import Thresholds, rank
from tests.service.client.conftest import MODELS
from tests.service.client.reviewing import Reviewer, csrf_of


@pytest.fixture(scope="module")
def shared(night_journal, night_file, tmp_path_factory) -> Review:
    """One loaded review for the tests that only read."""
    db = tmp_path_factory.mktemp("db") / "review.sqlite"
    return Review.load(night_journal, night_file, db, MODELS)


@pytest.fixture
def fresh(night_journal, night_file, tmp_path) -> Review:
    """A review with an empty database of its own."""
    return Review.load(night_journal, night_file, tmp_path / "review.sqlite", MODELS)


def shown(page: bytes) -> int:
    return int(re.search(rb'id="detectid">(\d+)<', page).group(1))


def votes_in(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT detectid, reviewer, vis_class, at FROM votes ORDER BY at"
        ).fetchall()


def audits_in(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT reviewer, model_version, remote_addr FROM votes ORDER BY at"
        ).fetchall()


def test_summary_page_shows_the_night_and_its_plots(shared):
    client = create_app(shared).test_client()
    page = client.get("/")
    assert page.status_code == 200
    assert f"{len(shared.night.catalogue)} scored detections".encode() in page.data
    for name in ("decisions", "scores", "umap", "flags", "wavelength"):
        assert f'src="/plot/{name}.png"'.encode() in page.data
        picture = client.get(f"/plot/{name}.png")
        assert picture.mimetype == "image/png" and picture.data.startswith(b"\x89PNG")
    assert client.get("/plot/nothing.png").status_code == 404


def test_queue_asks_the_name_once_and_keeps_it_in_the_session(shared):
    client = create_app(shared).test_client()
    prompt = client.get("/queue?reviewer=grace").text
    assert 'name="reviewer"' in prompt and 'value="grace"' in prompt  # the URL only fills it in
    assert b'id="reviewer">' not in client.get("/queue?reviewer=grace").data
    csrf = csrf_of(prompt)
    answer = client.post("/reviewer", data={"reviewer": "  ada  ", "filters": "", "csrf": csrf})
    assert answer.status_code == 303
    page = client.get("/queue").text
    assert 'id="reviewer">ada<' in page
    assert csrf_of(page) != csrf  # signing in starts a new session, with a new token
    assert b'id="reviewer">ada<' in client.get("/?reviewer=grace").data  # the URL sets nothing
    bad = client.post("/reviewer", data={"reviewer": "<script>", "csrf": csrf_of(page)})
    assert bad.status_code == 400
    again = client.post("/reviewer", data={"reviewer": "grace", "csrf": csrf_of(page)})
    assert again.status_code == 303  # the name can be changed, from the app's own form
    assert b'id="reviewer">grace<' in client.get("/queue").data


def test_queue_serves_detections_in_the_suggest_order(fresh):
    catalogue, model = fresh.night.catalogue, fresh.model
    order = rank(catalogue, Thresholds(model.low, model.high, model.cnn_alone)).order
    client = Reviewer(create_app(fresh), "order")
    served = []
    for _ in range(3):
        served.append(shown(client.get("/queue").data))
        client.post("/vote", data={"detectid": served[-1], "label": "5"})
    assert served == catalogue.detectid[order[:3]].tolist()


def test_keys_label_skip_undo_and_each_vote_is_stored_at_once(fresh):
    client = Reviewer(create_app(fresh), "ann")
    db = fresh.store.path
    seen = []
    for label in ("4", "a", "p", "s", "0"):
        detectid = shown(client.get("/queue").data)
        seen.append(detectid)
        answer = client.post("/vote", data={"detectid": detectid, "label": label, "filters": ""})
        assert answer.status_code == 303 and answer.location.startswith("/queue")
    assert len(set(seen)) == 5  # each label moves to the next detection
    stored = votes_in(db)
    assert [(d, r, c) for d, r, c, _ in stored] == [
        (seen[0], "ann", 4),
        (seen[1], "ann", -2),
        (seen[2], "ann", -1),
        (seen[4], "ann", 0),
    ]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT.*\+00:00", at) for *_, at in stored)
    version = fresh.night.catalogue.model_version
    assert audits_in(db) == [("ann", version, "127.0.0.1")] * 4  # the test client's address
    undone = client.post("/undo", data={"filters": ""})
    assert undone.location == f"/detection/{seen[4]}"
    assert [d for d, *_ in votes_in(db)] == seen[:3]
    client.post("/vote", data={"detectid": seen[1], "label": "5"})  # replaces ann's own vote
    assert [(d, c) for d, _, c, _ in votes_in(db)][-1] == (seen[1], 5)
    assert len(votes_in(db)) == 3
    client.post("/undo")
    assert dict((d, c) for d, _, c, _ in votes_in(db))[seen[1]] == -2  # the earlier vote is back
    assert client.post("/vote", data={"detectid": seen[0], "label": "9"}).status_code == 400
    assert client.post("/vote", data={"detectid": 1, "label": "4"}).status_code == 404
    assert client.post("/vote", data={"detectid": "x", "label": "4"}).status_code == 400


def test_a_reload_shows_the_same_detection_and_a_restart_keeps_every_vote(
    fresh, night_journal, night_file
):
    client = Reviewer(create_app(fresh), "kim")
    first = shown(client.get("/queue").data)
    assert shown(client.get("/queue").data) == first
    client.post("/vote", data={"detectid": first, "label": "3"})
    fresh.night.close()
    again = Review.load(night_journal, night_file, fresh.store.path, MODELS)  # a new server
    assert [(v.detectid, v.vis_class) for v in again.store.votes()] == [(first, 3)]
    client.client.application = create_app(again)  # the same browser, its session kept
    page = client.get("/queue").text
    assert 'id="reviewer">kim<' in page and shown(page.encode()) != first


@pytest.mark.parametrize("overlap", [1, 2])
def test_reviewers_at_once_get_different_detections_or_the_same_with_overlap(
    night_journal, night_file, tmp_path, overlap
):
    review = Review.load(night_journal, night_file, tmp_path / "r.sqlite", MODELS, overlap)
    app = create_app(review)
    ann, bob = Reviewer(app, "ann"), Reviewer(app, "bob")
    ann_first = shown(ann.get("/queue").data)
    bob_first = shown(bob.get("/queue").data)
    assert (ann_first == bob_first) == (overlap == 2)
    ann.post("/vote", data={"detectid": ann_first, "label": "5"})
    cat = Reviewer(create_app(review), "cat")
    cat_first = shown(cat.get("/queue").data)
    assert cat_first != ann_first  # it has its votes (overlap 1) or is held by bob (overlap 2)


def test_filters_choose_what_the_queue_offers(shared):
    client = Reviewer(create_app(shared), "filt")
    catalogue = shared.night.catalogue
    page = client.get("/queue?decision=real&stage=cnn&min_score=0.9")
    index = shared.night.index_of(shown(page.data))
    assert catalogue.decision[index] == "real" and catalogue.stage[index] == "cnn"
    assert catalogue.cnn_score[index] >= 0.9
    flag = catalogue.flag_names[0]
    page = client.get(f"/queue?flag={flag}")
    assert flag in catalogue.flags_of(shared.night.index_of(shown(page.data)))
    empty = client.get("/queue?min_score=2")
    assert b'id="queue-empty"' in empty.data


def test_a_detection_page_shows_cutouts_fibers_and_its_place(shared):
    client = create_app(shared).test_client()
    detectid = int(shared.night.catalogue.detectid[0])
    page = client.get(f"/detection/{detectid}")
    for kind in ("sum32", "sum100", "fiber0", "fiber3"):
        assert f"/cutout/{detectid}/{kind}.png".encode() in page.data
        assert client.get(f"/cutout/{detectid}/{kind}.png").data.startswith(b"\x89PNG")
    assert b'class="star" style="left: ' in page.data
    assert client.get(f"/cutout/{detectid}/fiber4.png").status_code == 404
    missing = client.get("/detection/12345")
    assert missing.status_code == 404
    assert f"no detection 12345 in {shared.night.catalogue.path}".encode() in missing.data


def test_fits_and_ecsv_catalogues_read_like_the_journal(night_journal, night_file, tmp_path):
    journal = read_catalogue(night_journal)
    with h5py.File(night_file) as handle:
        order = handle["FiberImages"]["detectid"].astype(np.int64)
    for suffix in (".fits", ".ecsv"):
        table = tmp_path / f"night{suffix}"
        write_table(night_journal, table, order, {"source": str(night_file)})
        read = read_catalogue(table)
        np.testing.assert_array_equal(read.detectid, journal.detectid)
        np.testing.assert_array_equal(read.cnn_score, journal.cnn_score)
        np.testing.assert_array_equal(read.flags, journal.flags)
        assert read.flag_names == journal.flag_names


def review_error(catalogue: Path, data: Path, db: Path) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(["review", str(catalogue), "--data", str(data), "--db", str(db)])
    message = str(stopped.value)
    assert "\n" not in message and message.startswith("linescore review: error: ")
    return message


def test_bad_inputs_get_one_line_naming_the_file(night_journal, night_file, tmp_path):
    db = tmp_path / "r.sqlite"
    bad = tmp_path / "bad.csv"
    bad.write_text("detectid,score\n1,0.5\n")
    assert f"{bad}: not a score-file journal" in review_error(bad, night_file, db)
    lines = night_journal.read_text().splitlines()
    other = tmp_path / "other.csv"
    other.write_text(
        "\n".join([lines[0], *(re.sub(r"^\d+", lambda m: "9" + m[0], line) for line in lines[1:])])
        + "\n"
    )
    assert f"{other}: none of its detectids is in {night_file}" in review_error(
        other, night_file, db
    )
    short = tmp_path / "short.h5"
    with h5py.File(night_file) as source, h5py.File(short, "w") as target:
        target["FiberImages"] = source["FiberImages"][:-1]
    assert f"{short}: has no detection" in review_error(night_journal, short, db)
    assert f"{tmp_path / 'none.csv'}: no such file" in review_error(
        tmp_path / "none.csv", night_file, db
    )
    torn = tmp_path / "torn.csv"
    torn.write_text(night_journal.read_text().replace(",real,", ",maybe,", 1))
    assert f"{torn}: a decision or stage" in review_error(torn, night_file, db)


def test_a_database_of_another_night_is_refused(night_journal, night_file, tmp_path):
    """The night is the FiberImages file (every detectid and its name): a part of the same
    file's catalogue is the same night, another file is not."""
    db = tmp_path / "r.sqlite"
    Review.load(night_journal, night_file, db, MODELS).night.close()
    lines = night_journal.read_text().splitlines()
    fewer = tmp_path / "fewer.csv"
    fewer.write_text("\n".join(lines[:-3]) + "\n")
    Review.load(fewer, night_file, db, MODELS).night.close()
    other = tmp_path / "other-night.h5"
    shutil.copyfile(night_file, other)
    with pytest.raises(ReviewError, match=f"^{re.escape(str(db))}: belongs to another night"):
        Review.load(night_journal, other, db, MODELS)
    assert f"{db}: belongs to another night" in review_error(night_journal, other, db)


def test_the_reference_scores_are_the_heldout_set_when_the_model_records_them():
    counts = [30, 10, 0, 60]
    edges = [0.0, 0.25, 0.5, 0.75, 1.0]
    recorded = heldout_histogram({"cnn_score_histogram": {"edges": edges, "counts": counts}})
    assert recorded is not None
    assert np.allclose(recorded[1], np.array(counts) / 100 / 0.25)
    assert np.isclose(np.sum(recorded[1] * np.diff(recorded[0])), 1.0)
    assert heldout_histogram({}) is None  # 2.0.0: the calibration split stands in
