"""``linescore review --reviewers`` on a network host: gunicorn, private links, ten at once.

The installed entry point in a subprocess on ``--host 0.0.0.0``, reached over loopback. Ten
reviewers, each signed in by their own link, cast 200 votes each at the same time (a bounded
loop, real HTTP); the database, the agreement page and the export must count every one of the
2,000, and no request may fail (say, with "database is locked").
"""

import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import h5py
import pytest
import requests

from bench.review import write_night
from service.cli import main
from service.domain import VISUAL_CLASSES
from tests.live import LINESCORE, free_port
from tests.service.client.conftest import MODELS
from tests.service.client.reviewing import linked_session, links_in
from tests.service.client.test_review_cli import review_command, wait_until_answering

REVIEWERS = 10
VOTES_EACH = 200
KEYS = {-2: "a", -1: "p", **{c: str(c) for c in range(6)}}
ENV = {**os.environ, "LINESCORE_MODELS_ROOT": str(MODELS)}


@pytest.fixture(scope="module")
def big_night(tmp_path_factory) -> tuple[Path, Path]:
    """A synthetic night of VOTES_EACH detections (the 96 of ``night_file`` are too few)."""
    return write_night(tmp_path_factory.mktemp("big-night"), VOTES_EACH)


def printed_lines(process: subprocess.Popen, wanted: int, seconds: float = 60) -> str:
    """The first ``wanted`` lines the server prints (its address and one per reviewer)."""
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    while len(lines) < wanted:
        assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
        lines.append(process.stdout.readline())
    return "".join(lines)


def cast(url: str, link: str, number: int, detectids: list[int], answers: list) -> None:
    """One reviewer: VOTES_EACH votes, each its own request, every answer kept."""
    session, csrf = linked_session(url, link)
    with session:
        for detectid in detectids:
            # reviewer 0 disagrees everywhere, 9 to 1: every detection keeps a clear majority
            vis_class = VISUAL_CLASSES[(detectid + (number == 0)) % len(VISUAL_CLASSES)]
            answer = session.post(
                f"{url}/vote",
                data={"detectid": detectid, "label": KEYS[vis_class], "csrf": csrf},
                timeout=60,
                allow_redirects=False,
            )
            answers.append((answer.status_code, answer.text))


def test_ten_reviewers_at_once_under_gunicorn_lose_no_vote(big_night, tmp_path):
    journal, data = big_night
    db, port = tmp_path / "review.sqlite", free_port()
    url = f"http://127.0.0.1:{port}"
    names = [f"reviewer{n}" for n in range(REVIEWERS)]
    team = tmp_path / "team.txt"
    team.write_text("\n".join([*names, "eve"]) + "\n")
    command = review_command(journal, data, db, port, "--host", "0.0.0.0", "--reviewers", str(team))
    process = subprocess.Popen(
        command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        printed = printed_lines(process, 1 + len(names) + 1)
        assert re.match(rf"linescore review: {VOTES_EACH} detections of .* on http://", printed)
        links = links_in(printed)
        assert sorted(links) == sorted([*names, "eve"])
        wait_until_answering(f"{url}/access/{links['eve'].rsplit('/', 1)[1]}", process)

        stranger = requests.get(f"{url}/", timeout=10)
        assert stranger.status_code == 401 and "private link" in stranger.text
        assert stranger.headers["Server"] == "gunicorn"  # not the development server

        eve, eve_csrf = linked_session(url, links["eve"])
        revoked = subprocess.run(
            [str(LINESCORE), "review-access", "revoke", "--db", str(db), "eve"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert revoked.returncode == 0, revoked.stderr
        late = eve.post(f"{url}/vote", data={"detectid": 1, "label": "4", "csrf": eve_csrf})
        assert late.status_code == 401  # revoked while the server runs: at once
        eve.close()

        with h5py.File(data) as handle:
            detectids = handle["FiberImages"]["detectid"][:VOTES_EACH].tolist()
        answers: list[tuple[int, str]] = []
        started = time.monotonic()
        threads = [
            threading.Thread(target=cast, args=(url, links[name], n, detectids, answers))
            for n, name in enumerate(names)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.monotonic() - started
        failed = [(code, text[:200]) for code, text in answers if code != 303]
        assert len(answers) == REVIEWERS * VOTES_EACH and not failed, failed[:3]
        print(f"{len(answers)} votes by {REVIEWERS} reviewers at once in {seconds:.1f} s")

        with sqlite3.connect(db) as connection:
            counted = connection.execute(
                "SELECT COUNT(*), COUNT(DISTINCT reviewer), COUNT(DISTINCT remote_addr) FROM votes"
            ).fetchone()
        assert counted == (REVIEWERS * VOTES_EACH, REVIEWERS, 1)
        with linked_session(url, links["reviewer1"])[0] as reviewer:
            page = reviewer.get(f"{url}/agreement", timeout=60).text
        assert f"{REVIEWERS * VOTES_EACH} votes by {REVIEWERS} reviewer(s)" in page

        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "locked" not in err and "Traceback" not in err, err

    out = tmp_path / "labels.h5"
    assert main(["labels", "export", "--db", str(db), "--out", str(out)]) == 0
    with h5py.File(out) as handle:
        table = handle["Labels"][...]
        assert handle.attrs["reviewers"] == ",".join(sorted(names))
    assert len(table) == VOTES_EACH and int(table["n_votes"].sum()) == REVIEWERS * VOTES_EACH
