"""The catalogue of ``linescore score-file``: a resumable CSV journal, then an astropy table.

The journal is the record while a run goes on: one row per detection, appended and flushed after
each batch, so a killed run loses at most the batches that were in flight. Reopened, it tells
which detectids are done (they are not sent again); a torn last line left by a hard kill is cut
off and that detection is scored again. Every text field is kept to one line of printable ASCII
(anything else becomes ``?``), so one line is one row and the same values fit a FITS table. An
exclusive lock keeps two runs off one journal. astropy is imported only to write the final table.
"""

import csv
import fcntl
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

JOURNAL_COLUMNS = (
    "detectid",
    "cnn_score",
    "umap_x",
    "umap_y",
    "svm_score",
    "novelty",
    "decision",
    "stage",
    "flags",
    "model_version",
    "error_status",
    "error_title",
    "error_detail",
    "error_pointer",
)
FLOAT_COLUMNS = ("cnn_score", "umap_x", "umap_y", "svm_score", "novelty")
FLOAT32_COLUMNS = ("novelty",)  # float32 on the server: the table keeps it so
FLAG_SEPARATOR = ";"
TABLE_FORMATS = {"fits": ".fits", "ecsv": ".ecsv"}

Row = list[str]


class CatalogueError(Exception):
    """The journal cannot be used as asked; the message is one line naming the file."""


def one_line(text: Any) -> str:
    """Printable ASCII on one line: a row stays a line, and FITS accepts it."""
    flat = re.sub(r"\s+", " ", str(text)).strip()
    return re.sub(r"[^ -~]", "?", flat)  # non-ASCII and control characters alike


def result_row(detectid: int, result: dict, model_version: str) -> Row:
    """A scored detection; floats as repr, which reads back to the very same float.

    Every text the server sent goes through ``one_line``, like the error texts. ``novelty`` is
    left empty when the server sent none (a server older than novelty).
    """
    x, y = result["umap"]
    novelty = result.get("novelty")
    return [
        str(detectid),
        *(repr(float(value)) for value in (result["cnn_score"], x, y, result["svm_score"])),
        "" if novelty is None else repr(float(novelty)),
        one_line(result["decision"]),
        one_line(result["stage"]),
        FLAG_SEPARATOR.join(one_line(flag) for flag in result["flags"]),
        one_line(model_version),
        "",
        "",
        "",
        "",
    ]


def error_row(detectid: int, problem: dict, model_version: str = "") -> Row:
    """A detection the server refused in a 200 answer (an item error), with its problem."""
    return [
        str(detectid),
        *[""] * (JOURNAL_COLUMNS.index("model_version") - 1),
        one_line(model_version),
        str(int(problem.get("status", 0))),
        *(one_line(problem.get(key, "")) for key in ("title", "detail", "pointer")),
    ]


@dataclass
class Counts:
    real: int = 0
    fake: int = 0
    errors: int = 0

    def add(self, row: Row) -> None:
        if row[JOURNAL_COLUMNS.index("error_status")]:
            self.errors += 1
        elif row[JOURNAL_COLUMNS.index("decision")] == "real":
            self.real += 1
        else:
            self.fake += 1

    @property
    def total(self) -> int:
        return self.real + self.fake + self.errors


@dataclass
class Journal:
    """An open, locked journal, ready to append; ``done`` holds the detectids it already has."""

    path: Path
    handle: IO[bytes]
    done: np.ndarray
    counts: Counts = field(default_factory=Counts)
    torn_bytes: int = 0

    @classmethod
    def open(cls, path: Path, known: np.ndarray) -> "Journal":
        """Open or create ``path`` for the detections ``known``, repairing a torn tail."""
        try:
            handle = path.open("a+b")
        except OSError as error:
            raise CatalogueError(f"{path}: cannot open for writing ({error.strerror})") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise CatalogueError(f"{path}: another score-file run is writing it") from None
        try:
            return cls.resume(path, handle, known)
        except BaseException:
            handle.close()
            raise

    @classmethod
    def resume(cls, path: Path, handle: IO[bytes], known: np.ndarray) -> "Journal":
        handle.seek(0)
        complete = sum(len(line) for line in handle if line.endswith(b"\n"))
        torn = os.fstat(handle.fileno()).st_size - complete
        handle.truncate(complete)
        handle.seek(0)
        reader = csv.reader(line.decode("ascii", "replace") for line in handle)
        header = next(reader, None)
        if header is None:
            write_rows(handle, [list(JOURNAL_COLUMNS)])
            return cls(path, handle, np.empty(0, np.int64), torn_bytes=torn)
        if tuple(header) == tuple(c for c in JOURNAL_COLUMNS if c != "novelty"):
            raise CatalogueError(
                f"{path}: is a journal of an older linescore, without the novelty column; "
                "use another --out"
            )
        if tuple(header) != JOURNAL_COLUMNS:
            raise CatalogueError(
                f"{path}: exists and is not a score-file journal; use another --out"
            )
        counts, ids = Counts(), []
        for line, row in enumerate(reader, start=2):
            if len(row) != len(JOURNAL_COLUMNS) or not row[0].lstrip("-").isdigit():
                raise CatalogueError(f"{path}: line {line} is not a journal row; use another --out")
            ids.append(int(row[0]))
            counts.add(row)
        done = np.array(ids, dtype=np.int64)
        check_ids(path, done, known)
        return cls(path, handle, done, counts, torn)

    def append(self, rows: list[Row]) -> None:
        write_rows(self.handle, rows)
        for row in rows:
            self.counts.add(row)

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_rows(handle: IO[bytes], rows: list[Row]) -> None:
    """One write and one flush per batch: a kill tears at most the last line."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    handle.write(text.getvalue().encode("ascii"))
    handle.flush()


def check_ids(path: Path, done: np.ndarray, known: np.ndarray) -> None:
    """Every journal row must be a detection of this file, once."""
    foreign = done[~np.isin(done, known)]
    if len(foreign):
        raise CatalogueError(
            f"{path}: has {len(foreign)} detectids that are not in the input file (first "
            f"{foreign[0]}): it belongs to another file; use another --out"
        )
    unique, seen = np.unique(done, return_counts=True)
    if np.any(seen > 1):
        raise CatalogueError(f"{path}: detectid {unique[seen > 1][0]} appears twice")


def table_path(out: Path, table_format: str) -> Path:
    return out.with_suffix(TABLE_FORMATS[table_format])


def write_table(journal: Path, destination: Path, order: np.ndarray, meta: dict) -> None:
    """The journal as a typed astropy table in file order; missing numbers are masked.

    Written to a temporary name and renamed, so a table that exists is always whole.
    """
    from astropy.table import Column, MaskedColumn, Table

    with journal.open(encoding="ascii", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    ids = np.array([int(row[0]) for row in rows], dtype=np.int64)
    rows = [rows[i] for i in np.argsort(position_in(order, ids))]
    table = Table(meta=meta)
    columns = list(zip(*rows, strict=True)) or [()] * len(JOURNAL_COLUMNS)
    for name, values in zip(JOURNAL_COLUMNS, columns, strict=True):
        column = np.array(values, dtype=str)  # as wide as its longest value
        missing = column == ""
        if name == "detectid":
            table[name] = Column(column.astype(np.int64))
        elif name in FLOAT_COLUMNS:
            dtype = np.float32 if name in FLOAT32_COLUMNS else np.float64
            table[name] = MaskedColumn(np.where(missing, "nan", column).astype(dtype), mask=missing)
        elif name == "error_status":
            table[name] = MaskedColumn(
                np.where(missing, "0", column).astype(np.int16), mask=missing
            )
        else:
            table[name] = Column(column)
    partial = destination.with_name(f".{destination.name}.partial")
    table.write(partial, format=destination.suffix.lstrip("."), overwrite=True)
    os.replace(partial, destination)


def position_in(order: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Index of each id in ``order`` (every id is known to be there)."""
    by_id = np.argsort(order)
    return by_id[np.searchsorted(order, ids, sorter=by_id)]
