"""Forged votes land nowhere: identity, session tokens, origins, private links, the audit.

Through Flask's test client; the same forgeries against the real server are in
test_review_cli.py, in real Chromium in test_review_browser.py, and shared use under gunicorn in
test_review_shared.py.
"""

import hashlib
import re
import sqlite3
from pathlib import Path

import h5py
import pytest

from service.cli import main
from service.client.review import access
from service.client.review.app import Review, create_app
from service.client.review.night import ReviewError
from tests.service.client.conftest import MODELS
from tests.service.client.reviewing import Reviewer, csrf_of

EVIL = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}


@pytest.fixture
def review(night_journal, night_file, tmp_path) -> Review:
    loaded = Review.load(night_journal, night_file, tmp_path / "review.sqlite", MODELS)
    yield loaded
    loaded.night.close()


def rows(db: Path, query: str) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute(query).fetchall()


def exported(db: Path, out: Path) -> tuple[list[int], str]:
    """The detectids of the Labels file ``labels export`` writes, and its reviewers."""
    assert main(["labels", "export", "--db", str(db), "--out", str(out)]) == 0
    with h5py.File(out) as handle:
        return handle["Labels"]["detectid"].tolist(), handle.attrs["reviewers"]


def test_the_forged_requests_of_the_issue_land_no_vote(review, tmp_path):
    """Issue 17's measurement: both forgeries were answered 303 and their votes exported."""
    app = create_app(review)
    ids = review.night.catalogue.detectid.tolist()
    ada = Reviewer(app, "ada")
    assert ada.post("/vote", {"detectid": ids[0], "label": "4"}).status_code == 303
    stranger = app.test_client()  # no cookie
    cross_site = stranger.post(
        "/vote?reviewer=mallory0", data={"detectid": ids[1], "label": "5"}, headers=EVIL
    )
    scripted = stranger.post("/vote?reviewer=mallory1", data={"detectid": ids[2], "label": "5"})
    assert (cross_site.status_code, scripted.status_code) == (403, 403)
    assert "another site" in cross_site.text and "session token" in scripted.text
    db = review.store.path
    assert rows(db, "SELECT detectid, reviewer FROM votes") == [(ids[0], "ada")]
    assert exported(db, tmp_path / "labels.h5") == ([ids[0]], "ada")


@pytest.mark.parametrize(
    "headers, token",
    [
        (EVIL, True),  # another site, even were the token known
        ({"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:9999"}, True),  # a port
        ({"Origin": "null"}, True),  # a sandboxed frame
        ({}, False),  # the reviewer's cookie rides along, but no token
        ({"Sec-Fetch-Site": "same-origin"}, False),
    ],
)
def test_a_signed_in_reviewers_browser_cannot_be_made_to_vote(review, headers, token):
    app = create_app(review)
    ada = Reviewer(app, "ada")
    detectid = int(review.night.catalogue.detectid[0])
    ada.post("/vote", {"detectid": detectid, "label": "4"})
    data = {"detectid": detectid, "label": "0", **({"csrf": ada.csrf} if token else {})}
    assert ada.client.post("/vote", data=data, headers=headers).status_code == 403
    assert ada.client.post("/undo", data=data, headers=headers).status_code == 403
    renamed = {"reviewer": "mallory", **({"csrf": ada.csrf} if token else {})}
    assert ada.client.post("/reviewer", data=renamed, headers=headers).status_code == 403
    assert rows(review.store.path, "SELECT detectid, reviewer, vis_class FROM votes") == [
        (detectid, "ada", 4)
    ]
    assert b'id="reviewer">ada<' in ada.get("/queue").data
    assert ada.post("/vote", {"detectid": detectid, "label": "0"}).status_code == 303  # still can


def test_a_page_reached_by_another_name_for_this_machine_is_refused(review):
    """DNS rebinding: evil.example resolving to 127.0.0.1 would be its own origin."""
    rebound = create_app(review).test_client()
    assert rebound.get("/queue", headers={"Host": "evil.example:8090"}).status_code == 403
    assert create_app(review).test_client().get("/queue").status_code == 200  # Host: localhost


def test_the_session_cookie_is_strict_and_http_only_and_pages_are_not_framed(review):
    client = create_app(review).test_client()
    prompt = client.get("/queue")
    assert prompt.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    answer = client.post("/reviewer", data={"reviewer": "ada", "csrf": csrf_of(prompt.text)})
    (cookie,) = answer.headers.getlist("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    key = cookie.split(";")[0].split("=", 1)[1]
    stored = rows(review.store.path, "SELECT key_sha256, reviewer FROM sessions")
    assert stored == [(hashlib.sha256(key.encode()).hexdigest(), "ada")]  # only its hash


def test_shared_reviewers_come_in_by_their_private_links_only(review):
    app = create_app(review, shared=True)
    issued = access.issue_links(review.store, ["ada", "bob"])
    assert sorted(issued.tokens) == ["ada", "bob"] and not issued.kept and not issued.revoked
    stranger = app.test_client()
    refused = stranger.get("/")
    assert refused.status_code == 401 and "private link" in refused.text
    assert review.night.path.name not in refused.text  # nothing of the night shown
    assert stranger.get("/plot/scores.png").status_code == 401
    assert stranger.get("/access/not-a-token").status_code == 401
    assert stranger.post("/vote", data={"detectid": 1, "label": "4"}).status_code == 401
    local = Reviewer(create_app(review), "ada")  # a name typed locally is no proof here
    local.client.application = app
    assert local.get("/queue").status_code == 401

    ada = app.test_client()
    page = ada.get(f"/access/{issued.tokens['ada']}")
    assert page.status_code == 200 and 'id="link-name">ada<' in page.text
    assert ada.get("/queue").status_code == 401  # fetching the link signs nobody in
    token = re.search(r'name="token" value="([^"]+)"', page.text)[1]
    assert ada.post("/access", data={"token": token}).status_code == 403  # no session token
    signed = ada.post("/access", data={"token": token, "csrf": csrf_of(page.text)})
    assert signed.status_code == 303
    queue = ada.get("/queue").text
    assert 'id="reviewer">ada<' in queue
    csrf = csrf_of(queue)
    detectid = int(re.search(r'id="detectid">(\d+)<', queue)[1])
    voted = ada.post("/vote", data={"detectid": detectid, "label": "5", "csrf": csrf})
    assert voted.status_code == 303
    renamed = ada.post("/reviewer", data={"reviewer": "eve", "csrf": csrf})
    assert renamed.status_code == 403  # the name comes from the link
    assert rows(review.store.path, "SELECT reviewer FROM votes") == [("ada",)]

    db = review.store.path
    contents = db.read_bytes() + db.with_name(db.name + "-wal").read_bytes()
    for token in issued.tokens.values():  # the links are kept only as hashes
        assert token.encode() not in contents
    hashes = rows(review.store.path, "SELECT name, token_sha256 FROM reviewers ORDER BY name")
    assert hashes == [(n, hashlib.sha256(issued.tokens[n].encode()).hexdigest()) for n, _ in hashes]

    assert access.revoke(review.store, "ada") == 2  # the link's and the typed name's
    assert ada.get("/queue").status_code == 401  # at once: the session has ended
    assert ada.get(f"/access/{issued.tokens['ada']}").status_code == 401
    late = ada.post("/vote", data={"detectid": detectid, "label": "0", "csrf": csrf})
    assert late.status_code == 401
    assert rows(review.store.path, "SELECT vis_class FROM votes") == [(5,)]

    again = access.issue_links(review.store, ["ada", "carl"])  # a restart, bob left the team
    assert sorted(again.tokens) == ["ada", "carl"] and again.revoked == ["bob"]
    assert access.reviewer_of_link(review.store, issued.tokens["bob"]) is None
    assert access.issue_links(review.store, ["ada", "carl"]).kept == ["ada", "carl"]


def test_the_team_file_is_checked_line_by_line(tmp_path):
    team = tmp_path / "team.txt"
    team.write_text("# the night shift\nada\n\n bob  # lead\n")
    assert access.read_team(team) == ["ada", "bob"]
    team.write_text("ada\nada\n")
    with pytest.raises(ReviewError, match=r"team.txt: line 2: ada is listed twice$"):
        access.read_team(team)
    team.write_text("<b>\n")
    with pytest.raises(ReviewError, match=r"team.txt: line 1: '<b>' is not a reviewer name"):
        access.read_team(team)
    team.write_text("# nobody\n")
    with pytest.raises(ReviewError, match=r"team.txt: no reviewer in it"):
        access.read_team(team)


def test_review_access_revokes_and_lists_from_the_command_line(review, capsys):
    access.issue_links(review.store, ["ada"])
    db = str(review.store.path)
    assert main(["review-access", "list", "--db", db]) == 0
    assert re.fullmatch(r"ada\tlink issued \S+\t0 session\(s\)\n", capsys.readouterr().out)
    assert main(["review-access", "revoke", "--db", db, "ada"]) == 0
    assert "ada's link and 0 session(s) no longer work" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"^linescore review-access: error: .*no reviewer 'eve'"):
        main(["review-access", "revoke", "--db", db, "eve"])


def test_a_link_from_another_site_is_bounced_so_the_strict_cookie_comes_along(review):
    """A Strict cookie stays home on a navigation from another site: answering as to a visitor
    without a session would give the browser a new cookie in place of the reviewer's."""
    navigation = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    navigation["Sec-Fetch-Dest"] = "document"
    client = create_app(review).test_client()
    bounced = client.get("/queue", headers=navigation)
    assert bounced.status_code == 200 and "location.replace" in bounced.text
    assert "Set-Cookie" not in bounced.headers
    forged = client.post("/vote", data={"detectid": 1, "label": "4"}, headers=navigation)
    assert forged.status_code == 403  # a form is never bounced
    assert 'name="reviewer"' in client.get("/queue", headers={"Sec-Fetch-Site": "none"}).text
