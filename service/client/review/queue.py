"""The review queue: detections in the order a label teaches the model most, one at a time.

The order is ``linescore labels suggest``'s (:func:`service.client.suggest.rank`), computed
once; the next item is the first detection of it
that passes the filters, that this reviewer has neither voted on nor skipped, and that has fewer
than ``overlap`` votes counting the detections now shown to other reviewers (leases), so that
several reviewers at once get different detections, each seen by ``overlap`` of them.
"""

import threading
import time
from dataclasses import dataclass
from urllib.parse import urlencode

import numpy as np

from service.client.review.night import Catalogue, Night
from service.client.review.votes import VoteStore

LEASE_SECONDS = 600.0  # a detection shown to a reviewer is held for them this long


def flag_column(catalogue: Catalogue, flag: str) -> np.ndarray:
    if flag not in catalogue.flag_names:
        return np.zeros(len(catalogue), dtype=bool)
    return catalogue.flags[:, catalogue.flag_names.index(flag)]


@dataclass(frozen=True)
class Filters:
    """What the reviewer asked to see; every field optional."""

    decision: str = ""
    stage: str = ""
    flag: str = ""
    min_score: float | None = None
    max_score: float | None = None

    @classmethod
    def from_args(cls, args) -> "Filters":
        def number(name: str) -> float | None:
            try:
                value = float(args.get(name, ""))
            except ValueError:
                return None
            return value if np.isfinite(value) else None

        return cls(
            decision=args.get("decision", "") if args.get("decision") in ("real", "fake") else "",
            stage=args.get("stage", "") if args.get("stage") in ("cnn", "svm") else "",
            flag=args.get("flag", ""),
            min_score=number("min_score"),
            max_score=number("max_score"),
        )

    def query(self) -> str:
        """The filters as a query string, to keep them across votes."""
        pairs = {
            "decision": self.decision,
            "stage": self.stage,
            "flag": self.flag,
            "min_score": "" if self.min_score is None else f"{self.min_score:g}",
            "max_score": "" if self.max_score is None else f"{self.max_score:g}",
        }
        return urlencode({key: value for key, value in pairs.items() if value})

    def mask(self, catalogue: Catalogue) -> np.ndarray:
        keep = np.ones(len(catalogue), dtype=bool)
        if self.decision:
            keep &= catalogue.decision == self.decision
        if self.stage:
            keep &= catalogue.stage == self.stage
        if self.flag:
            keep &= flag_column(catalogue, self.flag)
        if self.min_score is not None:
            keep &= catalogue.cnn_score >= self.min_score
        if self.max_score is not None:
            keep &= catalogue.cnn_score <= self.max_score
        return keep


class ReviewQueue:
    def __init__(self, night: Night, store: VoteStore, order: np.ndarray, overlap: int) -> None:
        self.night, self.store, self.order, self.overlap = night, store, order, overlap
        self.lock = threading.Lock()
        self.leases: dict[str, tuple[int, float]] = {}  # reviewer -> (index, when)

    def next_for(self, reviewer: str, filters: Filters) -> tuple[int | None, int]:
        """The reviewer's next detection (catalogue index, None when none is left) and how many
        detections are left for them under these filters."""
        catalogue = self.night.catalogue
        with self.lock:
            now = time.monotonic()
            self.leases = {
                who: lease for who, lease in self.leases.items() if now - lease[1] < LEASE_SECONDS
            }
            taken = np.zeros(len(catalogue), dtype=np.int64)
            voted, counts = self.store.vote_counts()
            known = np.isin(voted, catalogue.detectid)
            taken[self.night.indices_of(voted[known])] = counts[known]
            for who, (index, _) in self.leases.items():
                if who != reviewer:
                    taken[index] += 1
            seen = self.store.seen_by(reviewer)
            open_ = filters.mask(catalogue) & (taken < self.overlap)
            open_[self.night.indices_of(seen[np.isin(seen, catalogue.detectid)])] = False
            own = self.leases.get(reviewer)
            if own is not None and open_[own[0]]:
                index = own[0]  # a reload shows the same detection
            else:
                waiting = self.order[open_[self.order]]
                if len(waiting) == 0:
                    self.leases.pop(reviewer, None)
                    return None, 0
                index = int(waiting[0])
            self.leases[reviewer] = (index, now)
            return index, int(open_.sum())

    def release(self, reviewer: str) -> None:
        """The reviewer answered (or skipped) what they were shown."""
        with self.lock:
            self.leases.pop(reviewer, None)
