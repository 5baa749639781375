"""Shared fixtures: a small simulated labelled file and a tiny model trained from it end to end."""

from pathlib import Path

import numpy as np
import pytest

from service.bundle import ModelBundle
from training.cli import main as training_cli
from training.dataset import read_labelled, write_dataset
from training.simulators.a import simulate
from training.simulators.simulated_set import class_counts_for

TINY_TOTAL = 600


@pytest.fixture(scope="session")
def tiny_file(tmp_path_factory) -> Path:
    """A few hundred simulated cutouts in the FiberImages + Labels layout (every class present)."""
    counts = {c: max(n, 30) for c, n in class_counts_for(TINY_TOTAL).items()}
    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    return write_dataset(path, simulate(counts, seed=11))


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_file, tmp_path_factory) -> Path:
    """A complete model directory trained by ``python -m training train`` on the tiny file."""
    out = tmp_path_factory.mktemp("models") / "0.0.1"
    assert (
        training_cli(
            [
                "train",
                "--data",
                str(tiny_file),
                "--out",
                str(out),
                "--version",
                "0.0.1",
                "--epochs",
                "6",
            ]
        )
        == 0
    )
    return out


@pytest.fixture
def tiny_bundle(tiny_model_dir) -> ModelBundle:
    return ModelBundle.load(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_data(tiny_file):
    return read_labelled(tiny_file)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def tiny_runtime(tiny_model_dir):
    """A loaded, warm runtime on the tiny model, shared: loading is the slow part."""
    from service.config import Settings
    from service.runtime import ModelRuntime

    runtime = ModelRuntime(Settings(model_dir=tiny_model_dir, max_batch=64, warmup_batch=8))
    runtime.load()
    assert runtime.ready, runtime.error
    return runtime


@pytest.fixture
def app(tiny_runtime):
    """A fresh Flask app per test, as in Flask's tutorial, around the shared runtime."""
    from service.web.app import create_app

    return create_app(
        tiny_runtime.settings.model_copy(update={"max_body_bytes": 2**20}), runtime=tiny_runtime
    )


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def novel_cutout(tiny_data) -> np.ndarray:
    """A clean real line (9, 32) with a bright column across every row: an artifact the tiny
    model never saw, so its novelty is 1 and it is flagged novel (tests assert it)."""
    cutout = tiny_data.im_sum[tiny_data.vis_class == 5][0, :, 34:66].copy()
    cutout[:, 14:18] += 1000.0
    return cutout
