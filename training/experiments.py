"""Does the model hold up on data it was not built from? Cross-simulator and leave-one-family-out.

Every run trains a complete model directory with :func:`training.fit.train_bundle` and scores
held-out sets through the serving path (:func:`training.evaluate.evaluate`), so a number here is
what the service would answer. The cross-simulator runs use A (``training.simulators.a``) and B
(``training.simulators.b``, written clean-room from the HETDEX brief alone).

- ``cross``: train on A, on B, on A+B; test on held-out A and held-out B; at the DR1 mix and
  at S/N 4.8-5.5; CNN alone and the ensemble; for each training variant (protocol and
  augmentation).
- ``lofo``: for each artifact family of A, train on A without it and test on it: what the
  decision, stage 2 and novelty do with an artifact never seen.
- ``unseen``: score a packaged model on a simulator it was never trained on (C,
  ``training.simulators.c``, written clean-room too, with artifact kinds neither A nor B renders):
  the closest thing here to a real night.

Results go to a JSON file (all numbers) and a Markdown file (the tables), both under ``--out``.
"""

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from training import metrics
from training.augment import Augmentation
from training.build import SimulatedSpec
from training.dataset import LabelledCutouts
from training.ensemble import UmapConfig
from training.evaluate import Evaluation, against_baselines, evaluate, stage2_summary
from training.fit import train_bundle
from training.report import comparison_table, difference_text, stage2_share
from training.train import TrainConfig

log = logging.getLogger(__name__)

FIRST_DETECTID = {"A": 1_100_000_000, "B": 2_100_000_000, "C": 3_100_000_000, "D": 4_100_000_000}
CROSS_SIMULATORS = ("A", "B")  # the packaged model's sources; C and D test it as unseen ones
TRAIN_SEED, TEST_SEED = 31, 32  # neither the packaged model's training nor held-out seeds
LOW_SNR = (4.8, 5.5)
VARIANTS: dict[str, TrainConfig] = {
    "all": TrainConfig(protocol="all"),
    "2020": TrainConfig(protocol="2020"),
    "all-robust": TrainConfig(protocol="all", augmentation=Augmentation.robust()),
}


@dataclass(frozen=True)
class Sizes:
    """Per-simulator set sizes and the (shortened) training schedule of every run."""

    train: int = 24_000
    test: int = 10_000
    epochs: int = 10
    umap_sample: int = 3000
    threads: int = 1


def simulated(name: str, total: int, seed: int, offset: int = 0) -> LabelledCutouts:
    spec = SimulatedSpec(total, seed, FIRST_DETECTID[name] + offset, name)
    return LabelledCutouts.from_simulated(
        spec.generate(progress=False), f"simulator {name}, seed {seed}, n {total}"
    )


def summarise(evaluation: Evaluation) -> dict:
    """DR1-mix and low-S/N metrics of the CNN alone and the ensemble, stage 2 and novelty."""
    truth, scores, data = evaluation.truth, evaluation.scores, evaluation.data
    decisions = evaluation.decisions()
    against = against_baselines(truth, decisions)
    decisions["cnn"] = decisions.pop("cnn_alone")  # the name these files have always used
    low = (data.sn >= LOW_SNR[0]) & (data.sn < LOW_SNR[1])
    return {
        "n": len(truth),
        "dr1": {name: metrics.summary(truth, kept) for name, kept in decisions.items()},
        "low_snr": {
            name: metrics.summary(truth[low], kept[low]) for name, kept in decisions.items()
        },
        "ensemble_minus_cnn_fom": against["cnn_alone"],  # at the validation threshold
        "ensemble_minus": against,
        "stage2": stage2_summary(truth, scores),
        "bands": metrics.score_bands(scores.cnn_score, truth, evaluation.low, evaluation.high),
        "per_class": metrics.per_class_accuracy(data.vis_class, truth, decisions["ensemble"]),
        "novel_share": float(scores.novel.mean()),
        "thresholds": [evaluation.low, evaluation.high, evaluation.cnn_alone],
        "band": list(evaluation.band),
    }


def train(data: LabelledCutouts, model_dir: Path, config: TrainConfig, sizes: Sizes) -> Path:
    config = replace(config, epochs=sizes.epochs, threads=sizes.threads)
    train_bundle(data, model_dir, "0.0.0-experiment", config, UmapConfig(sample=sizes.umap_sample))
    return model_dir


def cross(workdir: Path, sizes: Sizes, variants: list[str]) -> dict:
    trains = {name: simulated(name, sizes.train, TRAIN_SEED) for name in CROSS_SIMULATORS}
    trains["A+B"] = LabelledCutouts.concatenate([trains["A"], trains["B"]])
    tests = {
        name: simulated(name, sizes.test, TEST_SEED, offset=50_000_000) for name in CROSS_SIMULATORS
    }
    results: dict = {}
    for variant in variants:
        for train_name, data in trains.items():
            model_dir = train(data, workdir / f"{variant}-{train_name}", VARIANTS[variant], sizes)
            for test_name, test in tests.items():
                key = f"{variant} | train {train_name} | test {test_name}"
                results[key] = {
                    "variant": variant,
                    "train": train_name,
                    "test": test_name,
                    **summarise(evaluate(model_dir, test)),
                }
                log.info("%s: %s", key, results[key]["dr1"]["ensemble"])
    return results


ARTIFACT_FAMILIES = (
    "bad_amp",
    "bad_pixel_hot_column",
    "bad_pixel_charge_trap",
    "bad_pixel_flat_blip",
    "bad_pixel_masked_centre",
    "cosmic_ray",
    "sky_residual",
    "continuum_dips",
    "noise_off_trace",
    "noise_narrow",
    "noise_one_row",
    "noise_flat_rows",
)


def lofo(workdir: Path, sizes: Sizes, families: list[str], variant: str) -> dict:
    data = simulated("A", sizes.train, TRAIN_SEED)
    test = simulated("A", sizes.test, TEST_SEED, offset=50_000_000)
    results = {}
    for family in families:
        left_out = test.family == family
        model_dir = train(
            data.subset(data.family != family), workdir / f"lofo-{family}", VARIANTS[variant], sizes
        )
        evaluation = evaluate(model_dir, test)
        scores = evaluation.scores
        novelty, novel = scores.novelty, scores.novel
        results[family] = {
            "n": int(left_out.sum()),
            "called_fake": float(np.mean(~scores.real[left_out])),
            "stage2": stage2_summary(evaluation.truth[left_out], subset_scores(scores, left_out)),
            "novel_share": float(novel[left_out].mean()),
            "in_distribution_novel_share": float(novel[~left_out].mean()),
            "novelty_auroc": float(
                roc_auc_score(left_out, novelty) if 0 < left_out.sum() < len(test) else np.nan
            ),
            "median_cnn_score": float(np.median(scores.cnn_score[left_out])),
            "rest": metrics.summary(evaluation.truth[~left_out], scores.real[~left_out]),
        }
        log.info("left out %s: %s", family, results[family])
    return results


def trained_on(manifest: dict, model_dir: Path) -> set[str]:
    """The simulators a built model was trained on; a model trained from files (``train``)
    has no such record, so nothing can be called unseen for it."""
    if "simulators" not in manifest["training"]:
        raise ValueError(f"{model_dir}: the manifest does not record its training simulators")
    return {entry["simulator"] for entry in manifest["training"]["simulators"]}


def unseen(model_dir: Path, simulator: str, size: int) -> dict:
    """A packaged model on a simulator it never saw: the DR1-mix summary, what it calls each
    family, and how well novelty finds the families no other simulator renders."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    if simulator in trained_on(manifest, model_dir):
        raise ValueError(f"{model_dir} was trained on simulator {simulator}: it is not unseen")
    test = simulated(simulator, size, TEST_SEED, offset=50_000_000)
    evaluation = evaluate(model_dir, test)
    scores, truth = evaluation.scores, evaluation.truth
    families = {}
    for family in sorted(set(test.family.tolist())):
        inside = test.family == family
        families[family] = {
            "n": int(inside.sum()),
            "real": bool(truth[inside].all()),
            "called_real": float(scores.real[inside].mean()),
            "flagged_novel": float(scores.novel[inside].mean()),
            "median_novelty": float(np.median(scores.novelty[inside])),
        }
    novel_prefix = f"{simulator.lower()}_new_"  # the kinds its author added beyond the brief
    brand_new = np.char.startswith(test.family.astype(str), novel_prefix)
    return {
        "model": str(model_dir),
        "cnn_sha256": manifest["artifacts"][manifest["cnn"]["file"]],
        "simulator": simulator,
        **summarise(evaluation),
        "families": families,
        "brand_new": {
            "prefix": novel_prefix,
            "n": int(brand_new.sum()),
            "novelty_auroc": float(roc_auc_score(brand_new, scores.novelty))
            if 0 < brand_new.sum() < len(test)
            else float("nan"),
            "flagged_novel": float(scores.novel[brand_new].mean()) if brand_new.any() else 0.0,
            "flagged_novel_rest": float(scores.novel[~brand_new].mean()),
        },
    }


def unseen_table(result: dict) -> list[str]:
    stage2, new = result["stage2"], result["brand_new"]
    decisions = {**result["dr1"], "cnn_alone": result["dr1"]["cnn"]}
    low_snr = {**result["low_snr"], "cnn_alone": result["low_snr"]["cnn"]}
    lines = [
        *comparison_table(
            decisions,
            low_snr,
            result["ensemble_minus"],
            {"cnn_alone": result["thresholds"][2], "band": result["band"]},
        ),
        "",
        f"{stage2_share(stage2)} Flagged novel: {percent(result['novel_share'])}% of all; "
        f"{percent(new['flagged_novel'])}% of the {new['n']} detections of kinds no other "
        f"simulator renders (`{new['prefix']}*`, novelty AUROC against the rest "
        f"{new['novelty_auroc']:.3f}), {percent(new['flagged_novel_rest'])}% of the rest.",
        "",
        "| family | truth | n | called real | flagged novel | median novelty |",
        "|---|---|---|---|---|---|",
    ]
    for family, r in result["families"].items():
        lines.append(
            f"| {family} | {'real' if r['real'] else 'fake'} | {r['n']} | "
            f"{percent(r['called_real'])}% | {percent(r['flagged_novel'])}% | "
            f"{r['median_novelty']:.3f} |"
        )
    return lines


def subset_scores(scores, inside: np.ndarray):
    return type(scores)(*(getattr(scores, f)[inside] for f in scores.__dataclass_fields__))


def percent(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{100 * value:.1f}"


def cross_table(results: dict) -> list[str]:
    """One row per run; the ensemble against the CNN alone at its validation threshold (the fair
    baseline), at 0.5 and with the band called fake, each with a paired-bootstrap 95% interval."""
    lines = [
        "| variant | train | test | CNN FoM (validation threshold) | ensemble FoM "
        "| ens. - CNN at validation threshold [95%] | ens. - CNN at 0.5 [95%] "
        "| ens. - band called fake [95%] | low-S/N bal. acc. CNN | low-S/N bal. acc. ensemble "
        "| stage 2 share | stage 2 acc. | best constant | novel share |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results.values():
        against = " | ".join(difference_text(d) for d in r["ensemble_minus"].values())
        lines.append(
            f"| {r['variant']} | {r['train']} | {r['test']} | {r['dr1']['cnn']['fom']:.4f} | "
            f"{r['dr1']['ensemble']['fom']:.4f} | {against} | "
            f"{r['low_snr']['cnn']['balanced_accuracy']:.4f} | "
            f"{r['low_snr']['ensemble']['balanced_accuracy']:.4f} | "
            f"{percent(r['stage2']['share'])}% | {percent(r['stage2']['accuracy'])}% | "
            f"{percent(r['stage2']['constant_accuracy'])}% | {percent(r['novel_share'])}% |"
        )
    return lines


def lofo_table(results: dict) -> list[str]:
    lines = [
        "| left-out family | n | called fake | median CNN score | decided by stage 2 "
        "| stage 2 accuracy there | flagged novel | novelty AUROC | in-distribution flagged "
        "| FoM on the rest |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for family, r in results.items():
        lines.append(
            f"| {family} | {r['n']} | {percent(r['called_fake'])}% | {r['median_cnn_score']:.3f} | "
            f"{percent(r['stage2']['share'])}% | {percent(r['stage2']['accuracy'])}% | "
            f"{percent(r['novel_share'])}% | {r['novelty_auroc']:.3f} | "
            f"{percent(r['in_distribution_novel_share'])}% | {r['rest']['fom']:.4f} |"
        )
    return lines


def write(out: Path, name: str, results: dict, lines: list[str], header: list[str]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    path = out / f"{name}.md"
    path.write_text("\n".join([*header, "", *lines, ""]))
    return path
