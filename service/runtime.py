"""Per-worker model state. Created after gunicorn forks; loads, verifies and warms up in the
background so the worker answers /livez at once and /readyz only once it can really score.

ONNX Runtime sessions and numba state are not fork-safe, so nothing here runs in the master.
"""

import logging
import threading
from pathlib import Path

import numpy as np

from service.bundle import ModelBundle, newest_model_dir
from service.config import Settings
from service.contract import COLUMNS, ROWS
from service.dataplane import DataPlane
from service.errors import NotReadyError
from service.pipeline import Scorer

log = logging.getLogger(__name__)


def cap_thread_pools(threads: int) -> None:
    """Cap BLAS/OpenMP (threadpoolctl) and numba; ONNX Runtime is capped in its session."""
    import numba
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def warm_up(scorer: Scorer, size: int) -> None:
    """Run every stage once on noise, a batch and a single cutout: numba compiles here."""
    cutouts = np.random.default_rng(0).normal(size=(size, ROWS, COLUMNS)).astype(np.float32)
    scorer.score(cutouts)
    scorer.score(cutouts[:1])


class ModelRuntime:
    """Loading, ready or failed; hands out the data plane only when ready."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = "loading"
        self.error: str | None = None
        self.draining = False
        self._plane: DataPlane | None = None
        self.lock = threading.Lock()  # one scoring pass at a time per worker: cores are capped

    @property
    def model_dir(self) -> Path:
        return self.settings.model_dir or newest_model_dir(self.settings.models_root)

    def start(self) -> None:
        threading.Thread(target=self.load, name="model-loader", daemon=True).start()

    def load(self) -> None:
        try:
            cap_thread_pools(self.settings.threads)
            model_dir = self.model_dir
            bundle = ModelBundle.load(model_dir, intra_op_threads=self.settings.threads)
            scorer = Scorer(bundle)
            warm_up(scorer, self.settings.warmup_batch)
            self._plane = DataPlane(scorer)
            self.state = "ready"
            log.info("model %s from %s verified, loaded and warm", bundle.version, model_dir)
        except Exception as error:  # any failure keeps the worker unready, with the reason
            self.state, self.error = "failed", f"{type(error).__name__}: {error}"
            log.error("model failed to load: %s", self.error)

    @property
    def ready(self) -> bool:
        return self.state == "ready" and not self.draining

    @property
    def plane(self) -> DataPlane:
        if self._plane is None:
            raise NotReadyError(
                f"model is {self.state}" + (f": {self.error}" if self.error else "")
            )
        return self._plane
