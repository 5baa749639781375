"""What every simulator returns: a labelled set in the shape of a HETDEX FiberImages table.

Shared by the simulators (``training.simulators``) and by ``training.dataset``, which writes it
to HDF5, so a second simulator needs nothing of the first.
"""

from dataclasses import dataclass, field

import numpy as np

from service.domain import DR1_CLASS_COUNTS, VISUAL_CLASSES

TOP_FIBERS = 4
"""The four highest-weight fibers stored in ``im_array``."""


def class_counts_for(total: int, mix: dict[int, int] = DR1_CLASS_COUNTS) -> dict[int, int]:
    """Scale a class mix to exactly ``total`` detections (largest remainders)."""
    weights = np.array([mix.get(c, 0) for c in VISUAL_CLASSES], dtype=float)
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(int)
    order = np.argsort(exact - counts)[::-1]
    counts[order[: total - counts.sum()]] += 1
    return {c: int(n) for c, n in zip(VISUAL_CLASSES, counts, strict=True) if n > 0}


@dataclass
class SimulatedSet:
    """A labelled set in the shape of a HETDEX FiberImages table plus its labels."""

    detectid: np.ndarray
    im_wave: np.ndarray
    im_sum: np.ndarray
    vis_class: np.ndarray
    sn: np.ndarray
    wave: np.ndarray
    family: np.ndarray
    im_array: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.detectid)
