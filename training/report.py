"""The evaluation report in ``models/<version>/``: REPORT.md plus the plots it links."""

import json
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from service.domain import VISUAL_CLASS_NAMES, VISUAL_CLASSES
from training import metrics
from training.evaluate import BASELINES, Evaluation

CURVE_PNG, MAP_PNG = "score_curve.png", "umap_map.png"
TARGET_FOM, TARGET_LOW_SNR_BALANCED_ACCURACY = 0.94, 0.85
GENERALISATION = ("cross.md", "lofo.md")  # written by `python -m training experiment`
UNSEEN = "unseen-*.json"  # `experiment unseen`: this very model on a simulator it never saw

# The 2020 ensemble on DR1 (HETDEX brief): CNN score bands, and per-class accuracy (appendix).
BANDS_2020 = {"discard": (18200, 0.9884), "ambiguous": (17448, 0.7740), "keep": (35029, 0.0485)}
PER_CLASS_2020 = {-1: 46.2, 0: 89.4, 1: 83.5, 2: 63.5, 3: 40.6, 4: 89.9, 5: 89.1}


def difference_text(difference: dict) -> str:
    """A FoM difference and its 95% interval, as every table and verdict here prints it."""
    low, high = difference["ci95"]
    return f"{difference['difference']:+.4f} [{low:+.4f}, {high:+.4f}]"


def comparison_table(dr1: dict, low_snr: dict, against: dict, thresholds: dict) -> list[str]:
    """The served decision beside each CNN-alone baseline (:data:`training.evaluate.BASELINES`),
    with the served FoM minus the baseline's and its paired-bootstrap 95% interval.
    ``thresholds`` holds ``cnn_alone`` (chosen on validation data) and the stage-2 ``band``."""
    values = {
        "cnn_alone": f" ({thresholds['cnn_alone']:.2f})",
        "cnn_at_0.5": "",
        "cnn_band_called_fake": f" (keep score >= {thresholds['band'][1]:.2f})",
    }
    lines = [
        "| decision | FoM | completeness | contamination | S/N 4.8-5.5 bal. acc. "
        "| served minus this, FoM [95% paired bootstrap] |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in {"ensemble": "served decision", **BASELINES}.items():
        m, low = dr1[name], low_snr.get(name, {}).get("balanced_accuracy", float("nan"))
        difference = difference_text(against[name]) if name in against else ""
        lines.append(
            f"| {label}{values.get(name, '')} | {m['fom']:.4f} | {m['completeness']:.4f} "
            f"| {m['contamination']:.4f} | {low:.4f} | {difference} |"
        )
    return lines


def bands_beside_2020(bands: list[dict]) -> list[str]:
    total, total_2020 = sum(b["count"] for b in bands), sum(c for c, _ in BANDS_2020.values())
    lines = [
        "| band | count | share | contamination | 2020 count | 2020 share | 2020 contamination |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in bands:
        count, contamination = BANDS_2020[b["band"]]
        lines.append(
            f"| {b['band']} | {b['count']} | {b['count'] / total:.3f} | "
            f"{b['contamination']:.4f} | {count} | {count / total_2020:.3f} | {contamination:.4f} |"
        )
    return lines


def per_class_beside_2020(per_class: dict) -> list[str]:
    header = " | ".join(str(c) for c in VISUAL_CLASSES)
    row = " | ".join(
        f"{100 * per_class[str(c)]['accuracy']:.1f}" if str(c) in per_class else "-"
        for c in VISUAL_CLASSES
    )
    row_2020 = " | ".join(str(PER_CLASS_2020.get(c, "-")) for c in VISUAL_CLASSES)
    return [
        f"| accuracy (%) by visual class | {header} |",
        "|---" * (len(VISUAL_CLASSES) + 1) + "|",
        f"| this model | {row} |",
        f"| 2020 (appendix) | {row_2020} |",
    ]


def plot_curve(evaluation: Evaluation, path: Path) -> None:
    grid = np.linspace(0.0, 1.0, 201)
    curve = metrics.threshold_curve(evaluation.scores.cnn_score, evaluation.truth, grid)
    fig = Figure(figsize=(6.5, 4.2), layout="tight")
    ax = fig.subplots()
    for key, style in (("completeness", "-"), ("contamination", "--"), ("fom", ":")):
        ax.plot(grid, curve[key], style, label=key)
    for name, value in (("low", evaluation.low), ("high", evaluation.high)):
        ax.axvline(value, color="grey", lw=0.8)
        ax.text(value, 0.5, f" {name}", rotation=90, color="grey", fontsize=8)
    ax.set(
        xlabel="CNN score threshold (keep score >= t)",
        ylabel="fraction",
        ylim=(0, 1.02),
        title="Held-out: CNN score vs completeness and contamination",
    )
    ax.legend(loc="center left")
    fig.savefig(path, dpi=110)


def plot_map(model_dir: Path, manifest: dict, evaluation: Evaluation, path: Path) -> None:
    training_map = np.load(model_dir / manifest["umap"]["map"])
    svm = evaluation.svm
    coords, classes = training_map["coords"], training_map["vis_class"]
    fig = Figure(figsize=(7.5, 6.0), layout="tight")
    ax = fig.subplots()
    colours = colormaps["coolwarm"].resampled(len(VISUAL_CLASSES))
    for i, vis_class in enumerate(VISUAL_CLASSES):
        inside = classes == vis_class
        ax.scatter(
            *coords[inside].T,
            s=2,
            color=colours(i),
            alpha=0.5,
            label=f"{vis_class} {VISUAL_CLASS_NAMES[vis_class]}",
        )
    ambiguous = evaluation.scores.decided_by_svm
    ax.scatter(
        *evaluation.scores.umap[ambiguous].T,
        s=6,
        facecolors="none",
        edgecolors="k",
        linewidths=0.4,
        label="held-out ambiguous",
    )
    pad = 1.0
    xs = np.linspace(coords[:, 0].min() - pad, coords[:, 0].max() + pad, 300)
    ys = np.linspace(coords[:, 1].min() - pad, coords[:, 1].max() + pad, 300)
    gx, gy = np.meshgrid(xs, ys)
    level = svm.decision_function(np.c_[gx.ravel(), gy.ravel()]).reshape(gx.shape)
    ax.contour(gx, gy, level, levels=[0.0], colors="k", linewidths=1.2)
    ax.set(
        title=f"UMAP of training sample ({manifest['umap']['input']}), SVM boundary",
        xlabel="UMAP 1",
        ylabel="UMAP 2",
    )
    ax.legend(markerscale=4, fontsize=7, loc="best")
    fig.savefig(path, dpi=110)


def _row(name: str, m: dict) -> str:
    return (
        f"| {name} | {m['completeness']:.4f} | {m['contamination']:.4f} | {m['fom']:.4f} "
        f"| {m['balanced_accuracy']:.4f} | {m['kept']} |"
    )


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def reproduce(manifest: dict) -> str:
    build = manifest.get("build")
    if build is None:  # trained with `train`, evaluated with `evaluate`
        return (
            "Trained with `python -m training train`, evaluated with `python -m training evaluate`."
        )
    return (
        f"Reproduce: `{build['command']}` (wall time {build['wall_time_s'] / 60:.1f} min on this "
        "2-core machine, from simulation to the held-out evaluation)."
    )


def generalisation_targets(model_dir: Path) -> list[str]:
    """The issue's targets on the simulator a model was not trained on, from the experiments'
    JSON (all-class protocol, default augmentations: the packaged configuration)."""
    lines = []
    cross_path, lofo_path = model_dir / "cross.json", model_dir / "lofo.json"
    if cross_path.is_file():
        cross = json.loads(cross_path.read_text())
        for train, test in (("A", "B"), ("B", "A")):
            r = cross.get(f"all | train {train} | test {test}")
            if r is None:
                continue
            ensemble, low = r["dr1"]["ensemble"], r["low_snr"]["ensemble"]
            stage2, diff = r["stage2"], r["ensemble_minus_cnn_fom"]
            lines.append(
                f"- Train {train}, test {test}: DR1-mix FoM >= {TARGET_FOM}: "
                f"{_verdict(ensemble['fom'] >= TARGET_FOM)} ({ensemble['fom']:.4f}); low-S/N "
                f"balanced accuracy >= {TARGET_LOW_SNR_BALANCED_ACCURACY}: "
                f"{_verdict(low['balanced_accuracy'] >= TARGET_LOW_SNR_BALANCED_ACCURACY)} "
                f"({low['balanced_accuracy']:.4f})."
            )
            if stage2["n"] == 0:
                lines.append(
                    f"- Train {train}, test {test}: stage 2 gated off in that model (the CNN "
                    f"alone decides, at its validation threshold {r['thresholds'][2]:.2f})."
                )
                continue
            lines += [
                f"- Train {train}, test {test}: stage 2 decides >= 5%: "
                f"{_verdict(stage2['share'] >= 0.05)} ({stage2['share']:.4f}); beats the best "
                f"constant by >= 0.10: "
                f"{_verdict(stage2['accuracy'] - stage2['constant_accuracy'] >= 0.10)} "
                f"({stage2['accuracy']:.4f} vs {stage2['constant_accuracy']:.4f}); ensemble FoM "
                f"above the CNN alone's at its validation threshold ({r['thresholds'][2]:.2f}) "
                f"with the 95% interval above 0: "
                f"{_verdict(diff['ci95'][0] > 0)} ({difference_text(diff)}).",
            ]
        protocol_2020 = cross.get("2020 | train A | test A")
        if protocol_2020 is not None:
            lines += [
                "",
                "The 2020 protocol (`--protocol 2020`: CNN on classes 4-5 against 0-1), trained "
                "and tested on simulator A (its CNN never saw bad amps, bad pixels, classes 2-3), "
                "beside the 2020 ensemble on DR1:",
                "",
                *bands_beside_2020(protocol_2020["bands"]),
                "",
                *per_class_beside_2020(protocol_2020["per_class"]),
                "",
            ]
    if lofo_path.is_file():
        lofo = json.loads(lofo_path.read_text())
        aurocs = {family: r["novelty_auroc"] for family, r in lofo.items()}
        worst_alarm = max(r["in_distribution_novel_share"] for r in lofo.values())
        below = [f"{f} {a:.3f}" for f, a in aurocs.items() if not a >= 0.95]
        flagged = {family: r["novel_share"] for family, r in lofo.items()}
        lines += [
            f"- Novelty AUROC >= 0.95 on every left-out family: {_verdict(not below)} "
            f"(median {np.nanmedian(list(aurocs.values())):.3f}; below: "
            f"{', '.join(below) or 'none'}). Share of each left-out family flagged at the "
            "shipped threshold (what a user sees, beside the AUROC): "
            + ", ".join(f"{f} {v:.2f}" for f, v in flagged.items())
            + ".",
            f"- At most 1% of in-distribution cutouts flagged: {_verdict(worst_alarm <= 0.01)} "
            f"(worst run {worst_alarm:.4f}).",
        ]
    for path, r in unseen_results(model_dir):
        ensemble, low = r["dr1"]["ensemble"], r["low_snr"]["ensemble"]
        stage2, new = r["stage2"], r["brand_new"]
        against = "; ".join(
            f"{BASELINES[name]} {r['dr1']['cnn' if name == 'cnn_alone' else name]['fom']:.4f}, "
            f"served minus it {difference_text(d)}"
            for name, d in r["ensemble_minus"].items()
        )
        lines += [
            f"- This model on simulator {r['simulator']}, never trained on "
            f"([{path.with_suffix('.md').name}]({path.with_suffix('.md').name})): DR1-mix FoM >= "
            f"{TARGET_FOM}: {_verdict(ensemble['fom'] >= TARGET_FOM)} ({ensemble['fom']:.4f}); "
            f"low-S/N balanced accuracy >= {TARGET_LOW_SNR_BALANCED_ACCURACY}: "
            f"{_verdict(low['balanced_accuracy'] >= TARGET_LOW_SNR_BALANCED_ACCURACY)} "
            f"({low['balanced_accuracy']:.4f}); stage 2 decides {stage2['share']:.4f}; "
            f"{against}; novelty AUROC on the kinds only that simulator renders "
            f"{new['novelty_auroc']:.3f}, with {new['flagged_novel']:.2f} of them flagged at the "
            f"shipped threshold ({new['flagged_novel_rest']:.3f} of the rest).",
        ]
    return [*lines, ""] if lines else []


def unseen_results(model_dir: Path) -> list[tuple[Path, dict]]:
    """``experiment unseen`` results of this very model (same CNN), with a Markdown beside them:
    a file left over from an earlier build of the same version is not reported."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    cnn = manifest["artifacts"][manifest["cnn"]["file"]]
    results = []
    for path in sorted(model_dir.glob(UNSEEN)):
        result = json.loads(path.read_text())
        if result.get("cnn_sha256") == cnn and path.with_suffix(".md").is_file():
            results.append((path, result))
    return results


def held_out_lines(held: dict) -> list[str]:
    """One held-out set: the served decision beside every CNN-alone baseline."""
    low_snr = {name: rows.get("4.8-5.5", {}) for name, rows in held["by_snr"].items()}
    return comparison_table(held, low_snr, held["ensemble_minus"], held["thresholds"])


def stage2_lines(manifest: dict, held: dict) -> list[str]:
    """Whether stage 2 decides in this model and, if it does, whether it beats the fair
    baseline (the CNN alone at its validation threshold) on held-out data."""
    gate = manifest.get("stage2")
    if gate is not None and not gate["used"]:
        return [
            "- Stage 2 is off in this model: the served decision is the CNN alone at its "
            f"validation threshold {manifest['thresholds']['cnn_alone']:.2f}. Why (the "
            f"leave-one-source-out gate, `stage2` in manifest.json): {gate['why']}."
        ]
    difference = held["ensemble_minus"]["cnn_alone"]
    low, high = difference["ci95"]
    gated = "passed the leave-one-source-out gate" if gate else "was packaged without a gate"
    losing = [
        f"{BASELINES[name]} {difference_text(d)}"
        for name, d in held["ensemble_minus"].items()
        if not d["ci95"][0] > 0
    ]
    return [
        f"- Stage 2 {gated}. Ensemble better than the CNN alone at its validation threshold "
        f"{held['thresholds']['cnn_alone']:.2f} (the fair baseline): {_verdict(low > 0)} "
        f"(FoM {difference['difference']:+.4f}, paired bootstrap 95% interval "
        f"[{low:+.4f}, {high:+.4f}]; 'met' needs the whole interval above 0).",
        f"- Ensemble better than every CNN-alone baseline in the table: {_verdict(not losing)}"
        + (f" (not above: {'; '.join(losing)})." if losing else "."),
    ]


def stage2_share(stage2: dict) -> str:
    """What the SVM decided on one held-out set."""
    if stage2["n"] == 0:
        return "Stage 2 (the SVM) decided no detection."
    return (
        f"Stage 2 (the SVM) decided {stage2['share']:.4f} of the detections ({stage2['n']}); "
        f"its accuracy there {stage2['accuracy']:.4f} against {stage2['constant_accuracy']:.4f} "
        "for the best constant decision."
    )


def render_markdown(manifest: dict, held: dict) -> str:
    ensemble = held["ensemble"]
    low_snr = held["by_snr"]["ensemble"].get("4.8-5.5")
    thresholds = manifest["thresholds"]
    lines = [
        f"# linescore model {manifest['version']}: evaluation report",
        "",
        f"Created {manifest['created']}. {reproduce(manifest)}",
        "",
        "## Data",
        "",
        f"- Training file: {manifest['training']['data']['detections']} detections "
        f"({manifest['training']['data']['real']} real), 80/20 split stratified by visual class.",
        f"- Held-out set: {held['data']['detections']} detections ({held['data']['real']} real): "
        f"{manifest['heldout']['description']}.",
        "",
        "## Held-out results",
        "",
        f"Pipeline baseline (accept all): FoM {held['baseline']['fom']:.4f}.",
        "",
        *held_out_lines(held),
        "",
        f"- Target FoM >= {TARGET_FOM}: {_verdict(ensemble['fom'] >= TARGET_FOM)} "
        f"({ensemble['fom']:.4f}).",
        *stage2_lines(manifest, held),
    ]
    if low_snr:
        lines.append(
            f"- S/N 4.8-5.5 balanced accuracy >= {TARGET_LOW_SNR_BALANCED_ACCURACY}: "
            f"{_verdict(low_snr['balanced_accuracy'] >= TARGET_LOW_SNR_BALANCED_ACCURACY)} "
            f"({low_snr['balanced_accuracy']:.4f})."
        )
    lines += [
        f"- {stage2_share(held['stage2'])}",
        f"- Flagged `novel` (false alarms: every detection here is in-distribution): "
        f"{held['novel_share']:.4f}, against the 0.01 the threshold "
        f"{manifest['novelty']['threshold']:.4f} was set for on the pooled calibration split "
        f"({_verdict(held['novel_share'] <= 0.01)}).",
        "",
    ]
    for other in manifest.get("heldout_other", []):
        metrics_other = other["metrics"]
        lines += [
            f"Also held out: {metrics_other['data']['detections']} detections, "
            f"{other['description']}.",
            "",
            *held_out_lines(metrics_other),
            "",
            f"- {stage2_share(metrics_other['stage2'])} Flagged novel (false alarms): "
            f"{metrics_other['novel_share']:.4f}.",
            "",
        ]
    model_dir = Path(manifest["model_dir"])
    present = [name for name in GENERALISATION if (model_dir / name).is_file()]
    present += [path.with_suffix(".md").name for path, _ in unseen_results(model_dir)]
    if present:
        lines += [
            "## On data it was not built from",
            "",
            "The experiments on data this model was not built from, each with the command "
            "that reproduces it: " + ", ".join(f"[{name}]({name})" for name in present) + ". "
            "The cross-simulator and leave-one-family-out runs train smaller models than this "
            "one (sizes and epochs in each file's header) with this model's protocol and "
            "augmentations; the unseen runs score this very model.",
            "",
            *generalisation_targets(Path(manifest["model_dir"])),
        ]
    lines += [
        f"## CNN score bands (the stage-2 band: low = {held['thresholds']['band'][0]}, high = "
        f"{held['thresholds']['band'][1]}; "
        + ("decided by the SVM)" if thresholds["low"] < thresholds["high"] else "stage 2 off)"),
        "",
        *bands_beside_2020(held["score_bands"]),
        "",
        f"![score curve]({CURVE_PNG})",
        "",
        "## Per visual class (share with the right decision)",
        "",
        "| class | n | CNN alone | ensemble |",
        "|---|---|---|---|",
    ]
    for key, row in held["per_class_accuracy"]["ensemble"].items():
        name = VISUAL_CLASS_NAMES[int(key)]
        alone = held["per_class_accuracy"]["cnn_alone"][key]["accuracy"]
        lines.append(f"| {key} {name} | {row['n']} | {alone:.4f} | {row['accuracy']:.4f} |")
    lines += ["", *per_class_beside_2020(held["per_class_accuracy"]["ensemble"])]
    lines += [
        "",
        "## By catalogue S/N",
        "",
        "| S/N | n | real | CNN alone bal. acc. | ensemble bal. acc. | ensemble completeness "
        "| ensemble contamination | ensemble FoM |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for band, row in held["by_snr"]["ensemble"].items():
        alone = held["by_snr"]["cnn_alone"][band]["balanced_accuracy"]
        lines.append(
            f"| {band} | {row['n']} | {row['real']} | {alone:.4f} | {row['balanced_accuracy']:.4f} "
            f"| {row['completeness']:.4f} | {row['contamination']:.4f} | {row['fom']:.4f} |"
        )
    if held["by_family"]:
        lines += [
            "",
            "## By simulated family (ensemble accuracy)",
            "",
            "| family | n | accuracy |",
            "|---|---|---|",
        ]
        lines += [f"| {f} | {r['n']} | {r['accuracy']:.4f} |" for f, r in held["by_family"].items()]
    choice = manifest["validation"]["umap_input_choice"]
    lines += [
        "",
        "## UMAP input (validation, out-of-fold SVM decisions)",
        "",
        "| UMAP input | FoM | completeness | contamination | low | high |",
        "|---|---|---|---|---|---|",
        *[
            f"| {s} | {c['fom']:.4f} | {c['completeness']:.4f} | {c['contamination']:.4f} "
            f"| {c['low']} | {c['high']} |"
            for s, c in choice.items()
        ],
        "",
        f"Chosen: **{manifest['umap']['input']}**. CNN alone on validation: FoM "
        f"{manifest['validation']['cnn_alone']['fom']:.4f}.",
        "",
        f"![UMAP map]({MAP_PNG})",
        "",
        "## Training",
        "",
        f"- Config: `{manifest['training']['config']}`",
        f"- Best epoch by balanced validation loss: "
        f"{min(manifest['training']['history'], key=lambda r: r['val_loss'])['epoch']} of "
        f"{len(manifest['training']['history'])}.",
        f"- ONNX Runtime vs PyTorch, max abs difference: "
        f"`{manifest['cnn']['onnx_vs_pytorch_max_abs_diff']}`.",
        "",
        "![simulated examples](gallery.png)",
        "",
    ]
    return "\n".join(lines)


def write_report(model_dir: Path, manifest: dict, evaluation: Evaluation) -> Path:
    model_dir = Path(model_dir)
    plot_curve(evaluation, model_dir / CURVE_PNG)
    plot_map(model_dir, manifest, evaluation, model_dir / MAP_PNG)
    path = model_dir / "REPORT.md"
    path.write_text(
        render_markdown({**manifest, "model_dir": str(model_dir)}, manifest["heldout"]["metrics"])
    )
    return path
