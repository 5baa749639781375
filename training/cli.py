"""``python -m training``: the offline commands (simulate, train, adapt, evaluate, build, ...)."""

import argparse
import json
import logging
from pathlib import Path

from service.domain import VISUAL_CLASSES
from training import adapt_report, experiments, learning_curve
from training.ablate import ablate
from training.adapt import AdaptConfig, AdaptRefusedError, adapt, dump
from training.build import (
    TRAIN_SIMULATORS,
    TRAIN_SPECS,
    SimulatedSpec,
    build,
    heldout_specs,
    publish,
    record_heldout,
    train_specs,
)
from training.dataset import (
    DatasetError,
    LabelledCutouts,
    read_images,
    read_labelled,
    write_dataset,
)
from training.ensemble import Stage2Error, UmapConfig
from training.evaluate import evaluate
from training.experiments import ARTIFACT_FAMILIES, VARIANTS, Sizes
from training.fit import train_bundle
from training.gallery import write_gallery
from training.simulators import SIMULATORS
from training.train import PROTOCOL_CLASSES, TrainConfig


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def class_counts_argument(text: str) -> dict[int, int]:
    try:
        pairs = (item.split(":") for item in text.split(","))
        counts = {int(vis_class): int(count) for vis_class, count in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'class:count,...', got {text!r}") from None
    unknown = set(counts) - set(VISUAL_CLASSES)
    if unknown or any(count < 0 for count in counts.values()):
        raise argparse.ArgumentTypeError(f"classes must be in {VISUAL_CLASSES}, counts >= 0")
    return counts


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    sim = commands.add_parser("simulate", help="write a simulated labelled HDF5 file")
    sim.add_argument("--out", type=Path, required=True)
    sim.add_argument("--simulator", choices=sorted(SIMULATORS), default="A")
    sim.add_argument("--total", type=int, default=TRAIN_SPECS[0].total)
    sim.add_argument("--seed", type=int, default=TRAIN_SPECS[0].seed)
    sim.add_argument("--first-detectid", type=int, default=TRAIN_SPECS[0].first_detectid)
    sim.add_argument("--with-fibers", action="store_true", help="also write im_array (4, 9, 100)")
    sim.add_argument(
        "--class-counts",
        type=class_counts_argument,
        help="exact mix, e.g. '5:1000,4:200,-2:500' (default: DR1 mix scaled to --total)",
    )

    gal = commands.add_parser("gallery", help="PNG of simulated examples per visual class")
    gal.add_argument("--out", type=Path, required=True)

    train = commands.add_parser("train", help="train a model directory from a labelled file")
    train.add_argument("--data", type=Path, required=True, help="HDF5 with FiberImages (+ Labels)")
    train.add_argument("--labels", type=Path, help="HDF5 with the Labels table, if separate")
    train.add_argument("--out", type=Path, required=True, help="e.g. models/2.0.0")
    train.add_argument("--version", required=True)
    train.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    train.add_argument("--seed", type=int, default=TrainConfig.seed)
    train.add_argument(
        "--protocol",
        choices=sorted(PROTOCOL_CLASSES),
        default=TrainConfig.protocol,
        help="'all': the CNN sees every class; '2020': classes 4-5 against 0-1 only",
    )

    ev = commands.add_parser("evaluate", help="held-out metrics into the manifest and report")
    ev.add_argument("--model", type=Path, required=True)
    ev.add_argument("--data", type=Path, required=True)
    ev.add_argument("--labels", type=Path)

    rep = commands.add_parser(
        "report", help="rewrite REPORT.md of a built model (e.g. after `experiment`)"
    )
    rep.add_argument("--model", type=Path, required=True)

    abl = commands.add_parser("ablate", help="measure which augmentations help")
    abl.add_argument("--data", type=Path, required=True)
    abl.add_argument("--out", type=Path, required=True, help="Markdown table to write")
    abl.add_argument("--epochs", type=int, default=6)
    abl.add_argument("--size", type=int, default=20_000, help="cutouts drawn from --data")
    abl.add_argument("--seed", type=int, default=0)

    exp = commands.add_parser("experiment", help="cross-simulator matrix or leave-one-family-out")
    exp.add_argument("kind", choices=("cross", "lofo", "unseen", "adapt", "adapt-choices"))
    exp.add_argument("--out", type=Path, required=True, help="folder for <kind>.json and .md")
    exp.add_argument("--workdir", type=Path, default=Path("build/experiments"))
    exp.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=sorted(VARIANTS))
    exp.add_argument(
        "--families", nargs="+", choices=ARTIFACT_FAMILIES, default=list(ARTIFACT_FAMILIES)
    )
    exp.add_argument("--train-size", type=int, default=Sizes.train)
    exp.add_argument("--test-size", type=int, default=Sizes.test)
    exp.add_argument("--epochs", type=int, default=Sizes.epochs)
    exp.add_argument("--model", type=Path, help="unseen, adapt: the packaged model")
    exp.add_argument(
        "--simulator", choices=sorted(SIMULATORS), default="C", help="unseen, adapt: the night's"
    )

    adp = commands.add_parser(
        "adapt",
        help="a new model from a packaged one and a night's own labels",
        description="Fine-tunes the parent's CNN on the night's labels (with replay of its "
        "training simulators), moves its statistics to the night, refits stage 2 and novelty, "
        "and writes a verified model directory; refuses when the result does not beat the "
        "parent on labels it did not train on (k-fold).",
    )
    adp.add_argument("--model", type=Path, required=True, help="the parent model directory")
    adp.add_argument("--data", type=Path, required=True, help="the night's FiberImages file")
    adp.add_argument(
        "--labels",
        type=Path,
        action="append",
        required=True,
        help="a Labels table (`linescore labels export`); repeat for more files",
    )
    adp.add_argument("--out", type=Path, required=True, help="new model directory (must not exist)")
    adp.add_argument("--version", required=True)
    adp.add_argument("--seed", type=int, default=AdaptConfig.seed)
    adp.add_argument(
        "--epochs", type=positive_int, default=AdaptConfig.epochs, help="fine-tuning epochs"
    )
    adp.add_argument(
        "--replay",
        type=positive_int,
        default=AdaptConfig.replay,
        help="simulated cutouts replayed per epoch (fewer: faster, more forgetting)",
    )

    bld = commands.add_parser("build", help="simulate, train, evaluate: what `make models` runs")
    bld.add_argument("--version", required=True)
    bld.add_argument("--workdir", type=Path, default=Path("build"))
    bld.add_argument("--models-root", type=Path, default=Path("models"))
    bld.add_argument(
        "--simulators",
        nargs="+",
        choices=sorted(SIMULATORS),
        default=list(TRAIN_SIMULATORS),
        help="train on these (and hold out a set of each)",
    )
    bld.add_argument(
        "--train-size", type=positive_int, default=TRAIN_SPECS[0].total, help="per simulator"
    )
    return root


def rewrite_report(model_dir: Path) -> Path:
    """Re-score every held-out set (regenerated from the manifest) with this code's metrics,
    store them in the manifest and rewrite the report, which then also links and summarises
    the experiments found beside the model. The artifacts are not touched."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    entries = [manifest["heldout"], *manifest.get("heldout_other", [])]
    evaluations = []
    for entry in entries:
        if "simulator" not in entry:
            raise DatasetError(
                f"{model_dir}: evaluated on {entry['description']}; rerun `python -m training "
                "evaluate` with that file to rewrite the report"
            )
        data = LabelledCutouts.from_simulated(
            SimulatedSpec.from_description(entry["simulator"]).generate(progress=False)
        )
        evaluations.append(evaluate(model_dir, data, entry["umap_transform"]))
        entry["metrics"] = evaluations[-1].metrics()
    publish(model_dir, manifest, evaluations[0])
    return model_dir / "REPORT.md"


def run_unseen(model_dir: Path | None, simulator: str, size: int, out: Path) -> Path:
    if model_dir is None:
        raise SystemExit("error: experiment unseen needs --model")
    try:
        result = experiments.unseen(model_dir, simulator, size)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    command = (
        f"python -m training experiment unseen --model {model_dir} --simulator {simulator} "
        f"--test-size {size} --out {out}"
    )
    header = [
        f"# Model {model_dir.name} on simulator {simulator}, which it was never trained on",
        "",
        f"Reproduce: `{command}`",
        "",
        f"{size} detections of simulator {simulator} at the DR1 class mix (seed "
        f"{experiments.TEST_SEED}), scored through the serving path; the model's manifest "
        f"records its training simulators, and {simulator} is not among them.",
    ]
    table = experiments.unseen_table(result)
    return experiments.write(out, f"unseen-{simulator}", result, table, header)


def run_experiment(args: argparse.Namespace) -> Path:
    sizes = Sizes(train=args.train_size, test=args.test_size, epochs=args.epochs)
    if args.kind == "adapt-choices":
        learning_curve.development(args.workdir, args.out)
        return adapt_report.write(args.out)
    if args.kind == "adapt":
        if args.model is None:
            raise SystemExit("error: experiment adapt needs --model")
        learning_curve.run(args.model, args.simulator, args.workdir, args.out)
        return adapt_report.write(args.out)
    if args.kind == "unseen":
        return run_unseen(args.model, args.simulator, sizes.test, args.out)
    command = (
        f"python -m training experiment {args.kind} --out {args.out} --train-size "
        f"{sizes.train} --test-size {sizes.test} --epochs {sizes.epochs}"
    )
    header = [
        f"Reproduce: `{command} --variants {' '.join(args.variants)}`"
        if args.kind == "cross"
        else f"Reproduce: `{command} --families {' '.join(args.families)}`",
        "",
        f"Each run: {sizes.train} training detections per simulator"
        + (" (twice that for A+B)" if args.kind == "cross" else " (simulator A only)")
        + f", DR1 class mix, seed {experiments.TRAIN_SEED}, {sizes.epochs} epochs, UMAP and "
        f"novelty reference of {sizes.umap_sample}; "
        + (
            f"held-out sets of {sizes.test} per simulator"
            if args.kind == "cross"
            else f"a held-out set of {sizes.test} of simulator A"
        )
        + f" (seed {experiments.TEST_SEED}); scored through the serving path.",
    ]
    if args.kind == "cross":
        results = experiments.cross(args.workdir, sizes, args.variants)
        return experiments.write(
            args.out, "cross", results, experiments.cross_table(results), header
        )
    results = experiments.lofo(args.workdir, sizes, args.families, "all")
    return experiments.write(args.out, "lofo", results, experiments.lofo_table(results), header)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        if args.command == "simulate":
            spec = SimulatedSpec(args.total, args.seed, args.first_detectid, args.simulator)
            data = spec.simulator_function()(
                args.class_counts or spec.describe()["class_counts"],
                spec.seed,
                first_detectid=spec.first_detectid,
                with_fibers=args.with_fibers,
                progress=True,
            )
            print(write_dataset(args.out, data))
        elif args.command == "gallery":
            print(write_gallery(args.out))
        elif args.command == "train":
            config = TrainConfig(protocol=args.protocol, epochs=args.epochs, seed=args.seed)
            manifest = train_bundle(
                read_labelled(args.data, args.labels),
                args.out,
                args.version,
                config,
                UmapConfig(seed=args.seed),
            )
            print(json.dumps(manifest["validation"]["umap_input_choice"], indent=2))
        elif args.command == "adapt":
            manifest = adapt(
                args.model,
                read_images(args.data),
                args.labels,
                args.out,
                args.version,
                AdaptConfig(seed=args.seed, epochs=args.epochs, replay=args.replay),
            )
            print(dump(manifest))
        elif args.command == "ablate":
            command = (
                f"python -m training ablate --data {args.data} --out {args.out} "
                f"--epochs {args.epochs} --size {args.size} --seed {args.seed}"
            )
            print(
                ablate(
                    read_labelled(args.data), args.out, args.epochs, args.size, args.seed, command
                )
            )
        elif args.command == "report":
            print(rewrite_report(args.model))
        elif args.command == "experiment":
            print(run_experiment(args))
        elif args.command == "evaluate":
            manifest = json.loads((args.model / "manifest.json").read_text())
            manifest.pop("heldout_other", None)  # the report describes this file's results
            data = read_labelled(args.data, args.labels)
            evaluation = record_heldout(args.model, manifest, data, f"file {args.data}", {})
            held = publish(args.model, manifest, evaluation)["heldout"]["metrics"]
            print(json.dumps({k: held[k] for k in ("baseline", "cnn_alone", "ensemble")}, indent=2))
        else:
            simulators = tuple(args.simulators)
            command = "make models"
            if set(simulators) != set(TRAIN_SIMULATORS) or args.train_size != TRAIN_SPECS[0].total:
                command = (
                    f"python -m training build --version {args.version} --simulators "
                    f"{' '.join(simulators)} --train-size {args.train_size}"
                )
            manifest = build(
                args.version,
                args.workdir,
                args.models_root,
                train_specs(simulators, args.train_size),
                heldout_specs(simulators),
                command=command,
            )
            print(json.dumps(manifest["heldout"]["metrics"]["ensemble"], indent=2))
    except (DatasetError, Stage2Error, AdaptRefusedError) as error:
        raise SystemExit(f"error: {error}") from None
    return 0
