"""The reviewers' votes in SQLite: each vote is its own committed transaction.

WAL journal with ``synchronous=FULL``: once a vote's request has answered, a killed server or a
closed tab loses nothing. One vote per reviewer per detection (a later vote replaces that
reviewer's own); every vote is also logged with the vote it replaced, so ``undo`` restores it.
Each vote keeps its audit: reviewer, time, the model version it was cast against and the
address it came from, since exported labels train models. The database remembers which night
it belongs to and refuses another. The primary keys index by detection; the reviewer indexes
keep each queue step and undo off a scan of every vote.

The schema is versioned (``PRAGMA user_version``): a database of another version is refused
with one line rather than read by guessing what its columns meant. Writers wait for each other
(a busy timeout) instead of failing with "database is locked".
"""

import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from service.client.review.night import ReviewError
from service.domain import VISUAL_CLASSES

REVIEWER = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@-]{0,39}")
SCHEMA_VERSION = 2  # 1: no version recorded, votes without model version and address
BUSY_SECONDS = 30.0  # how long a write waits for another's lock before failing
IN_PROCESS = "in-process"  # the address of a vote cast through the API, not over HTTP
SCHEMA = f"""
CREATE TABLE night (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE votes (
    detectid INTEGER NOT NULL,
    reviewer TEXT NOT NULL,
    vis_class INTEGER NOT NULL CHECK (vis_class BETWEEN -2 AND 5),
    at TEXT NOT NULL,
    model_version TEXT NOT NULL,
    remote_addr TEXT NOT NULL,
    PRIMARY KEY (detectid, reviewer)
);
CREATE TABLE skips (
    detectid INTEGER NOT NULL,
    reviewer TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (detectid, reviewer)
);
CREATE TABLE actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reviewer TEXT NOT NULL,
    detectid INTEGER NOT NULL,
    vis_class INTEGER NOT NULL,
    previous INTEGER,
    at TEXT NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0,
    model_version TEXT NOT NULL,
    remote_addr TEXT NOT NULL
);
CREATE TABLE reviewers (
    name TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    issued TEXT NOT NULL,
    revoked TEXT
);
CREATE TABLE sessions (
    key_sha256 TEXT PRIMARY KEY,
    reviewer TEXT NOT NULL,
    access TEXT NOT NULL CHECK (access IN ('name', 'link')),
    created TEXT NOT NULL,
    remote_addr TEXT NOT NULL
);
CREATE INDEX votes_by_reviewer ON votes (reviewer);
CREATE INDEX skips_by_reviewer ON skips (reviewer);
CREATE INDEX actions_by_reviewer ON actions (reviewer, undone, id);
CREATE INDEX sessions_by_reviewer ON sessions (reviewer);
PRAGMA user_version = {SCHEMA_VERSION};
"""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def reviewer_name(text: str) -> str | None:
    """A usable reviewer name (trimmed), or None."""
    name = text.strip()
    return name if REVIEWER.fullmatch(name) else None


@dataclass(frozen=True)
class Vote:
    detectid: int
    reviewer: str
    vis_class: int
    at: str


class VoteStore:
    """One SQLite file; a connection per thread (sqlite3 connections stay in their thread).

    ``model_version`` is what votes cast through this store were cast against: the version
    that scored the catalogue being reviewed.
    """

    def __init__(self, path: Path, model_version: str = "") -> None:
        self.path = path
        self.model_version = model_version
        self.local = threading.local()

    @classmethod
    def open(cls, path: Path, night: dict[str, str]) -> "VoteStore":
        """Create the database for ``night`` or reopen it; refuse one of another night or of
        another schema version."""
        store = cls(path, night.get("model_version", ""))
        try:
            with store.write() as db:  # two servers starting at once: one creates, one reads
                if not db.execute("SELECT name FROM sqlite_master").fetchall():
                    for statement in SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                store.check_schema()
                known = dict(db.execute("SELECT key, value FROM night").fetchall())
                if not known:
                    db.executemany("INSERT INTO night VALUES (?, ?)", sorted(night.items()))
            store.connection().execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as error:
            store.close()
            raise ReviewError(f"{path}: not a review database ({error})") from None
        except ReviewError:
            store.close()
            raise
        if known and known.get("fingerprint") != night["fingerprint"]:
            store.close()
            raise ReviewError(
                f"{path}: belongs to another night ({known.get('file', '?')}, "
                f"{known.get('detections', '?')} detections); use another --db"
            )
        return store

    @classmethod
    def existing(cls, path: Path) -> "VoteStore":
        """An existing review database of this schema version, for export and access."""
        if not path.is_file():
            raise ReviewError(f"{path}: no such file")
        store = cls(path)
        try:
            store.check_schema()
            store.night()
        except sqlite3.DatabaseError:
            store.close()
            raise ReviewError(f"{path}: not a review database") from None
        except ReviewError:
            store.close()
            raise
        return store

    def check_schema(self) -> None:
        """Refuse, in one line, a database whose votes this version would have to guess at."""
        db = self.connection()
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if version == 0 and "votes" in tables:
            version = 1  # written before the schema had a version
        if version == SCHEMA_VERSION:
            return
        if version == 0:
            raise ReviewError(f"{self.path}: not a review database (no votes table)")
        age = "an older" if version < SCHEMA_VERSION else "a newer"
        advice = (
            "its votes lack the model version and address each was cast with; export it with "
            "the linescore that wrote it, or review into a new --db"
            if version < SCHEMA_VERSION
            else "use that linescore"
        )
        raise ReviewError(
            f"{self.path}: written by {age} linescore review (schema {version}; this one reads "
            f"schema {SCHEMA_VERSION}): {advice}"
        )

    def connection(self) -> sqlite3.Connection:
        db = getattr(self.local, "db", None)
        if db is None:
            # BEGIN by hand; the timeout is SQLite's busy timeout: a writer waits its turn
            db = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None)
            db.execute("PRAGMA synchronous=FULL")
            self.local.db = db
        return db

    def close(self) -> None:
        """Close this thread's connection (a thread's own closes when the thread ends); before
        a fork, so that the worker opens its own."""
        db = getattr(self.local, "db", None)
        if db is not None:
            db.close()
            self.local.db = None

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One transaction, holding the write lock from its first read: committed or not at all."""
        db = self.connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def night(self) -> dict[str, str]:
        return dict(self.connection().execute("SELECT key, value FROM night").fetchall())

    def vote(
        self, detectid: int, reviewer: str, vis_class: int, remote_addr: str = IN_PROCESS
    ) -> None:
        """Record (or replace) the reviewer's vote with its audit, and log it for undo, in one
        transaction."""
        if vis_class not in VISUAL_CLASSES:
            raise ValueError(f"visual class {vis_class} is not one of {VISUAL_CLASSES}")
        at = now()
        with self.write() as db:
            row = db.execute(
                "SELECT vis_class FROM votes WHERE detectid = ? AND reviewer = ?",
                (detectid, reviewer),
            ).fetchone()
            db.execute(
                "INSERT OR REPLACE INTO votes VALUES (?, ?, ?, ?, ?, ?)",
                (detectid, reviewer, vis_class, at, self.model_version, remote_addr),
            )
            db.execute(
                "INSERT INTO actions (reviewer, detectid, vis_class, previous, at, "
                "model_version, remote_addr) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    reviewer,
                    detectid,
                    vis_class,
                    row[0] if row else None,
                    at,
                    self.model_version,
                    remote_addr,
                ),
            )

    def skip(self, detectid: int, reviewer: str) -> None:
        with self.write() as db:
            db.execute("INSERT OR REPLACE INTO skips VALUES (?, ?, ?)", (detectid, reviewer, now()))

    def undo(self, reviewer: str, remote_addr: str = IN_PROCESS) -> int | None:
        """Take back the reviewer's last vote not yet undone; its detectid, or None. A vote it
        brings back is audited as cast now, from here."""
        with self.write() as db:
            last = db.execute(
                "SELECT id, detectid, previous FROM actions WHERE reviewer = ? AND undone = 0 "
                "ORDER BY id DESC LIMIT 1",
                (reviewer,),
            ).fetchone()
            if last is None:
                return None
            action, detectid, previous = last
            if previous is None:
                db.execute(
                    "DELETE FROM votes WHERE detectid = ? AND reviewer = ?", (detectid, reviewer)
                )
            else:
                db.execute(
                    "UPDATE votes SET vis_class = ?, at = ?, model_version = ?, remote_addr = ? "
                    "WHERE detectid = ? AND reviewer = ?",
                    (previous, now(), self.model_version, remote_addr, detectid, reviewer),
                )
            db.execute("UPDATE actions SET undone = 1 WHERE id = ?", (action,))
            db.execute(
                "DELETE FROM skips WHERE detectid = ? AND reviewer = ?", (detectid, reviewer)
            )
        return int(detectid)

    def count(self) -> int:
        """How many votes there are, without reading them."""
        return int(self.connection().execute("SELECT COUNT(*) FROM votes").fetchone()[0])

    def vote_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Detectids with votes and how many each has."""
        rows = (
            self.connection()
            .execute("SELECT detectid, COUNT(*) FROM votes GROUP BY detectid")
            .fetchall()
        )
        table = np.array(rows, dtype=np.int64).reshape(-1, 2)
        return table[:, 0], table[:, 1]

    def seen_by(self, reviewer: str) -> np.ndarray:
        """Detectids the reviewer has voted on or skipped: never offered to them again."""
        rows = (
            self.connection()
            .execute(
                "SELECT detectid FROM votes WHERE reviewer = ? UNION "
                "SELECT detectid FROM skips WHERE reviewer = ?",
                (reviewer, reviewer),
            )
            .fetchall()
        )
        return np.array([row[0] for row in rows], dtype=np.int64)

    def votes(self) -> list[Vote]:
        rows = (
            self.connection()
            .execute(
                "SELECT detectid, reviewer, vis_class, at FROM votes ORDER BY detectid, reviewer"
            )
            .fetchall()
        )
        return [Vote(*row) for row in rows]

    def model_versions(self) -> list[str]:
        """The model versions the votes were cast against."""
        rows = self.connection().execute("SELECT DISTINCT model_version FROM votes").fetchall()
        return sorted(row[0] for row in rows)

    def votes_on(self, detectid: int) -> list[Vote]:
        rows = (
            self.connection()
            .execute(
                "SELECT detectid, reviewer, vis_class, at FROM votes WHERE detectid = ? "
                "ORDER BY reviewer",
                (detectid,),
            )
            .fetchall()
        )
        return [Vote(*row) for row in rows]
