"""``linescore labels export``: the review's votes as the ``Labels`` table training reads.

One row per detection with a consensus: ``detectid``, ``vis_class`` and the votes per visual
class (``votes``, in the order of the ``classes`` attribute) and in all (``n_votes``). The rule
is written into the file's metadata (``consensus_rule``), with the night the votes belong to and
the model versions they were cast against. A database of another schema version (one written
before votes kept their audit) is refused in one line, not read by guessing.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from service.client.review.night import ReviewError
from service.client.review.votes import Vote, VoteStore
from service.domain import VISUAL_CLASSES

LABEL_TABLE = "Labels"


def rule(min_votes: int) -> str:
    return (
        "majority of votes: the visual class with strictly more votes than any other; ties and "
        f"detections with fewer than {min_votes} vote(s) are left out"
    )


@dataclass(frozen=True)
class Consensus:
    detectid: np.ndarray  # (K,) int64
    vis_class: np.ndarray  # (K,) int8
    votes: np.ndarray  # (K, 8) votes per class, in VISUAL_CLASSES order


def consensus(votes: list[Vote], min_votes: int = 1) -> Consensus:
    """The detections whose votes agree by :func:`rule`, sorted by detectid."""
    ids = np.array([vote.detectid for vote in votes], dtype=np.int64)
    classes = np.array([VISUAL_CLASSES.index(vote.vis_class) for vote in votes], dtype=np.int64)
    detectid, where = np.unique(ids, return_inverse=True)
    tally = np.zeros((len(detectid), len(VISUAL_CLASSES)), dtype=np.int64)
    np.add.at(tally, (where, classes), 1)
    top = np.sort(tally, axis=1)
    clear = (tally.sum(axis=1) >= min_votes) & (top[:, -1] > top[:, -2])
    winner = np.asarray(VISUAL_CLASSES, dtype=np.int8)[tally.argmax(axis=1)]
    return Consensus(detectid[clear], winner[clear], tally[clear])


def export(db: Path, out: Path, min_votes: int = 1) -> int:
    """Write the Labels file; the number of labelled detections."""
    store = VoteStore.existing(db)  # refuses another schema version
    votes = store.votes()
    agreed = consensus(votes, min_votes)
    if len(agreed.detectid) == 0:
        raise ReviewError(
            f"{db}: no detection has a consensus label ({len(votes)} votes; {rule(min_votes)})"
        )
    table = np.empty(
        len(agreed.detectid),
        dtype=[
            ("detectid", "<i8"),
            ("vis_class", "<i2"),
            ("n_votes", "<i2"),
            ("votes", "<i2", (len(VISUAL_CLASSES),)),
        ],
    )
    table["detectid"], table["vis_class"] = agreed.detectid, agreed.vis_class
    table["n_votes"], table["votes"] = agreed.votes.sum(axis=1), agreed.votes
    night = store.night()
    partial = out.with_name(f".{out.name}.partial")
    with h5py.File(partial, "w") as handle:
        dataset = handle.create_dataset(LABEL_TABLE, data=table)
        dataset.attrs["consensus_rule"] = rule(min_votes)
        dataset.attrs["classes"] = np.asarray(VISUAL_CLASSES, dtype=np.int8)
        handle.attrs["source_db"] = str(db)
        handle.attrs["night_file"] = night.get("file", "")
        handle.attrs["night_fingerprint"] = night.get("fingerprint", "")
        handle.attrs["reviewers"] = ",".join(sorted({vote.reviewer for vote in votes}))
        handle.attrs["vote_model_versions"] = ",".join(store.model_versions())
        handle.attrs["exported"] = datetime.now(UTC).isoformat(timespec="seconds")
    partial.replace(out)
    return len(agreed.detectid)
