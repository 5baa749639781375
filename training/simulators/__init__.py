"""The simulators of labelled cutouts, one module each, and the registry that names them.

A (``a``) was written with the project; B, C and D (``b``, ``c``, ``d``) were each written
clean-room from the HETDEX brief alone, so that a model trained on some can be tested on others.
Each module's ``simulate(class_counts, seed, first_detectid=..., progress=...)`` returns a
:class:`~training.simulators.simulated_set.SimulatedSet`.
"""

import importlib
from collections.abc import Callable

from training.simulators.simulated_set import SimulatedSet

SIMULATORS = {
    "A": "training.simulators.a",
    "B": "training.simulators.b",
    "C": "training.simulators.c",
    "D": "training.simulators.d",
}
"""Simulator name -> module; a model's manifest records simulators by these names."""


def simulator(name: str) -> Callable[..., SimulatedSet]:
    """``simulate`` of one simulator, imported on use (training on A never needs B)."""
    if name not in SIMULATORS:
        raise KeyError(f"unknown simulator {name!r} (known: {', '.join(SIMULATORS)})")
    return importlib.import_module(SIMULATORS[name]).simulate
