"""Does ``adapt`` learn from a night's labels? Learning curves on simulators the parent never saw.

For a simulator the packaged model was not trained on (C, D), three sets of that simulator at
the DR1 class mix play the parts a real night would:

- the *night* (seed ``NIGHT_SEED``): scored by the parent; labels are drawn from its truth in a
  strategy's order (``suggest``, random, uncertainty alone) and ``adapt`` learns from them and
  from the rest of the night, unlabelled;
- a fresh *test night* (seed ``experiments.TEST_SEED``, the same set ``experiment unseen``
  scores): every number is measured on it, through the serving path;
- the *ceiling*: a model trained from scratch on 50,000 of the simulator's own labels, so each
  number reads as a share of what is possible.

Forgetting shows on held-out sets of the parent's own training simulators, whose families the
night lacks: the adapted model must not lose there what it gains on the night.
"""

import json
import logging
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import h5py
import numpy as np

from service.client.review.night import Catalogue
from service.client.suggest import Thresholds, rank
from service.flags import NOVEL
from training import metrics
from training.adapt import AdaptConfig, AdaptRefusedError, adapt
from training.build import SimulatedSpec
from training.dataset import FIBER_TABLE, LABEL_TABLE, LabelledCutouts, read_images
from training.ensemble import UmapConfig
from training.evaluate import evaluate
from training.experiments import FIRST_DETECTID, TEST_SEED, TRAIN_SEED, simulated, summarise
from training.fit import train_bundle, write_manifest
from training.train import TrainConfig

log = logging.getLogger(__name__)

NIGHT_SEED = 33
NIGHT_OFFSET, TEST_OFFSET = 60_000_000, 50_000_000
NIGHT_SIZE = TEST_SIZE = 20_000
CEILING_SIZE = 50_000
CEILING_TRAINING = TrainConfig(epochs=8, threads=1)


def test_night(simulator: str, size: int = TEST_SIZE):
    return simulated(simulator, size, TEST_SEED, offset=TEST_OFFSET)


def ceiling(simulator: str, workdir: Path, size: int = CEILING_SIZE) -> dict:
    """A model trained on ``size`` of the simulator's own labels, on its fresh test night."""
    model_dir = Path(workdir) / f"ceiling-{simulator}"
    data = simulated(simulator, size, TRAIN_SEED)
    train_bundle(data, model_dir, "0.0.0-ceiling", CEILING_TRAINING, UmapConfig(sample=3000))
    evaluation = evaluate(model_dir, test_night(simulator))
    return {
        "simulator": simulator,
        "train_size": size,
        "training": CEILING_TRAINING.describe(),
        "oracle_threshold_fom": oracle_threshold_fom(evaluation),
        **summarise(evaluation),
    }


def oracle_threshold_fom(evaluation) -> float:
    """The CNN's FoM on the test night at its best threshold there: an upper bound on any
    threshold choice (reported beside the ceiling, never used to choose)."""
    score, truth = evaluation.scores.cnn_score, evaluation.truth
    return metrics.fom(truth, score >= metrics.best_single_threshold(score, truth))


def cached(path: Path, compute) -> dict:
    """The JSON at ``path`` if present (a finished run of the same command), else computed."""
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=float) + "\n")
    return result


EXPERIMENT_ADAPT = AdaptConfig(threads=1)  # two curves run side by side on two cores
STRATEGIES = ("suggest", "random", "uncertainty")
LABEL_COUNTS = (0, 100, 250, 500, 1000, 2000)
FORGETTING_SIZE = 6000


def night_catalogue(model_dir: Path, data: LabelledCutouts) -> tuple[Catalogue, Thresholds]:
    """The night as ``linescore score-file`` would catalogue it (scored through the serving
    path), and the model's thresholds: what ``labels suggest`` reads."""
    evaluation = evaluate(model_dir, data)
    scores = evaluation.scores
    flags = scores.novel[:, None]
    catalogue = Catalogue(
        path=Path(f"{data.source}.csv"),
        detectid=data.detectid,
        cnn_score=scores.cnn_score.astype(np.float64),
        umap=scores.umap.astype(np.float64),
        svm_score=scores.svm_score,
        novelty=scores.novelty.astype(np.float64),
        decision=np.where(scores.real, "real", "fake"),
        stage=np.where(scores.decided_by_svm, "svm", "cnn"),
        flag_names=(NOVEL,),
        flags=flags,
        model_version=json.loads((model_dir / "manifest.json").read_text())["version"],
        errors=0,
    )
    return catalogue, Thresholds(evaluation.low, evaluation.high, evaluation.cnn_alone)


def strategy_order(
    strategy: str, catalogue: Catalogue, thresholds: Thresholds, seed: int
) -> np.ndarray:
    if strategy == "suggest":
        return rank(catalogue, thresholds, seed).order
    if strategy == "random":
        return np.random.default_rng(seed).permutation(len(catalogue))
    if strategy == "uncertainty":  # nearest the CNN's threshold first
        return np.lexsort((catalogue.detectid, np.abs(catalogue.cnn_score - thresholds.cnn_alone)))
    raise ValueError(f"unknown strategy {strategy!r}")


def write_labels(path: Path, data: LabelledCutouts) -> Path:
    """The labels as ``linescore labels export`` writes them (detectid, vis_class)."""
    table = np.empty(len(data), dtype=[("detectid", "<i8"), ("vis_class", "<i2")])
    table["detectid"], table["vis_class"] = data.detectid, data.vis_class
    with h5py.File(path, "w") as handle:
        handle.create_dataset(LABEL_TABLE, data=table)
    return path


def point(evaluation, forgetting: dict[str, LabelledCutouts], model_dir: Path) -> dict:
    """What one model does on the test night, and on held-out sets of the parent's training
    simulators (families the night lacks: forgetting shows there), per family."""
    scores, truth = evaluation.scores, evaluation.truth
    band = (scores.cnn_score >= evaluation.low) & (scores.cnn_score < evaluation.high)
    result = summarise(evaluation)
    result["oracle_threshold_fom"] = oracle_threshold_fom(evaluation)
    result["band_cnn_call_accuracy"] = (
        float(np.mean((scores.cnn_score[band] >= evaluation.cnn_alone) == truth[band]))
        if band.any()
        else float("nan")
    )
    result["forgetting"] = {}
    for name, data in forgetting.items():
        held = evaluate(model_dir, data)
        right = held.truth == held.scores.real
        result["forgetting"][name] = {
            "fom": metrics.fom(held.truth, held.scores.real),
            "family_accuracy": {
                family: float(right[data.family == family].mean())
                for family in sorted(set(data.family.tolist()))
            },
        }
    return result


def curve(
    parent_dir: Path,
    simulator: str,
    workdir: Path,
    counts: tuple[int, ...] = LABEL_COUNTS,
    strategies: tuple[str, ...] = STRATEGIES,
    config: AdaptConfig = EXPERIMENT_ADAPT,
) -> dict:
    """FoM and low-S/N balanced accuracy on a fresh test night against the number of labels,
    per strategy (the baselines up to 1000 labels); every point cached as JSON under
    ``workdir`` (a rerun resumes)."""
    workdir = Path(workdir) / f"curve-{simulator}"
    workdir.mkdir(parents=True, exist_ok=True)
    night = simulated(simulator, NIGHT_SIZE, NIGHT_SEED, offset=NIGHT_OFFSET)
    night_file = write_dataset_images(workdir / "night.h5", night)
    test = test_night(simulator)
    parent_manifest = json.loads((Path(parent_dir) / "manifest.json").read_text())
    forgetting = {
        entry["simulator"]: simulated(entry["simulator"], FORGETTING_SIZE, TEST_SEED, TEST_OFFSET)
        for entry in parent_manifest["training"]["simulators"]
    }
    catalogue, thresholds = night_catalogue(Path(parent_dir), night)
    results: dict = {
        "simulator": simulator,
        "parent": parent_manifest["version"],
        "night": night.summary(),
        "test": test.summary(),
        "config": asdict(config),
        "points": {},
    }
    parent = cached(
        workdir / "parent.json",
        lambda: point(evaluate(Path(parent_dir), test), forgetting, Path(parent_dir)),
    )
    for strategy in strategies:
        order = strategy_order(strategy, catalogue, thresholds, config.seed)
        for n in counts if strategy == "suggest" else tuple(c for c in counts if c <= 1000):
            key = f"{strategy}-{n}"
            if n == 0:
                results["points"][key] = {"strategy": strategy, "labels": 0, **parent}
                continue

            def run(n=n, order=order, key=key) -> dict:
                chosen = night.subset(np.sort(order[:n]))
                labels = write_labels(workdir / f"{key}.labels.h5", chosen)
                model_dir = workdir / key / "0.0.0"  # a model folder is named by its version
                shutil.rmtree(model_dir.parent, ignore_errors=True)
                started = time.perf_counter()
                try:
                    manifest = adapt(
                        Path(parent_dir),
                        read_images(night_file),
                        [labels],
                        model_dir,
                        "0.0.0",
                        config,
                    )
                except AdaptRefusedError as refusal:  # the night keeps the parent
                    return {**parent, "refused": str(refusal)}
                seconds = time.perf_counter() - started
                result = point(evaluate(model_dir, test), forgetting, model_dir)
                shutil.rmtree(model_dir.parent)
                return {
                    **result,
                    "adapt_seconds": seconds,
                    "label_counts": manifest["lineage"]["label_counts"],
                    "threshold_choice": manifest["thresholds"]["choice"],
                    "gate": manifest["adaptation"]["gate"],
                    "stage2_manifest": manifest["stage2"],
                }

            results["points"][key] = {
                "strategy": strategy,
                "labels": n,
                **cached(workdir / f"{key}.json", run),
            }
            log.info("%s %s: %s", simulator, key, results["points"][key]["dr1"]["ensemble"])
    return results


def write_dataset_images(path: Path, data: LabelledCutouts) -> Path:
    """The night's FiberImages table alone (no labels in the file ``adapt`` reads)."""
    images = np.empty(
        len(data), dtype=[("detectid", "<i8"), ("im_sum", "<f4", data.im_sum.shape[1:])]
    )
    images["detectid"], images["im_sum"] = data.detectid, data.im_sum
    with h5py.File(path, "w") as handle:
        handle.create_dataset(FIBER_TABLE, data=images)
    return path


def run(parent_dir: Path, simulator: str, workdir: Path, out: Path) -> Path:
    """Ceiling and curves for one simulator, cached under ``workdir``; JSON to ``out``."""
    manifest = json.loads((Path(parent_dir) / "manifest.json").read_text())
    if simulator in {entry["simulator"] for entry in manifest["training"]["simulators"]}:
        raise ValueError(f"{parent_dir} was trained on simulator {simulator}: it is not unseen")
    workdir = Path(workdir)
    result = {
        "ceiling": cached(
            workdir / f"ceiling-{simulator}.json", lambda: ceiling(simulator, workdir)
        ),
        **curve(Path(parent_dir), simulator, workdir),
    }
    path = Path(out) / f"adapt-{simulator}.json"
    path.write_text(json.dumps(result, indent=1, default=float) + "\n")
    return path


DEVELOPMENT_NIGHT = "B"
DEVELOPMENT_VARIANTS: dict[str, AdaptConfig] = {
    "chosen (the command's settings)": EXPERIMENT_ADAPT,
    "the same, seed 1": replace(EXPERIMENT_ADAPT, seed=1),
    "labels 0.5 of each epoch (replay 0.5)": replace(EXPERIMENT_ADAPT, label_share=0.5),
    "AdaBN to the night": replace(EXPERIMENT_ADAPT, adabn=True),
    "self-training (labels 0.6, pseudo-labels 0.2)": replace(
        EXPERIMENT_ADAPT, label_share=0.6, pseudo_share=0.2
    ),
    "learning rate 3e-3": replace(EXPERIMENT_ADAPT, learning_rate=3e-3),
}


def development_parent(workdir: Path) -> Path:
    """A parent trained on simulator A alone (24,000 detections, 8 epochs), so that adapt's
    settings are chosen on a night of B and never on C or D, which the report measures."""
    model_dir = Path(workdir) / "dev-parent-A"
    if not (model_dir / "manifest.json").is_file():
        spec = SimulatedSpec(24_000, TRAIN_SEED, FIRST_DETECTID["A"], "A")
        manifest = train_bundle(
            simulated("A", spec.total, TRAIN_SEED),
            model_dir,
            "0.0.1",
            TrainConfig(epochs=8, threads=1),
            UmapConfig(sample=3000),
        )
        manifest["training"]["simulators"] = [spec.describe()]
        write_manifest(model_dir, manifest)
    return model_dir


def development(workdir: Path, out: Path) -> Path:
    """Each candidate setting of adapt at 500 suggest labels (and the chosen one with random
    labels) on a night of B, for a parent trained on A alone."""
    parent = development_parent(workdir)
    results = {}
    for name, config in DEVELOPMENT_VARIANTS.items():
        slug = "dev-" + "".join(ch if ch.isalnum() else "-" for ch in name)[:40]
        strategies = ("suggest", "random") if config is EXPERIMENT_ADAPT else ("suggest",)
        curve_result = curve(
            parent, DEVELOPMENT_NIGHT, workdir / slug, (0, 500), strategies, config
        )
        results[name] = {"config": asdict(config), "points": curve_result["points"]}
    path = Path(out) / "adapt-development.json"
    path.write_text(json.dumps(results, indent=1, default=float) + "\n")
    return path
