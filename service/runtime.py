"""Per-worker model state. Created after gunicorn forks; loads, verifies and warms up in the
background so the worker answers /livez at once and /readyz only once it can really score.

ONNX Runtime sessions and numba state are not fork-safe, so nothing here runs in the master.
"""

import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

from service.bundle import ModelBundle
from service.codec import Detection
from service.config import Settings
from service.contract import COLUMNS, ROWS
from service.dataplane import DataPlane, Outcome
from service.errors import NotReadyError
from service.manifest import resolve_model_dir
from service.pipeline import Scorer

log = logging.getLogger(__name__)


def cap_thread_pools(threads: int) -> None:
    """Cap BLAS/OpenMP (threadpoolctl), faiss and, if loaded, numba, in the calling thread.

    ONNX Runtime is capped in its session. numba is only imported by the reference UMAP path.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
    # threadpoolctl finds faiss's bundled libgomp too; faiss's own setter does not rely on that.
    faiss.omp_set_num_threads(threads)
    numba = sys.modules.get("numba")
    if numba is not None:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def warm_up(scorer: Scorer, size: int) -> None:
    """Run every stage once on noise, a batch and a single cutout: numba compiles here."""
    cutouts = np.random.default_rng(0).normal(size=(size, ROWS, COLUMNS)).astype(np.float32)
    scorer.score(cutouts)
    scorer.score(cutouts[:1])


class ModelRuntime:
    """Loading, ready or failed; hands out the data plane only when ready."""

    def __init__(
        self, settings: Settings, on_ready: Callable[[bool], None] = lambda ready: None
    ) -> None:
        self.settings = settings
        self.state = "loading"
        self.error: str | None = None
        self.on_ready = on_ready
        self._plane: DataPlane | None = None
        self._lock = threading.Lock()  # one scoring pass at a time per worker: cores are capped
        self._capped = threading.local()

    @property
    def model_dir(self) -> Path:
        return resolve_model_dir(self.settings.model_dir, self.settings.models_root)

    def start(self) -> None:
        threading.Thread(target=self.load, name="model-loader", daemon=True).start()

    def load(self) -> None:
        try:
            model_dir = self.model_dir
            bundle = ModelBundle.load(
                model_dir,
                intra_op_threads=self.settings.threads,
                umap_transform=self.settings.umap_transform,
            )
            scorer = Scorer(bundle)
            cap_thread_pools(self.settings.threads)
            warm_up(scorer, self.settings.warmup_batch)
            self._plane = DataPlane(scorer)
            self.on_ready(True)  # metrics first: a worker takes connections once state is ready
            self.state = "ready"
            log.info("model %s from %s verified, loaded and warm", bundle.version, model_dir)
        except Exception as error:  # any failure keeps the worker unready, with the reason
            self.state, self.error = "failed", f"{type(error).__name__}: {error}"
            log.error("model failed to load: %s", self.error)
            self.on_ready(False)

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def score(self, detections: list[Detection]) -> Outcome:
        """Score on this worker's plane; 503 until ready. Thread pools are capped per thread."""
        plane = self.plane
        if not getattr(self._capped, "done", False):
            cap_thread_pools(self.settings.threads)
            self._capped.done = True
        with self._lock:
            return plane.score(detections)

    @property
    def plane(self) -> DataPlane:
        if self._plane is None:
            if self.state == "failed":
                raise NotReadyError(f"model failed to load: {self.error}")
            raise NotReadyError("model is still loading")
        return self._plane
