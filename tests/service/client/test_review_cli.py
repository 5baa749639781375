"""``linescore review`` as a person runs it: the installed entry point in a subprocess."""

import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import h5py
import requests

from tests.live import LINESCORE, free_port
from tests.service.client.conftest import MODELS
from tests.service.client.reviewing import named_session

ENV = {**os.environ, "LINESCORE_MODELS_ROOT": str(MODELS)}


def review_command(catalogue: Path, data: Path, db: Path, port: int, *more: str) -> list[str]:
    return [
        str(LINESCORE),
        "review",
        str(catalogue),
        "--data",
        str(data),
        "--db",
        str(db),
        "--port",
        str(port),
        *more,
    ]


def wait_until_answering(url: str, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, f"exited with {process.returncode}"
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered"
        time.sleep(0.1)


def test_serves_the_pages_stores_a_vote_and_stops_cleanly_on_sigterm(
    night_journal, night_file, tmp_path
):
    db, port = tmp_path / "review.sqlite", free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        review_command(night_journal, night_file, db, port),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_answering(f"{url}/", process)
        session, _ = named_session(url, "ada")  # keeps the session cookie, as a browser does
        with session:
            for page in ("/", "/queue", "/agreement"):
                assert session.get(url + page, timeout=10).status_code == 200
            shown = session.get(f"{url}/queue", timeout=10).text
            # the label form the keys press (static/review.js): its action and hidden fields
            form = re.search(r'<form method="post" action="([^"]+)"[^>]*id="label-form">', shown)
            fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', shown))
            assert "csrf" in fields  # the session token travels with the form
            answer = session.post(
                url + form[1], data={**fields, "label": "4"}, timeout=10, allow_redirects=False
            )
            assert answer.status_code == 303
            assert answer.headers["Server"].startswith("Werkzeug")  # local: one person
        # issue 17's forgeries: another site's form in a browser, and a script; neither has
        # a session, and the name in the URL counts for nothing
        forged = [
            requests.post(
                f"{url}/vote?reviewer=mallory0",
                data={"detectid": fields["detectid"], "label": "5"},
                headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
                timeout=10,
                allow_redirects=False,
            ),
            requests.post(
                f"{url}/vote?reviewer=mallory1",
                data={"detectid": fields["detectid"], "label": "5"},
                timeout=10,
                allow_redirects=False,
            ),
        ]
        assert [answer.status_code for answer in forged] == [403, 403]
        with sqlite3.connect(db) as votes:  # committed while the server still runs
            stored = votes.execute("SELECT detectid, reviewer, vis_class FROM votes").fetchall()
        assert stored == [(int(fields["detectid"]), "ada", 4)]
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert out.startswith("linescore review: ") and f"{url}/" in out
    labels = tmp_path / "labels.h5"
    exported = subprocess.run(
        [str(LINESCORE), "labels", "export", "--db", str(db), "--out", str(labels)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert exported.returncode == 0, exported.stderr
    with h5py.File(labels) as handle:
        assert handle["Labels"]["detectid"].tolist() == [int(fields["detectid"])]
        assert handle.attrs["reviewers"] == "ada"


def test_a_malformed_catalogue_exits_1_with_one_stderr_line_naming_it(night_file, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("detectid,score\n1,0.5\n")
    done = subprocess.run(
        review_command(bad, night_file, tmp_path / "review.sqlite", free_port()),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"linescore review: error: {bad}: not a score-file journal (its header differs)"
    ]


def test_a_network_host_without_per_reviewer_links_is_refused_before_serving(
    night_journal, night_file, tmp_path
):
    db = tmp_path / "review.sqlite"
    done = subprocess.run(
        review_command(night_journal, night_file, db, free_port(), "--host", "0.0.0.0"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("linescore review: error: --host 0.0.0.0 is not a loopback address")
    assert "--reviewers FILE" in line
    assert done.stdout == "" and not db.exists()  # nothing loaded, nothing served
