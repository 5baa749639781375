"""A scored night: the score-file catalogue joined to the FiberImages file it scored.

Everything the pages need for all detections is read once, at load, into numpy arrays (scores,
places, decisions, flags, line wavelengths); cutouts are read one detection at a time. Every
problem is one line naming the file: a malformed catalogue, a catalogue of another file, a
detection the file lacks.
"""

import csv
import gc
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from service.client.catalogue import FLAG_SEPARATOR, JOURNAL_COLUMNS
from service.contract import PRODUCT_COLUMNS, PRODUCT_LINE_COLUMN, ROWS
from service.domain import night_fingerprint

FIBER_TABLE = "FiberImages"
TABLE_SUFFIXES = {".fits": "fits", ".fit": "fits", ".ecsv": "ascii.ecsv"}
WAVE_CHUNK = 8192  # rows per read of im_wave at load: bounded memory on a large file


class ReviewError(Exception):
    """The review cannot start or go on as asked; the message is one line naming the file."""


@dataclass(frozen=True)
class Catalogue:
    """The scored rows of a catalogue (rows the server refused are only counted)."""

    path: Path
    detectid: np.ndarray  # (N,) int64
    cnn_score: np.ndarray  # (N,) float64
    umap: np.ndarray  # (N, 2) float64
    svm_score: np.ndarray  # (N,) float64
    novelty: np.ndarray  # (N,) float64, NaN where the server sent none
    decision: np.ndarray  # (N,) str: real | fake
    stage: np.ndarray  # (N,) str: cnn | svm
    flag_names: tuple[str, ...]
    flags: np.ndarray  # (N, len(flag_names)) bool
    model_version: str
    errors: int  # rows the server refused (no score)

    def __len__(self) -> int:
        return len(self.detectid)

    def flags_of(self, index: int) -> list[str]:
        return [name for name, on in zip(self.flag_names, self.flags[index], strict=True) if on]


def read_catalogue(path: Path) -> Catalogue:
    """The journal (CSV) or table (FITS, ECSV) of ``linescore score-file``, checked."""
    if not path.is_file():
        raise ReviewError(f"{path}: no such file")
    if path.suffix not in (".csv", *TABLE_SUFFIXES):
        raise ReviewError(f"{path}: expected a score-file catalogue (.csv, .fits or .ecsv)")
    with collector_paused():
        columns = journal_columns(path) if path.suffix == ".csv" else table_columns(path)
        return parse(path, columns)


def journal_columns(path: Path) -> dict[str, tuple[str, ...]]:
    """The journal's text columns: the C ``csv`` reader, then one transpose."""
    try:
        with path.open(encoding="ascii", newline="") as handle:
            reader = csv.reader(handle)
            header = tuple(next(reader, ()))
            if header != JOURNAL_COLUMNS:
                raise ReviewError(f"{path}: not a score-file journal (its header differs)")
            rows = [row for row in reader if row]
            if set(map(len, rows)) - {len(JOURNAL_COLUMNS)}:
                raise ReviewError(f"{path}: a row has the wrong number of fields (a torn journal?)")
            values = list(zip(*rows, strict=True)) or [()] * len(JOURNAL_COLUMNS)
    except (UnicodeDecodeError, csv.Error) as error:
        raise ReviewError(f"{path}: not a score-file journal ({error})") from None
    return dict(zip(JOURNAL_COLUMNS, values, strict=True))


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while millions of acyclic strings come and go: twice as fast."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def table_columns(path: Path) -> dict[str, list[str]]:
    """A FITS or ECSV table as text columns, masked values empty, like the journal."""
    from astropy.table import Table

    try:
        table = Table.read(path, format=TABLE_SUFFIXES[path.suffix])
    except Exception as error:  # astropy raises many kinds for a file it cannot read
        raise ReviewError(f"{path}: not a readable table ({type(error).__name__})") from None
    missing = [name for name in JOURNAL_COLUMNS if name not in table.colnames]
    if missing:
        raise ReviewError(f"{path}: not a score-file catalogue (no column {missing[0]})")
    columns = {}
    for name in JOURNAL_COLUMNS:
        column = table[name]
        mask = np.asarray(getattr(column, "mask", np.zeros(len(column), bool)), dtype=bool)
        data = np.asarray(column)
        if data.dtype.kind == "S":  # FITS strings come back as bytes
            data = np.char.decode(data, "ascii")
        text = [repr(float(v)) if data.dtype.kind == "f" else str(v) for v in data.tolist()]
        columns[name] = ["" if gone else value for value, gone in zip(text, mask, strict=True)]
    return columns


def parse(path: Path, columns: Mapping[str, Sequence[str]]) -> Catalogue:
    """Typed arrays of the scored rows; a value that does not parse is named with its row.

    Column-wise numpy on object arrays of the text: no Python loop over the rows.
    """
    text = {name: np.array(column, dtype=object) for name, column in columns.items()}
    ids = numbers(path, text, "detectid", np.int64)
    if len(ids) == 0:
        raise ReviewError(f"{path}: has no detections")
    unique, seen = np.unique(ids, return_counts=True)
    if np.any(seen > 1):
        raise ReviewError(f"{path}: detectid {unique[seen > 1][0]} appears twice")
    scored = text["error_status"] == ""
    pick = {name: column[scored] for name, column in text.items()}
    pick["novelty"][pick["novelty"] == ""] = "nan"
    versions = sorted(set(pick["model_version"].tolist()))
    if len(versions) > 1:
        raise ReviewError(f"{path}: scored by several model versions {versions}")
    decision, stage = pick["decision"].astype(str), pick["stage"].astype(str)
    if not np.isin(decision, ("real", "fake")).all() or not np.isin(stage, ("cnn", "svm")).all():
        raise ReviewError(f"{path}: a decision or stage is not real/fake or cnn/svm")
    names, flags = flag_table(pick["flags"].astype(str))
    return Catalogue(
        path=path,
        detectid=ids[scored],
        cnn_score=numbers(path, pick, "cnn_score", np.float64),
        umap=np.stack(
            [numbers(path, pick, "umap_x", np.float64), numbers(path, pick, "umap_y", np.float64)],
            axis=1,
        ).reshape(-1, 2),
        svm_score=numbers(path, pick, "svm_score", np.float64),
        novelty=numbers(path, pick, "novelty", np.float64, finite=False),
        decision=decision,
        stage=stage,
        flag_names=names,
        flags=flags,
        model_version=versions[0] if versions else "",
        errors=int((~scored).sum()),
    )


def flag_table(listed: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """Flag names (sorted) and a row per detection: each distinct flag list is split only once."""
    combos, which = np.unique(listed, return_inverse=True)
    lists = [combo.split(FLAG_SEPARATOR) if combo else [] for combo in combos.tolist()]
    names = tuple(sorted({flag for flags in lists for flag in flags}))
    table = np.zeros((len(lists), len(names)), dtype=bool)
    for row, flags in enumerate(lists):
        table[row, [names.index(flag) for flag in flags]] = True
    return names, table[which.reshape(-1)]


def numbers(
    path: Path, columns: dict[str, np.ndarray], name: str, dtype: type, finite: bool = True
) -> np.ndarray:
    try:
        values = np.array(columns[name], dtype=dtype)
    except ValueError:
        bad = next(i for i, v in enumerate(columns[name]) if not parses(v, dtype))
        raise ReviewError(f"{path}: {name} {columns[name][bad]!r} is not a number") from None
    if finite and values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ReviewError(f"{path}: {name} has NaN or infinite values on scored rows")
    return values


def parses(value: str, dtype: type) -> bool:
    try:
        dtype(value)
    except ValueError:
        return False
    return True


class Night:
    """A catalogue and its FiberImages file, kept open: cutouts are read on demand."""

    def __init__(self, catalogue: Catalogue, h5_path: Path) -> None:
        self.catalogue, self.path = catalogue, h5_path
        self.handle = open_fiber_file(h5_path)
        self.lock = threading.Lock()  # one reader of the file at a time
        try:
            self.table = fiber_table(self.handle, h5_path)
            file_ids = np.asarray(self.table.fields("detectid")[:], dtype=np.int64)
            self.rows = rows_of(catalogue, file_ids, h5_path)
            self.has_fibers = "im_array" in self.table.dtype.names
            self.wave = line_waves(self.table, self.rows)
        except BaseException:
            self.handle.close()
            raise
        self.fingerprint = night_fingerprint(file_ids, h5_path.name)
        self.order = np.argsort(catalogue.detectid)  # index by detectid: searchsorted

    def index_of(self, detectid: int) -> int | None:
        """The catalogue index of a detectid, or None when the night has no such detection."""
        ids = self.catalogue.detectid
        spot = np.searchsorted(ids, detectid, sorter=self.order)
        if spot < len(ids) and ids[self.order[spot]] == detectid:
            return int(self.order[spot])
        return None

    def indices_of(self, detectids: np.ndarray) -> np.ndarray:
        """Catalogue indices of detectids known to be in the night."""
        return self.order[np.searchsorted(self.catalogue.detectid, detectids, sorter=self.order)]

    def images(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``im_sum`` (9, 100) and, when the file has it, ``im_array`` (4, 9, 100)."""
        with self.lock:
            record = self.table[int(self.rows[index])]
        fibers = np.asarray(record["im_array"], np.float32) if self.has_fibers else None
        return np.asarray(record["im_sum"], np.float32), fibers

    def close(self) -> None:
        self.handle.close()

    def reopen(self) -> None:
        """Open the file again, in a process forked after :meth:`close` (HDF5 handles are not
        to be shared across a fork)."""
        with self.lock:
            self.handle = open_fiber_file(self.path)
            self.table = fiber_table(self.handle, self.path)


def open_fiber_file(path: Path) -> h5py.File:
    if not path.is_file():
        raise ReviewError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError:
        raise ReviewError(f"{path}: not an HDF5 file (expected HETDEX FiberImages)") from None


def fiber_table(handle: h5py.File, path: Path) -> h5py.Dataset:
    table = handle.get(FIBER_TABLE)
    names = table.dtype.names if isinstance(table, h5py.Dataset) else None
    if not names or "detectid" not in names or "im_sum" not in names:
        raise ReviewError(f"{path}: no {FIBER_TABLE} table with detectid and im_sum")
    if table.dtype["im_sum"].shape != (ROWS, PRODUCT_COLUMNS):
        raise ReviewError(
            f"{path}: {FIBER_TABLE}/im_sum has shape {table.dtype['im_sum'].shape}, "
            f"expected ({ROWS}, {PRODUCT_COLUMNS})"
        )
    return table


def rows_of(catalogue: Catalogue, file_ids: np.ndarray, h5_path: Path) -> np.ndarray:
    """Row in the file of each catalogue detection; refuses a catalogue of another file."""
    order = np.argsort(file_ids)
    spot = np.clip(np.searchsorted(file_ids, catalogue.detectid, sorter=order), 0, len(order) - 1)
    rows = order[spot] if len(order) else np.zeros(len(catalogue), np.int64)
    found = file_ids[rows] == catalogue.detectid if len(order) else np.zeros(len(rows), bool)
    if not found.any():
        raise ReviewError(
            f"{catalogue.path}: none of its detectids is in {h5_path}: a catalogue of another file"
        )
    if not found.all():
        raise ReviewError(
            f"{h5_path}: has no detection {catalogue.detectid[~found][0]} of {catalogue.path} "
            f"({int((~found).sum())} missing)"
        )
    return rows


def line_waves(table: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """The line wavelength (``im_wave`` at column 50) per catalogue row; NaN without im_wave."""
    if "im_wave" not in table.dtype.names:
        return np.full(len(rows), np.nan)
    waves = np.empty(len(table), dtype=np.float64)
    for start in range(0, len(table), WAVE_CHUNK):
        block = table.fields("im_wave")[start : start + WAVE_CHUNK]
        waves[start : start + len(block)] = block[:, PRODUCT_LINE_COLUMN]
    return waves[rows]
