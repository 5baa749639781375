"""``linescore score-file`` against real gunicorn: complete, resumable, retrying, and clear.

The module's server allows batches of at most ``MAX_BATCH``; a relay in front of it can refuse,
hold, cut or garble chosen requests.
"""

import csv
import io
import itertools
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import h5py
import numpy as np
import pytest
import requests
from astropy.table import Table

from service.cli import main
from service.client import scorefile
from service.client.catalogue import (
    JOURNAL_COLUMNS,
    CatalogueError,
    Journal,
    error_row,
    result_row,
    write_table,
)
from service.manifest import newest_model_dir
from tests.live import LINESCORE, ROOT, free_port, live_server
from training.dataset import write_dataset
from training.simulators.a import simulate

TOKEN = "night-shift-token"
BATCH = 16
MAX_BATCH = 100
PACKAGED_VERSION = newest_model_dir(ROOT / "models").name
BAD = 37  # this detection's cutout holds a NaN: the server answers an item error for it
FLOATS = ("cnn_score", "umap_x", "umap_y", "svm_score", "novelty")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    env = {"LINESCORE_API_TOKEN": TOKEN, "LINESCORE_MAX_BATCH": str(MAX_BATCH)}
    with live_server(tmp_path_factory.mktemp("server"), env=env) as live:
        yield live.url


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> Path:
    """About 150 simulated detections in the FiberImages layout, one with a NaN cutout."""
    path = tmp_path_factory.mktemp("night") / "night.h5"
    write_dataset(path, simulate({c: 19 for c in (-2, -1, 0, 1, 2, 3, 4, 5)}, seed=31))
    with h5py.File(path, "r+") as handle:
        row = handle["FiberImages"][BAD]
        row["im_sum"][2, 40] = np.nan
        handle["FiberImages"][BAD] = row
    return path


@pytest.fixture(scope="module")
def file_ids(night) -> list[int]:
    with h5py.File(night) as handle:
        return handle["FiberImages"]["detectid"].tolist()


def arguments(night: Path, url: str, out: Path, *extra: str) -> list[str]:
    args = ["score-file", str(night), "--url", url, "--out", str(out), "--token", TOKEN]
    return [*args, "--batch-size", str(BATCH), *extra]


def score_file(night: Path, url: str, out: Path, *extra: str) -> int:
    return main(arguments(night, url, out, *extra))


def journal_rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def clean(server, night, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "night.csv"
    assert score_file(night, server, out) == 0
    return out


def test_full_run_matches_the_batch_endpoint(server, night, clean, file_ids):
    rows = journal_rows(clean)
    assert [int(row["detectid"]) for row in rows] == file_ids
    with h5py.File(night) as handle:
        table = handle["FiberImages"][...]
    expected = []
    for start in range(0, len(table), BATCH):  # the same batches, posted by hand
        chunk = table[start : start + BATCH]
        body = io.BytesIO()
        np.savez(
            body, cutout=chunk["im_sum"], detectid=chunk["detectid"], wave=chunk["im_wave"][:, 50]
        )
        answer = requests.post(
            f"{server}/v1/score/batch",
            data=body.getvalue(),
            headers={"Content-Type": "application/x-npz", "Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        ).json()
        expected += [
            {**result, "model_version": answer["model_version"]} for result in answer["results"]
        ]
    for row, result in zip(rows, expected, strict=True):
        assert row["model_version"] == result["model_version"] == PACKAGED_VERSION
        if "error" in result:
            problem = result["error"]
            assert (row["error_status"], row["error_title"]) == (
                str(problem["status"]),
                problem["title"],
            )
            assert (row["error_detail"], row["error_pointer"]) == (
                problem["detail"],
                problem["pointer"],
            )
            assert row["cnn_score"] == row["decision"] == ""
            continue
        assert [float(row[name]) for name in FLOATS] == [
            result["cnn_score"],
            *result["umap"],
            result["svm_score"],
            result["novelty"],
        ]
        assert (row["decision"], row["stage"]) == (result["decision"], result["stage"])
        assert (row["flags"].split(";") if row["flags"] else []) == result["flags"]
        assert row["error_status"] == ""
    assert (
        rows[BAD]["error_status"] == "422"
        and rows[BAD]["error_pointer"] == f"/cutout/{BAD % BATCH}"
    )
    assert any(row["flags"] for row in rows)


@pytest.mark.parametrize("table_format", ["fits", "ecsv"])
def test_table_has_every_field_and_reads_back(
    clean, night, file_ids, tmp_path, table_format, capsys
):
    out = tmp_path / "night.csv"
    shutil.copy(clean, out)
    nobody = f"http://127.0.0.1:{free_port()}"  # a complete journal sends nothing
    assert score_file(night, nobody, out, "--table", table_format, "--retry-for", "1") == 0
    rows = journal_rows(clean)
    real = sum(row["decision"] == "real" for row in rows)
    counts = f"({real} real, {len(rows) - real - 1} fake, 1 errors)"
    assert f"complete: {len(rows)}/{len(rows)} detections {counts}" in capsys.readouterr().err
    table = Table.read(out.with_suffix(f".{table_format}"))
    assert table.colnames == list(JOURNAL_COLUMNS) and table["detectid"].tolist() == file_ids
    for name in JOURNAL_COLUMNS:  # masked (None) where the journal is empty; floats: same repr
        values = ["" if value is None else str(value) for value in table[name].tolist()]
        assert values == [row[name] for row in rows], name
    assert table["error_status"][BAD] == 422
    assert table.meta["source" if table_format == "ecsv" else "SOURCE"] == str(night)


def same_catalogue(out: Path, clean: Path) -> None:
    """Every detectid exactly once, with the clean run's values.

    Floats to 2e-5 only: UMAP and SVM values move in the last float32 digits when a detection
    is scored in a batch of other neighbours (BLAS blocking of the k-NN distances, which lose
    digits to cancellation: 6e-6 seen on this machine's CPU); decisions must not move.
    """
    rows, reference = journal_rows(out), {row["detectid"]: row for row in journal_rows(clean)}
    assert sorted(row["detectid"] for row in rows) == sorted(reference)
    for row in rows:
        expected = reference[row["detectid"]]
        for name in JOURNAL_COLUMNS:
            if name in FLOATS and row[name]:
                assert float(row[name]) == pytest.approx(float(expected[name]), rel=2e-5, abs=1e-9)
            else:
                assert row[name] == expected[name], name


class Relay(BaseHTTPRequestHandler):
    """Forwards each POST to the real server after ``delay``, or does what ``refuse(n)`` says
    for the n-th request: answer that status (a problem), or

    - "hold": forward it only when the relay closes (``holding`` is set when one waits),
    - "torn": send the answer's headers and only its first bytes (a worker killed meanwhile),
    - "html": 200 with a proxy's HTML page, "short": 200 with the last result missing,
    - "reversed": 200 with the results in reverse order, "unicode": 200 with non-ASCII texts.
    """

    upstream: ClassVar[str]
    delay: ClassVar[float]
    refuse: ClassVar[Callable[[int], int | str | None]]
    numbers: ClassVar[Iterator[int]]
    holding: ClassVar[threading.Event]
    released: ClassVar[threading.Event]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        action = type(self).refuse(next(self.numbers))
        if action == "hold":
            self.holding.set()
        self.released.wait(60 if action == "hold" else self.delay)
        if isinstance(action, int):
            problem = {"type": "about:blank", "title": "Refused", "status": action, "detail": "no"}
            self.reply(action, json.dumps(problem).encode())
            return
        reply = requests.post(
            self.upstream + self.path, data=body, headers=dict(self.headers), timeout=30
        )
        payload = reply.content
        if action == "torn":
            self.reply(reply.status_code, payload, cut=100)
            return
        if action == "html":
            self.reply(200, b"<html><h1>502 Bad Gateway</h1></html>", "text/html")
            return
        if action in ("short", "reversed", "unicode"):
            answer = json.loads(payload)
            if action == "short":
                answer["results"].pop()
            elif action == "reversed":
                answer["results"].reverse()
            else:
                answer["model_version"] += " \u03b2"
                for result in answer["results"]:
                    if "error" not in result:
                        result.update(stage=result["stage"] + "\u00e9", flags=["na\u00efve"])
            payload = json.dumps(answer).encode()
        self.reply(reply.status_code, payload)

    def reply(
        self, status: int, payload: bytes, media: str = "application/json", cut: int | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload[:cut])

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def relay(
    upstream: str,
    delay: float = 0.0,
    refuse: Callable[[int], int | str | None] = lambda n: None,
    holding: threading.Event | None = None,
) -> Iterator[str]:
    settings = {
        "upstream": upstream,
        "delay": delay,
        "refuse": staticmethod(refuse),
        "numbers": itertools.count(1),
        "holding": holding or threading.Event(),
        "released": threading.Event(),
    }
    handler = type("Handler", (Relay,), settings)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        settings["released"].set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_ctrl_c_saves_what_finished_and_a_rerun_completes(server, night, clean, tmp_path):
    out = tmp_path / "night.csv"
    with relay(server, delay=0.15) as slow:
        args = arguments(night, slow, out, "--concurrency", "1")
        process = subprocess.Popen([str(LINESCORE), *args], stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not (out.exists() and out.read_text().count("\n") > 1 + BATCH):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "unfinished" in stderr
    saved = len(journal_rows(out))
    assert 0 < saved < len(journal_rows(clean)) and saved % BATCH == 0
    assert score_file(night, server, out) == 0
    same_catalogue(out, clean)


def test_a_second_ctrl_c_drops_the_batch_in_flight_at_once(server, night, clean, tmp_path):
    out, holding = tmp_path / "night.csv", threading.Event()
    with relay(server, refuse=lambda n: None if n == 1 else "hold", holding=holding) as stuck:
        args = arguments(night, stuck, out, "--concurrency", "1")  # --timeout stays 60 s
        process = subprocess.Popen([str(LINESCORE), *args], stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not (holding.is_set() and out.exists() and out.read_text().count("\n") > BATCH):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        first = process.stderr.readline()
        assert "interrupted: saving the 1 batch(es) in flight (Ctrl-C again: drop them)" in first
        asked = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        waited = time.monotonic() - asked
    assert process.returncode == 130, stderr
    assert waited < 10, "the second Ctrl-C waited for the held POST"
    assert "dropped the 1 batch(es) in flight" in stderr and f"unfinished: {BATCH}/" in stderr
    assert len(journal_rows(out)) == BATCH
    assert score_file(night, server, out) == 0
    same_catalogue(out, clean)


def test_torn_last_line_is_dropped_and_scored_again(server, night, clean, tmp_path, capsys):
    out = tmp_path / "night.csv"
    text = clean.read_text()
    out.write_text(text[: len(text) - 30])  # a kill in the middle of the last row
    assert score_file(night, server, out) == 0
    assert "dropped the torn last line" in capsys.readouterr().err
    same_catalogue(out, clean)


def test_client_started_before_the_server_waits_for_it(night, clean, tmp_path):
    out = tmp_path / "night.csv"
    env = {"LINESCORE_API_TOKEN": TOKEN}
    with live_server(tmp_path, env=env, workers=1, ready=False) as starting:
        assert score_file(night, starting.url, out, "--retry-for", "60") == 0
    same_catalogue(out, clean)


def test_transient_failures_and_malformed_answers_are_retried_until_complete(
    server, night, clean, tmp_path, capsys, monkeypatch
):
    """The first try of each batch fails in another way; every retry goes through."""
    monkeypatch.setattr(scorefile, "BACKOFF_FIRST", 0.01)  # the backoff itself stays as it is
    failures = [503, 429, 500, 408, 502, 504, "torn", "html", "short", "reversed"]
    first_tries = dict(zip(itertools.count(1, 2), failures, strict=False))
    out = tmp_path / "night.csv"
    with relay(server, refuse=first_tries.get) as flaky:
        assert score_file(night, flaky, out, "--concurrency", "1") == 0
    assert journal_rows(out) == journal_rows(clean)
    assert len(journal_rows(out)) > (len(failures) - 1) * BATCH  # every failure was met
    assert "complete:" in capsys.readouterr().err


@pytest.mark.parametrize("status", [400, 405, 422])
def test_a_batch_refused_as_a_whole_stops_the_run_and_is_sent_again(
    server, night, clean, tmp_path, capsys, status
):
    out = tmp_path / "night.csv"
    with relay(server, refuse={3: status}.get) as refusing:
        assert score_file(night, refusing, out, "--concurrency", "1") == 1
    error, summary = capsys.readouterr().err.splitlines()
    assert error == (
        f"linescore score-file: error: {refusing}/v1/score/batch answered {status} Refused: no"
    )
    assert f"unfinished: {2 * BATCH}/" in summary
    assert journal_rows(out) == journal_rows(clean)[: 2 * BATCH]  # no row for the refused batch
    assert score_file(night, server, out) == 0
    same_catalogue(out, clean)


def test_batches_larger_than_the_server_allows_are_not_written(
    server, night, clean, tmp_path, capsys
):
    out, size = tmp_path / "night.csv", MAX_BATCH + 1
    assert score_file(night, server, out, "--batch-size", str(size), "--concurrency", "1") == 1
    error, summary = capsys.readouterr().err.splitlines()
    assert error.endswith(
        f"answered 413 Payload too large: batch of {size} detections exceeds the maximum of "
        f"{MAX_BATCH} (use a --batch-size below {size})"
    )
    assert "unfinished: 0/" in summary and journal_rows(out) == []
    assert score_file(night, server, out) == 0  # BATCH detections a batch
    same_catalogue(out, clean)


def test_answers_in_flight_are_saved_whatever_else_fails_meanwhile(
    server, night, clean, tmp_path, capsys, monkeypatch, file_ids
):
    """Batch 2 loses the server, batch 3 fails unexpectedly: batches 1 and 4 are still saved."""
    score = scorefile.BatchClient.score

    def failing(client: scorefile.BatchClient, batch: scorefile.Batch) -> list:
        first = int(batch.detectid[0])
        if first == file_ids[BATCH]:
            time.sleep(0.3)  # batch 4 is on its way by now
            raise scorefile.ServerLostError("server lost")
        if first == file_ids[2 * BATCH]:
            raise RuntimeError("not a transport error")
        return score(client, batch)

    monkeypatch.setattr(scorefile.BatchClient, "score", failing)
    out = tmp_path / "night.csv"
    assert score_file(night, server, out, "--concurrency", "3") == 75
    error, summary = capsys.readouterr().err.splitlines()
    assert error.endswith("server lost") and f"unfinished: {2 * BATCH}/" in summary
    rows = journal_rows(clean)
    assert journal_rows(out) == rows[:BATCH] + rows[3 * BATCH : 4 * BATCH]


def test_non_ascii_texts_from_the_server_are_journalled_as_ascii(server, night, tmp_path):
    out = tmp_path / "night.csv"
    with relay(server, refuse={1: "unicode"}.get) as accented:
        assert score_file(night, accented, out, "--concurrency", "1") == 0
    first = journal_rows(out)[:BATCH]
    assert {row["model_version"] for row in first} == {f"{PACKAGED_VERSION} ?"}
    assert all(row["stage"].endswith("?") and row["flags"] == "na?ve" for row in first)
    table = Table.read(out.with_suffix(".fits"))
    assert table["model_version"][0] == f"{PACKAGED_VERSION} ?"
    assert table["model_version"][-1] == PACKAGED_VERSION


def test_a_server_lost_midway_leaves_a_journal_that_a_rerun_completes(
    server, night, clean, tmp_path, capsys
):
    out = tmp_path / "night.csv"
    with relay(server, refuse=lambda n: 503 if n > 3 else None) as failing:
        assert score_file(night, failing, out, "--retry-for", "1") == 75
    error, summary = capsys.readouterr().err.splitlines()
    assert error.startswith(f"linescore score-file: error: server {failing} unavailable")
    assert "(503 Refused: no)" in error and "unfinished: 48/" in summary
    assert score_file(night, server, out) == 0
    same_catalogue(out, clean)


def test_a_wrong_token_stops_at_once_with_nothing_written(server, night, tmp_path, capsys):
    out = tmp_path / "night.csv"
    code = main(["score-file", str(night), "--url", server, "--out", str(out), "--token", "wrong"])
    lines = capsys.readouterr().err.splitlines()
    assert code == 1 and "answered 401 Unauthorized" in lines[0]
    assert journal_rows(out) == []


def test_an_unreachable_server_is_named_and_the_run_is_left_to_resume(night, tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    code = main(
        [
            "score-file",
            str(night),
            "--url",
            url,
            "--out",
            str(tmp_path / "o.csv"),
            "--retry-for",
            "1",
        ]
    )
    error, summary = capsys.readouterr().err.splitlines()
    assert code == 75
    assert error == (
        f"linescore score-file: error: server {url} unavailable after retrying for 1 s "
        "(Connection refused)"
    )
    assert "unfinished: 0/" in summary and "run the same command again to resume" in summary


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("--token", "two\nlines", "--token holds a space, a control or a non-ASCII character"),
        ("--token", "na\u00efve", "--token holds a space, a control or a non-ASCII character"),
        ("--url", "http://127.0.0.1:99999", "--url http://127.0.0.1:99999 is not usable"),
        ("--url", "http://[::1", "--url http://[::1 is not an http(s) URL"),
    ],
)
def test_unusable_options_give_one_line_before_anything_is_written(
    night, tmp_path, capsys, option, value, reason
):
    out = tmp_path / "o.csv"
    args = ["score-file", str(night), "--url", "http://127.0.0.1:1", "--out", str(out)]
    assert main([*args, option, value]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"linescore score-file: error: {reason}") and not out.exists()


@pytest.mark.parametrize("seconds", ["0", "-1", "nan", "inf", "soon"])
def test_timeout_must_be_a_positive_number(night, tmp_path, capsys, seconds):
    with pytest.raises(SystemExit) as stopped:
        main(["score-file", str(night), "--url", "http://1", "--out", "o", "--timeout", seconds])
    assert stopped.value.code == 2 and "--timeout: expected a positive number" in (
        capsys.readouterr().err
    )


def unusable_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle["Labels"] = np.zeros(3)
    return {
        "missing": (tmp_path / "nowhere.h5", "no such file"),
        "text": (text, "not an HDF5 file"),
        "no table": (other, "no FiberImages table"),
    }


@pytest.mark.parametrize("case", ["missing", "text", "no table"])
def test_unusable_input_files_give_one_line(tmp_path, capsys, case):
    path, reason = unusable_files(tmp_path)[case]
    code = main(
        ["score-file", str(path), "--url", "http://127.0.0.1:1", "--out", str(tmp_path / "o.csv")]
    )
    (line,) = capsys.readouterr().err.splitlines()
    assert code == 1 and line.startswith(f"linescore score-file: error: {path}: ")
    assert reason in line and not (tmp_path / "o.csv").exists()


def test_a_journal_is_refused_for_another_file_and_while_in_use(tmp_path):
    path = tmp_path / "night.csv"
    with Journal.open(path, np.array([1, 2, 3])) as journal:
        problem = {"status": 422, "title": "t", "detail": "d", "pointer": "/cutout/1"}
        journal.append([error_row(2, problem, "1.0.0")])
        with pytest.raises(CatalogueError, match="another score-file run"):
            Journal.open(path, np.array([1, 2, 3]))
    with pytest.raises(CatalogueError, match="belongs to another file"):
        Journal.open(path, np.array([7, 8]))
    with Journal.open(path, np.array([1, 2, 3])) as journal:
        assert journal.done.tolist() == [2] and journal.counts.errors == 1


def scored(novelty: float | None, flags: list[str]) -> dict:
    result = {
        "cnn_score": 0.25,
        "umap": [1.5, -2.0],
        "svm_score": -0.75,
        "decision": "fake",
        "stage": "cnn",
        "flags": flags,
    }
    return result if novelty is None else {**result, "novelty": novelty}


@pytest.mark.parametrize("table_format", ["fits", "ecsv"])
def test_novelty_round_trips_through_the_journal_resume_and_table(tmp_path, table_format):
    """float32 novelty values, read back exactly from the journal, the resumed journal and the
    table; empty (masked) on error rows and when an older server sent none."""
    novel, ordinary = float(np.float32(1.0)), float(np.float32(0.28999999))
    path, ids = tmp_path / "night.csv", np.array([5, 6, 7, 8])
    problem = {"status": 422, "title": "t", "detail": "d", "pointer": "/cutout/2"}
    with Journal.open(path, ids) as journal:
        journal.append(
            [
                result_row(5, scored(novel, ["novel"]), "2.0.0"),
                result_row(6, scored(ordinary, []), "2.0.0"),
            ]
        )
    with Journal.open(path, ids) as journal:  # resumed: the novelty column is understood
        assert journal.done.tolist() == [5, 6] and journal.counts.fake == 2
        journal.append([error_row(7, problem, "2.0.0"), result_row(8, scored(None, []), "1.0.0")])
    rows = journal_rows(path)
    assert list(rows[0]) == list(JOURNAL_COLUMNS)
    assert JOURNAL_COLUMNS.index("novelty") == JOURNAL_COLUMNS.index("svm_score") + 1
    assert [row["novelty"] for row in rows] == [repr(novel), repr(ordinary), "", ""]
    assert [row["flags"] for row in rows] == ["novel", "", "", ""]
    destination = tmp_path / f"night.{table_format}"
    write_table(path, destination, ids, {"source": "night.h5"})
    table = Table.read(destination)
    assert table["novelty"].dtype.kind == "f" and table["novelty"].dtype.itemsize == 4
    assert table["novelty"].tolist() == [novel, ordinary, None, None]
    assert table["novelty"][1] == np.float32(ordinary)
    assert [flag or "" for flag in table["flags"].tolist()] == ["novel", "", "", ""]


def test_a_journal_from_before_novelty_is_refused_by_name(tmp_path):
    path = tmp_path / "night.csv"
    old = [c for c in JOURNAL_COLUMNS if c != "novelty"]
    path.write_text(
        ",".join(old)
        + "\n"
        + ",".join(["1", "0.5", "1", "2", "0.1", "real"] + [""] * (len(old) - 6))
        + "\n"
    )
    with pytest.raises(CatalogueError, match="older linescore, without the novelty column"):
        Journal.open(path, np.array([1]))


def test_answers_with_novelty_are_accepted_and_bad_novelty_is_not():
    def answer(*results: dict) -> bytes:
        return json.dumps({"model_version": "2.0.0", "results": list(results)}).encode()

    rows = scorefile.answer_rows(
        answer({"detectid": 1, **scored(0.5, [])}, {"detectid": 2, **scored(None, [])}), [1, 2]
    )
    novelty = JOURNAL_COLUMNS.index("novelty")
    assert [row[novelty] for row in rows] == ["0.5", ""]
    for bad in (1.5, -0.25, "0.5", True):
        with pytest.raises(scorefile.MalformedAnswerError, match="incomplete result"):
            scorefile.answer_rows(answer({"detectid": 1, **scored(bad, [])}), [1])


def test_the_server_never_imports_the_client_libraries():
    code = (
        "import sys, service.cli, service.server, service.web.app; service.cli.parser(); "
        "print([m for m in ('h5py', 'astropy', 'tqdm', 'requests') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stderr
