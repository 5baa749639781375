"""The one timing helper of the benchmarks."""

import time
from collections.abc import Callable

import numpy as np


def median_seconds(call: Callable[[], object], repeats: int = 9) -> float:
    """Median wall seconds of ``call`` over ``repeats`` runs, after one untimed warm-up run."""
    call()
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        call()
        times.append(time.perf_counter() - begin)
    return float(np.median(times))
