"""``linescore score-file``: score a HETDEX FiberImages file through a running linescore server.

The nightly pipeline's client. It reads the file a batch at a time (never all of ``im_sum``),
posts npz batches to ``/v1/score/batch`` with a few in flight, retries what a busy, restarting
or draining server (or a proxy in front of it) fails, and journals every answer
(``service.client.catalogue``) so that a run stopped by Ctrl-C, a kill, a lost server or a refused
batch resumes where it stopped when run again. Only the items of a 200 answer become rows: a
batch the server refuses as a whole is never written, so a rerun sends it again. Each batch in
flight has a kept-alive connection of its own (one ``requests.Session`` per worker thread), and a
balancer that places connections (kube-proxy) keeps each on one replica: to reach every replica,
``--concurrency`` must be at least their number (deploy/README.md, "How a night reaches every
pod"; tests/test_balancer.py). Its client libraries (h5py, requests, tqdm, astropy) are
imported by this module only, and only the ``score-file`` command imports it: the server never
loads them.

Exit status: 0 every detection has a row; 1 nothing can be done until something is fixed (the
file, the options, or a batch the server refused as a whole); 75 unfinished because the server
was lost, run it again to resume; 130 interrupted (Ctrl-C), run it again to resume.
"""

import io
import queue
import random
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import h5py
import numpy as np
import orjson
import requests
from tqdm import tqdm

from service.client.catalogue import (
    CatalogueError,
    Journal,
    Row,
    error_row,
    one_line,
    result_row,
    table_path,
    write_table,
)
from service.contract import COLUMNS, LINE_COLUMN, PRODUCT_COLUMNS, PRODUCT_LINE_COLUMN, ROWS

FIBER_TABLE = "FiberImages"
EX_UNFINISHED = 75  # sysexits EX_TEMPFAIL: try again later
EX_INTERRUPTED = 130
# Worth another try: the server (or a proxy) is busy, restarting, draining or failed for once.
# Any other answer but 200 would come back the same: stop, write nothing for it, fix, rerun.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
BACKOFF_FIRST, BACKOFF_CAP = 0.5, 30.0
TOKEN = re.compile(r"[!-~]+")  # visible ASCII: it goes into a header line as it is
LINE_COLUMNS = {PRODUCT_COLUMNS: PRODUCT_LINE_COLUMN, COLUMNS: LINE_COLUMN}


class ClientError(Exception):
    """Ends the run with one line on stderr; ``exit_status`` says whether a plain rerun helps."""

    exit_status = 1


class ServerLostError(ClientError):
    exit_status = EX_UNFINISHED


class StoppedError(Exception):
    """The run is stopping: a waiting batch gives up its retries."""


class MalformedAnswerError(Exception):
    """A 200 that is not a linescore answer for the batch sent (a proxy's page, a cut body)."""


@dataclass(frozen=True)
class Job:
    file: Path
    url: str
    out: Path
    batch_size: int = 1024
    concurrency: int = 2
    table: str = "fits"
    token: str | None = None
    timeout: float = 60.0
    retry_for: float = 300.0


@dataclass
class Batch:
    detectid: np.ndarray
    cutout: np.ndarray
    wave: np.ndarray | None

    def body(self) -> bytes:
        arrays = {"cutout": self.cutout, "detectid": self.detectid}
        if self.wave is not None:
            arrays["wave"] = self.wave
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()


def fiber_table(handle: h5py.File, path: Path) -> h5py.Dataset:
    """The FiberImages compound table, checked for the fields and shapes scoring needs."""
    table = handle.get(FIBER_TABLE)
    names = table.dtype.names if isinstance(table, h5py.Dataset) else None
    if not names:
        raise ClientError(f"{path}: no {FIBER_TABLE} table (not a HETDEX FiberImages file)")
    for name in ("detectid", "im_sum"):
        if name not in names:
            raise ClientError(f"{path}: {FIBER_TABLE} has no {name} field (has {list(names)})")
    shape = table.dtype["im_sum"].shape
    if len(shape) != 2 or shape[0] != ROWS or shape[1] not in LINE_COLUMNS:
        raise ClientError(
            f"{path}: {FIBER_TABLE}/im_sum has shape {shape}, expected ({ROWS}, {PRODUCT_COLUMNS})"
        )
    if table.dtype["detectid"].kind not in "iu":
        raise ClientError(f"{path}: {FIBER_TABLE}/detectid is not an integer")
    return table


class FiberImages:
    """The FiberImages table of a HETDEX HDF5 file: all detectids, cutouts one slice at a time.

    The line wavelength is ``im_wave`` at the line column (50 of 100), when the table has it.
    """

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise ClientError(f"{path}: no such file")
        try:
            self.handle = h5py.File(path, "r")
        except OSError:
            raise ClientError(f"{path}: not an HDF5 file (expected HETDEX FiberImages)") from None
        try:
            self.table = fiber_table(self.handle, path)
            self.detectid = np.asarray(self.table.fields("detectid")[:], dtype=np.int64)
            unique, seen = np.unique(self.detectid, return_counts=True)
            if np.any(seen > 1):
                raise ClientError(f"{path}: {FIBER_TABLE}/detectid {unique[seen > 1][0]} repeats")
        except BaseException:
            self.handle.close()
            raise
        columns = self.table.dtype["im_sum"].shape[1]
        self.line_column = LINE_COLUMNS[columns]
        wave = self.table.dtype.fields.get("im_wave")
        self.fields = ["detectid", "im_sum"]
        if wave is not None and wave[0].shape == (columns,):
            self.fields.append("im_wave")

    def batches(self, pending: np.ndarray, size: int) -> Iterator[Batch]:
        """The pending rows in file order, ``size`` at a time, each read as one slice."""
        rows = np.flatnonzero(pending)
        for start in range(0, len(rows), size):
            chosen = rows[start : start + size]
            block = self.table.fields(self.fields)[chosen[0] : chosen[-1] + 1][chosen - chosen[0]]
            wave = block["im_wave"][:, self.line_column] if "im_wave" in self.fields else None
            yield Batch(block["detectid"].astype(np.int64), block["im_sum"], wave)

    def __enter__(self) -> "FiberImages":
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def short_reason(error: requests.RequestException) -> str:
    """'Connection refused' rather than requests' nested repr of its connection pool."""
    if isinstance(error, requests.Timeout):
        return "timed out"
    found = re.findall(r"\[Errno -?\d+\] ([^'\"\)]+)", str(error))
    return found[-1].strip() if found else type(error).__name__


class BatchClient:
    """Posts one batch, retrying transient failures with capped, fully jittered backoff."""

    def __init__(self, job: Job, stop: threading.Event) -> None:
        self.endpoint = job.url.rstrip("/") + "/v1/score/batch"
        self.job = job
        self.stop = stop
        self.headers = {"Content-Type": "application/x-npz", "Accept": "application/json"}
        if job.token:
            self.headers["Authorization"] = f"Bearer {job.token}"
        self.local = threading.local()
        self.sessions: list[requests.Session] = []

    def session(self) -> requests.Session:
        """One session (connection pool) per thread: requests does not promise more."""
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
            self.sessions.append(self.local.session)
        return self.local.session

    def __enter__(self) -> "BatchClient":
        return self

    def __exit__(self, *exc: object) -> None:
        for session in self.sessions:
            session.close()

    def check(self) -> None:
        """Refuse, before anything is sent, a URL or token that no request could carry."""
        try:
            requests.Request("POST", self.endpoint, headers=self.headers).prepare()
        except (ValueError, requests.RequestException) as error:
            raise ClientError(f"--url {self.job.url} is not usable ({error})") from None

    def score(self, batch: Batch) -> list[Row]:
        """The batch's rows, from a 200 answer: retried until then, or ``ClientError``."""
        body, deadline, attempt = batch.body(), None, 0
        while True:
            if self.stop.is_set():
                raise StoppedError
            try:
                response = self.session().post(
                    self.endpoint, data=body, headers=self.headers, timeout=(10, self.job.timeout)
                )
            except requests.RequestException as error:  # refused, reset, cut short, timed out
                reason = short_reason(error)
            else:
                if response.status_code == 200:
                    try:
                        return answer_rows(response.content, batch.detectid.tolist())
                    except MalformedAnswerError as error:
                        reason = f"200 with {error}"
                elif response.status_code in RETRY_STATUSES:
                    reason = status_and_problem(response)
                else:
                    raise ClientError(refusal(self.endpoint, response, len(batch.detectid)))
            now = time.monotonic()
            deadline = deadline or now + self.job.retry_for
            if now >= deadline:
                raise ServerLostError(
                    f"server {self.job.url} unavailable after retrying for "
                    f"{self.job.retry_for:g} s ({reason})"
                )
            ceiling = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** min(attempt, 16))
            self.stop.wait(min(random.uniform(0, ceiling), deadline - now))
            attempt += 1


def answer_rows(content: bytes, detectids: list[int]) -> list[Row]:
    """The rows of a 200 answer, once it is known to answer exactly the detections sent."""
    try:
        payload = orjson.loads(content)
    except orjson.JSONDecodeError:
        start = one_line(content[:60].decode("utf-8", "replace"))
        raise MalformedAnswerError(f"a body that is not JSON ({start})") from None
    results = payload.get("results") if isinstance(payload, dict) else None
    version = payload.get("model_version") if isinstance(payload, dict) else None
    if not isinstance(results, list) or not isinstance(version, str):
        raise MalformedAnswerError("JSON that is not a linescore batch answer")
    if len(results) != len(detectids):
        raise MalformedAnswerError(f"{len(results)} results for {len(detectids)} detections")
    rows = []
    for detectid, result in zip(detectids, results, strict=True):
        if not isinstance(result, dict) or result.get("detectid") != detectid:
            raise MalformedAnswerError(f"no result for detectid {detectid} in its place")
        if "error" in result:
            problem = result["error"]
            if not isinstance(problem, dict) or not isinstance(problem.get("status"), int):
                raise MalformedAnswerError(f"an unreadable error for detectid {detectid}")
            rows.append(error_row(detectid, problem, version))
        elif is_scored(result):
            rows.append(result_row(detectid, result, version))
        else:
            raise MalformedAnswerError(f"an incomplete result for detectid {detectid}")
    return rows


def is_scored(result: dict) -> bool:
    """Whether a result has every field of a scored detection, with the right types.

    ``novelty`` may be missing (a server older than novelty: the journal leaves it empty), but
    when present it is a number in [0, 1].
    """

    def number(value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    umap, flags, novelty = result.get("umap"), result.get("flags"), result.get("novelty")
    return (
        number(result.get("cnn_score"))
        and (novelty is None or (number(novelty) and 0 <= novelty <= 1))
        and number(result.get("svm_score"))
        and isinstance(umap, list)
        and len(umap) == 2
        and all(map(number, umap))
        and isinstance(result.get("decision"), str)
        and isinstance(result.get("stage"), str)
        and isinstance(flags, list)
        and all(isinstance(flag, str) for flag in flags)
    )


def status_and_problem(response: requests.Response) -> str:
    """'413 Payload too large: <detail>' from the RFC 9457 problem, or from a plain page."""
    try:
        problem = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        problem = None
    if not isinstance(problem, dict):
        problem = {"title": response.reason, "detail": response.text[:200]}
    title, detail = (one_line(problem.get(key) or "")[:300] for key in ("title", "detail"))
    return f"{response.status_code} {title}: {detail}"


def refusal(endpoint: str, response: requests.Response, size: int) -> str:
    """The line that stops the run when the server refuses a whole batch."""
    message = f"{endpoint} answered {status_and_problem(response)}"
    if response.status_code == 413:
        return f"{message} (use a --batch-size below {size})"
    return message


class Workers:
    """A few daemon threads that run submitted calls, one ``Future`` each.

    Not a ThreadPoolExecutor: the interpreter joins those threads at exit, so a POST still in
    flight would hold up a run that a second Ctrl-C ends. These are left behind instead; what
    they were sending is scored again on the rerun.
    """

    def __init__(self, count: int) -> None:
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.count = count
        for number in range(count):
            threading.Thread(target=self.work, name=f"score-file-{number}", daemon=True).start()

    def submit(self, call: Callable[[Batch], list[Row]], batch: Batch) -> Future:
        future: Future = Future()
        self.tasks.put((future, call, batch))
        return future

    def work(self) -> None:
        while (task := self.tasks.get()) is not None:
            future, call, batch = task
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call(batch))
                except BaseException as error:  # the waiting thread gets it, whatever it is
                    future.set_exception(error)

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc: object) -> None:
        for _ in range(self.count):
            self.tasks.put(None)


def say(message: str) -> None:
    """One line on stderr, below the progress bar if one is showing."""
    tqdm.write(f"linescore score-file: {message}", file=sys.stderr)


def send(job: Job, source: FiberImages, journal: Journal, progress) -> None:
    """Keep ``concurrency`` batches in flight, journal each answer in file order.

    Whatever ends the run early, answers already received are journalled before it ends, unless
    a (second) Ctrl-C says not to wait for them.
    """
    stop = threading.Event()
    pending = ~np.isin(source.detectid, journal.done)
    in_flight: deque[Future] = deque()

    def save_oldest() -> None:
        oldest = in_flight[0]
        try:
            rows = oldest.result()  # a batch stays in flight until its answer is in hand
        finally:
            if oldest.done():
                in_flight.popleft()
        journal.append(rows)
        progress.update(len(rows))

    def save_the_rest(interrupted: bool) -> None:
        """After whatever ended the run: save each answer still to come, skip each failure.

        A Ctrl-C (another one, if a Ctrl-C ended the run) stops the waiting: the batches still
        in flight are dropped, and their threads left to end with the process.
        """
        try:
            if interrupted:  # said here, so that a Ctrl-C once it is on screen drops the rest
                waiting = len(in_flight)
                say(
                    f"interrupted: saving the {waiting} batch(es) in flight (Ctrl-C again: "
                    "drop them)"
                    if waiting
                    else "interrupted"
                )
            while in_flight:
                with suppress(Exception):  # the run already ends for its first problem
                    save_oldest()
        except KeyboardInterrupt:
            say(f"dropped the {len(in_flight)} batch(es) in flight; the rerun scores them")
            in_flight.clear()
            raise

    interrupted = False
    with BatchClient(job, stop) as client, Workers(job.concurrency) as pool:
        try:
            for batch in source.batches(pending, job.batch_size):  # read while others post
                while len(in_flight) >= job.concurrency:
                    save_oldest()
                in_flight.append(pool.submit(client.score, batch))
            while in_flight:
                save_oldest()
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            stop.set()
            save_the_rest(interrupted)


def score_file(job: Job) -> int:
    """Run the job; say each problem in one line, then a summary; return the exit status."""
    try:
        return run(job)
    except KeyboardInterrupt:
        say("interrupted")
        return EX_INTERRUPTED


def run(job: Job) -> int:
    started = time.monotonic()
    try:
        check_options(job)
        with FiberImages(job.file) as source, Journal.open(job.out, source.detectid) as journal:
            return finish(job, source, journal, started)
    except (ClientError, CatalogueError) as error:
        say(f"error: {error}")
        return 1


def check_options(job: Job) -> None:
    """Refuse options that every request would fail on, before the file or --out is touched."""
    try:
        url = urlsplit(job.url)
    except ValueError:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.netloc:
        raise ClientError(f"--url {job.url} is not an http(s) URL")
    if job.token and not TOKEN.fullmatch(job.token):
        raise ClientError("--token holds a space, a control or a non-ASCII character")
    if table_path(job.out, job.table) == job.out:
        raise ClientError(f"--out {job.out} would be overwritten by the {job.table} table")
    BatchClient(job, threading.Event()).check()


def finish(job: Job, source: FiberImages, journal: Journal, started: float) -> int:
    """Score what the journal lacks, write the table if nothing is missing, then summarise."""
    total, before, status = len(source.detectid), journal.counts.total, 0
    if journal.torn_bytes:
        say(f"dropped the torn last line of {job.out} (a killed run); it is scored again")
    with tqdm(total=total, initial=before, unit="det", disable=None, file=sys.stderr) as bar:
        try:
            send(job, source, journal, bar)
        except KeyboardInterrupt:
            status = EX_INTERRUPTED
        except ClientError as error:
            say(f"error: {error}")
            status = error.exit_status
    counts, table = journal.counts, table_path(job.out, job.table)
    finished = counts.total == total
    if finished:
        write_table(job.out, table, source.detectid, {"source": str(job.file)})
    elapsed, sent = time.monotonic() - started, counts.total - before
    where = (
        f"catalogue in {job.out} and {table}"
        if finished
        else f"saved so far in {job.out}: run the same command again to resume"
    )
    say(
        f"{'complete' if finished else 'unfinished'}: {counts.total}/{total} detections "
        f"({counts.real} real, {counts.fake} fake, {counts.errors} errors); {sent} scored in "
        f"{elapsed:.1f} s ({sent / elapsed:.0f} detections/s); {where}"
    )
    return status or (0 if finished else EX_UNFINISHED)
