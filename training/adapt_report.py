"""``ADAPT.md``: what ``adapt`` makes of a night's labels, against the targets of the loop.

Reads the ``adapt-<simulator>.json`` files ``python -m training experiment adapt`` writes beside
a model and turns them into tables and one plot (FoM against labels, a line per strategy, the
simulator's ceiling as a dashed line).
"""

import json
from pathlib import Path

from matplotlib.figure import Figure

from training.learning_curve import LABEL_COUNTS, STRATEGIES

REPORT, PLOT = "ADAPT.md", "adapt_curve.png"
STYLE = {"suggest": "o-", "random": "s--", "uncertainty": "^:"}


def fom(point: dict) -> float:
    return point["dr1"]["ensemble"]["fom"]


def low_snr(point: dict) -> float:
    return point["low_snr"]["ensemble"]["balanced_accuracy"]


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def targets(result: dict) -> list[str]:
    points, ceiling = result["points"], fom(result["ceiling"])
    zero = points["suggest-0"]
    at = {n: points[f"suggest-{n}"] for n in LABEL_COUNTS if f"suggest-{n}" in points}
    closed = (fom(at[500]) - fom(zero)) / (ceiling - fom(zero))
    random_1000 = fom(points["random-1000"])
    reached = [n for n in LABEL_COUNTS if n in at and fom(at[n]) >= random_1000]
    never_below = all(fom(p) >= fom(zero) and low_snr(p) >= low_snr(zero) for p in at.values())
    adapted = [p for p in at.values() if "stage2_manifest" in p]
    used = [p for p in adapted if p["stage2_manifest"]["used"]]
    stage2_ok = all(
        p["stage2"]["share"] >= 0.03
        and p["stage2"]["accuracy"] - p["stage2"]["constant_accuracy"] >= 0.05
        if p["stage2_manifest"]["used"]
        else bool(p["stage2_manifest"]["why"])
        for p in adapted
    )
    return [
        "| target | measured | |",
        "|---|---|---|",
        f"| 500 labels close >= half the gap to the ceiling | {fom(zero):.4f} -> "
        f"{fom(at[500]):.4f} of {ceiling:.4f}: {closed:.0%} closed | {verdict(closed >= 0.5)} |",
        f"| 1000 labels within 0.02 of the ceiling | {fom(at[1000]):.4f} "
        f"({ceiling - fom(at[1000]):+.4f} below) | {verdict(ceiling - fom(at[1000]) <= 0.02)} |",
        f"| low-S/N balanced accuracy >= 0.85 (500 / 1000 labels) | {low_snr(at[500]):.4f} / "
        f"{low_snr(at[1000]):.4f} | {verdict(min(low_snr(at[500]), low_snr(at[1000])) >= 0.85)} |",
        f"| never below the parent (FoM and low-S/N, every count) | | {verdict(never_below)} |",
        f"| suggest reaches random's 1000-label FoM ({random_1000:.4f}) with <= 500 | "
        f"first at {reached[0] if reached else 'none'} | "
        f"{verdict(bool(reached) and reached[0] <= 500)} |",
        f"| stage 2 decides >= 3% and beats the constant by 0.05, or is gated off | "
        f"used in {len(used)} of {len(adapted)} adapted models (judged on the test night); "
        f"off in the rest, with the numbers in each manifest | {verdict(stage2_ok)} |",
    ]


def curve_table(result: dict) -> list[str]:
    ceiling = result["ceiling"]
    lines = [
        "| strategy | labels | FoM (DR1 mix) | share of the gap closed | low-S/N bal. acc. "
        "| threshold | stage 2 | gate: adapted / parent FoM on held-out labels "
        "| forgetting: FoM on "
        + " / ".join(sorted(result["points"]["suggest-0"]["forgetting"]))
        + " | adapt (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    zero = fom(result["points"]["suggest-0"])
    for p in result["points"].values():
        gate = p.get("gate", {})
        stage2 = p.get("stage2_manifest")
        forgetting = " / ".join(
            f"{p['forgetting'][name]['fom']:.4f}" for name in sorted(p["forgetting"])
        )
        lines.append(
            f"| {p['strategy']} | {p['labels']} | {fom(p):.4f} | "
            f"{(fom(p) - zero) / (fom(ceiling) - zero):.0%} | {low_snr(p):.4f} | "
            + (f"{p['threshold_choice']['threshold']:.2f}" if "threshold_choice" in p else "-")
            + " | "
            + ("refused" if "refused" in p else ("used" if stage2 and stage2["used"] else "off"))
            + " | "
            + (f"{gate['adapted']['fom']:.4f} / {gate['parent']['fom']:.4f}" if gate else "-")
            + f" | {forgetting} | "
            + (f"{p['adapt_seconds']:.0f}" if "adapt_seconds" in p else "-")
            + " |"
        )
    return lines


def stage2_lines(result: dict) -> list[str]:
    lines = [
        "| labels | in the manifest | test night: decided by stage 2 | its accuracy "
        "| CNN's own call there | best constant |",
        "|---|---|---|---|---|---|",
    ]
    for n in LABEL_COUNTS:
        p = result["points"].get(f"suggest-{n}")
        if not p or "stage2_manifest" not in p:
            continue
        s2, test = p["stage2_manifest"], p["stage2"]
        lines.append(
            f"| {n} | {'used' if s2['used'] else 'off: ' + s2['why']} | {test['share']:.1%} | "
            f"{test['accuracy']:.3f} | {p['band_cnn_call_accuracy']:.3f} | "
            f"{test['constant_accuracy']:.3f} |"
        )
    return lines


def forgetting_lines(result: dict) -> list[str]:
    """Per family of the parent's simulators: accuracy before and after 1000 suggest labels."""
    before, after = result["points"]["suggest-0"], result["points"].get("suggest-1000")
    if after is None or "forgetting" not in after:
        return []
    lines = [
        "| simulator | family | parent | adapted (1000 labels) | change |",
        "|---|---|---|---|---|",
    ]
    for name in sorted(before["forgetting"]):
        old = before["forgetting"][name]["family_accuracy"]
        new = after["forgetting"][name]["family_accuracy"]
        for family in sorted(old, key=lambda f: new[f] - old[f])[:6]:
            lines.append(
                f"| {name} | {family} | {old[family]:.3f} | {new[family]:.3f} | "
                f"{new[family] - old[family]:+.3f} |"
            )
    return lines


def plot(results: dict[str, dict], path: Path) -> None:
    fig = Figure(figsize=(5.2 * len(results), 4.0), layout="tight")
    for ax, (simulator, result) in zip(
        fig.subplots(1, len(results), squeeze=False)[0], results.items(), strict=True
    ):
        for strategy in STRATEGIES:
            points = [p for p in result["points"].values() if p["strategy"] == strategy]
            ax.plot(
                [LABEL_COUNTS.index(p["labels"]) for p in points],  # evenly spaced counts
                [fom(p) for p in points],
                STYLE[strategy],
                label=strategy,
            )
        ax.axhline(
            fom(result["ceiling"]), color="k", linestyle="--", label="ceiling (50,000 own labels)"
        )
        ax.set_xticks(range(len(LABEL_COUNTS)), [str(n) for n in LABEL_COUNTS])
        ax.set_xlabel("labels of the night")
        ax.set_ylabel("FoM on a fresh test night (DR1 mix)")
        ax.set_title(f"simulator {simulator} (never trained on)")
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)


def write(model_dir: Path) -> Path:
    results = {
        json.loads(path.read_text())["simulator"]: json.loads(path.read_text())
        for path in sorted(Path(model_dir).glob("adapt-[A-Z].json"))
    }
    if results:
        plot(results, Path(model_dir) / PLOT)
    lines = [
        f"# Learning from a night's labels: `adapt` on model {Path(model_dir).name}",
        "",
        "Reproduce (about 40 min per simulator on two cores, two simulators side by side): "
        + "; ".join(
            f"`python -m training experiment adapt --model {model_dir} --simulator {s} "
            f"--out {model_dir}`"
            for s in results
        )
        + " (part of `make experiments`).",
        "",
        "Each simulator plays a night the model never saw: a 20,000-detection night (seed 33) is "
        "scored through the serving path, labels are drawn from its truth in each strategy's "
        "order (suggest up to 2000, random and uncertainty alone up to 1000), `adapt` (the "
        "command's code path, gate included, one thread per run) makes a model, and every "
        "number is measured on a fresh 20,000-detection test night of the same "
        "simulator (seed 32, the set `experiment unseen` scores). The ceiling is a model trained "
        "from scratch on 50,000 of the simulator's own labels (8 epochs). Forgetting: FoM on "
        "6,000 held-out detections of each simulator the parent was trained on. A refused "
        "adapt keeps the parent (its numbers are the parent's).",
        "",
        f"![FoM against labels]({PLOT})",
        "",
    ]
    for simulator, result in results.items():
        c = result["ceiling"]
        timed = result["points"].get("suggest-1000", {})
        lines += [
            f"## Simulator {simulator}",
            "",
            f"Ceiling: FoM {fom(c):.4f} (CNN alone {c['dr1']['cnn']['fom']:.4f}, at the test "
            f"night's own best threshold {c['oracle_threshold_fom']:.4f}), low-S/N balanced "
            f"accuracy {low_snr(c):.4f}. `adapt` on the 20,000-detection night with 1000 "
            f"labels took {timed.get('adapt_seconds', float('nan')) / 60:.1f} min (budget 10 "
            "min) on one thread, while two other runs shared the machine's two cores (the "
            "command uses both).",
            "",
            *targets(result),
            "",
            *curve_table(result),
            "",
            "Stage 2 of the adapted models (suggest order):",
            "",
            *stage2_lines(result),
            "",
            "Forgetting, the six families of the parent's simulators that changed most for the "
            "worse with 1000 labels:",
            "",
            *forgetting_lines(result),
            "",
        ]
    development = Path(model_dir) / "adapt-development.json"
    if development.is_file():
        lines += development_lines(json.loads(development.read_text()), model_dir)
    path = Path(model_dir) / REPORT
    path.write_text("\n".join(lines))
    return path


def development_lines(results: dict, model_dir: Path) -> list[str]:
    """How adapt's settings were chosen: on a night of B for a parent trained on A alone."""
    lines = [
        "## How the settings were chosen",
        "",
        f"Reproduce: `python -m training experiment adapt-choices --workdir build/curves --out "
        f"{model_dir}`. A parent trained on simulator A alone (24,000 detections, 8 epochs) and "
        "a night of simulator B: neither C nor D, which the tables above measure, took part in "
        "any choice. 500 labels in suggest order unless said; one run each (the two seeds of the "
        "chosen settings show how far one run moves).",
        "",
        "| setting | labels | FoM (test night of B) | CNN at its best threshold there "
        "| threshold chosen | low-S/N bal. acc. | FoM on held-out A (forgetting) |",
        "|---|---|---|---|---|---|---|",
    ]
    parent_shown = False
    for name, result in results.items():
        for p in result["points"].values():
            if p["labels"] == 0:
                if parent_shown:
                    continue
                parent_shown = True
            lines.append(
                f"| {name} | {p['labels']} {p['strategy'] if p['labels'] else '(the parent)'} | "
                f"{fom(p):.4f} | {p['oracle_threshold_fom']:.4f} | "
                + (f"{p['threshold_choice']['threshold']:.2f}" if "threshold_choice" in p else "-")
                + f" | {low_snr(p):.4f} | {p['forgetting']['A']['fom']:.4f} |"
            )
    return lines
