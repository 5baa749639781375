"""The reviewers' votes in SQLite: each vote is its own committed transaction.

WAL journal with ``synchronous=FULL``: once a vote's request has answered, a killed server or a
closed tab loses nothing. One vote per reviewer per detection (a later vote replaces that
reviewer's own); every vote is also logged with the vote it replaced, so ``undo`` restores it.
The database remembers which night it belongs to and refuses another. The primary keys index
by detection; the reviewer indexes keep each queue step and undo off a scan of every vote.
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
SCHEMA = """
CREATE TABLE IF NOT EXISTS night (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS votes (
    detectid INTEGER NOT NULL,
    reviewer TEXT NOT NULL,
    vis_class INTEGER NOT NULL CHECK (vis_class BETWEEN -2 AND 5),
    at TEXT NOT NULL,
    PRIMARY KEY (detectid, reviewer)
);
CREATE TABLE IF NOT EXISTS skips (
    detectid INTEGER NOT NULL,
    reviewer TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (detectid, reviewer)
);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reviewer TEXT NOT NULL,
    detectid INTEGER NOT NULL,
    vis_class INTEGER NOT NULL,
    previous INTEGER,
    at TEXT NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS votes_by_reviewer ON votes (reviewer);
CREATE INDEX IF NOT EXISTS skips_by_reviewer ON skips (reviewer);
CREATE INDEX IF NOT EXISTS actions_by_reviewer ON actions (reviewer, undone, id);
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
    """One SQLite file; a connection per thread (sqlite3 connections stay in their thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.local = threading.local()

    @classmethod
    def open(cls, path: Path, night: dict[str, str]) -> "VoteStore":
        """Create the database for ``night`` or reopen it; refuse one of another night."""
        store = cls(path)
        try:
            store.connection().execute("PRAGMA journal_mode=WAL")
            store.connection().executescript(SCHEMA)
            with store.write() as db:
                known = dict(db.execute("SELECT key, value FROM night").fetchall())
                if not known:
                    db.executemany("INSERT INTO night VALUES (?, ?)", sorted(night.items()))
        except sqlite3.DatabaseError as error:
            raise ReviewError(f"{path}: not a review database ({error})") from None
        if known and known.get("fingerprint") != night["fingerprint"]:
            raise ReviewError(
                f"{path}: belongs to another night ({known.get('file', '?')}, "
                f"{known.get('detections', '?')} detections); use another --db"
            )
        return store

    @classmethod
    def existing(cls, path: Path) -> "VoteStore":
        """An existing review database, for export."""
        if not path.is_file():
            raise ReviewError(f"{path}: no such file")
        store = cls(path)
        try:
            store.night()
        except sqlite3.DatabaseError:
            raise ReviewError(f"{path}: not a review database") from None
        return store

    def connection(self) -> sqlite3.Connection:
        db = getattr(self.local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)  # BEGIN by hand
            db.execute("PRAGMA synchronous=FULL")
            self.local.db = db
        return db

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

    def vote(self, detectid: int, reviewer: str, vis_class: int) -> None:
        """Record (or replace) the reviewer's vote, and log it for undo, in one transaction."""
        if vis_class not in VISUAL_CLASSES:
            raise ValueError(f"visual class {vis_class} is not one of {VISUAL_CLASSES}")
        at = now()
        with self.write() as db:
            row = db.execute(
                "SELECT vis_class FROM votes WHERE detectid = ? AND reviewer = ?",
                (detectid, reviewer),
            ).fetchone()
            db.execute(
                "INSERT OR REPLACE INTO votes VALUES (?, ?, ?, ?)",
                (detectid, reviewer, vis_class, at),
            )
            db.execute(
                "INSERT INTO actions (reviewer, detectid, vis_class, previous, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (reviewer, detectid, vis_class, row[0] if row else None, at),
            )

    def skip(self, detectid: int, reviewer: str) -> None:
        with self.write() as db:
            db.execute("INSERT OR REPLACE INTO skips VALUES (?, ?, ?)", (detectid, reviewer, now()))

    def undo(self, reviewer: str) -> int | None:
        """Take back the reviewer's last vote not yet undone; its detectid, or None."""
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
                    "UPDATE votes SET vis_class = ?, at = ? WHERE detectid = ? AND reviewer = ?",
                    (previous, now(), detectid, reviewer),
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
