"""``make models``: simulate the training and held-out sets, train, evaluate, report.

Everything follows from the seeds below, so a clean clone rebuilds the same artifacts and the
packaged held-out metrics can be re-measured by regenerating the held-out set from the manifest.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from training.dataset import read_labelled, write_dataset
from training.ensemble import UmapConfig
from training.evaluate import Evaluation, evaluate
from training.fit import train_bundle, write_manifest
from training.gallery import write_gallery
from training.report import write_report
from training.simulate import simulate
from training.simulated_set import class_counts_for
from training.train import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulatedSpec:
    """A reproducible simulated set: DR1 class mix scaled to ``total``."""

    total: int
    seed: int
    first_detectid: int

    def describe(self) -> dict:
        return {**self.__dict__, "class_counts": class_counts_for(self.total)}

    def generate(self, progress: bool = True):
        return simulate(
            class_counts_for(self.total),
            self.seed,
            first_detectid=self.first_detectid,
            progress=progress,
        )

    def path(self, workdir: Path, name: str) -> Path:
        return Path(workdir) / f"{name}-seed{self.seed}-n{self.total}.h5"


TRAIN_SPEC = SimulatedSpec(total=80_000, seed=2020, first_detectid=1_000_500_000)
HELDOUT_SPEC = SimulatedSpec(total=20_000, seed=2026, first_detectid=1_000_600_000)
DEFAULT_TRAINING, DEFAULT_UMAP = TrainConfig(), UmapConfig()


def write_simulated(spec: SimulatedSpec, workdir: Path, name: str) -> Path:
    """Always regenerated (about 30 s): a cached file could predate a simulator change."""
    return write_dataset(spec.path(workdir, name), spec.generate())


def record_heldout(
    model_dir: Path, manifest: dict, data, description: str, extra: dict
) -> Evaluation:
    """Evaluate the packaged model on held-out data and store the metrics in the manifest."""
    evaluation = evaluate(model_dir, data, umap_transform="fast")
    manifest["heldout"] = {
        "description": description,
        **extra,
        "umap_transform": "fast",
        "metrics": evaluation.metrics(),
    }
    return evaluation


def publish(model_dir: Path, manifest: dict, evaluation: Evaluation) -> dict:
    write_manifest(model_dir, manifest)
    write_report(model_dir, manifest, evaluation)
    return manifest


def build(
    version: str,
    workdir: Path,
    models_root: Path = Path("models"),
    train_spec: SimulatedSpec = TRAIN_SPEC,
    heldout_spec: SimulatedSpec = HELDOUT_SPEC,
    train_config: TrainConfig = DEFAULT_TRAINING,
    umap_config: UmapConfig = DEFAULT_UMAP,
    command: str = "make models",
) -> dict:
    started = time.perf_counter()
    model_dir = Path(models_root) / version
    train_path = write_simulated(train_spec, workdir, "train")
    heldout_path = write_simulated(heldout_spec, workdir, "heldout")
    manifest = train_bundle(
        read_labelled(train_path), model_dir, version, train_config, umap_config
    )
    manifest["training"]["simulator"] = train_spec.describe()
    write_gallery(model_dir / "gallery.png")
    description = (
        f"simulated with seed {heldout_spec.seed} (DR1 class mix), never seen in "
        "training or threshold selection"
    )
    evaluation = record_heldout(
        model_dir,
        manifest,
        read_labelled(heldout_path),
        description,
        {"simulator": heldout_spec.describe()},
    )
    wall_time = round(time.perf_counter() - started, 1)  # everything but writing the report
    manifest["build"] = {"command": command, "wall_time_s": wall_time}
    return publish(model_dir, manifest, evaluation)
