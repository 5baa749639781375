"""A small scored night for the review tests, built without a server.

The night is simulated (every visual class, with the four brightest fibers) and written in the
FiberImages layout; its catalogue is the journal ``linescore score-file`` would write, scored
in-process by the packaged model through the same data plane the server uses.
"""

from pathlib import Path

import numpy as np
import pytest

from service.client.catalogue import Journal, result_row
from service.codec import detections_from_arrays
from tests.live import ROOT
from training.dataset import write_dataset
from training.simulators.a import simulate

MODELS = ROOT / "models"
PER_CLASS = 12


@pytest.fixture(scope="session")
def night_file(tmp_path_factory) -> Path:
    data = simulate({c: PER_CLASS for c in range(-2, 6)}, seed=77, with_fibers=True)
    return write_dataset(tmp_path_factory.mktemp("night") / "night.h5", data)


@pytest.fixture(scope="session")
def night_journal(night_file, tmp_path_factory) -> Path:
    """The score-file journal of ``night_file``, scored by the packaged model in-process."""
    import h5py

    from service.config import Settings
    from service.runtime import ModelRuntime

    with h5py.File(night_file) as handle:
        table = handle["FiberImages"][...]
    runtime = ModelRuntime(Settings(models_root=MODELS, warmup_batch=8))
    runtime.load()
    assert runtime.ready, runtime.error
    plane = runtime.plane
    arrays = {
        "cutout": table["im_sum"],
        "detectid": table["detectid"],
        "wave": table["im_wave"][:, 50],
    }
    results = plane.score(detections_from_arrays(arrays, len(table))).results
    out = tmp_path_factory.mktemp("catalogue") / "night.csv"
    with Journal.open(out, table["detectid"].astype(np.int64)) as journal:
        journal.append([result_row(r["detectid"], r, plane.model_version) for r in results])
    return out
