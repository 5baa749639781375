"""``make bench``: the service on loopback against its references, in one run.

Measures the latency of /livez and of one detection against a bare Flask app under the same
gunicorn worker and settings (bench/floor.py: the latency floor), single-source latency at 1, 2
and 4 connections, batch throughput (JSON and binary, 256 and 1024) against cnn.onnx alone in
ONNX Runtime (the throughput floor of the work), cold start, resident memory per worker, a stage
breakdown from the service's own timers, the research path and the in-process core on the same
cutouts, and the fast UMAP path against umap-learn's. Latencies come from ``http.client`` on
kept-alive connections. Writes bench/RESULTS.md and bench/latency.png. Medians throughout; the
machine is shared, so compare ratios measured side by side in one run rather than across runs.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from bench import decode, references, server, umap
from service.manifest import newest_model_dir
from training.simulators.a import simulate
from training.simulators.simulated_set import class_counts_for

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench"
STAGES = ("decode", "preprocess", "cnn", "umap", "svm", "novelty", "encode")


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 1024**2

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    commit = git("rev-parse", "--short", "HEAD").strip()
    if git("status", "--porcelain", "--untracked-files=no", "--", "service", "bench").strip():
        commit += " with uncommitted changes"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "python": platform.python_version(),
        "commit": commit or "uncommitted",
    }


def run_clients(
    port: int,
    path: str,
    content_type: str,
    body: bytes,
    connections: int,
    seconds: float,
    warmup: int,
    client: Callable[[tuple], list[float]] = server.client,
) -> list[list[float]]:
    args = [(port, path, content_type, body, seconds, warmup)] * connections
    with ProcessPoolExecutor(connections, mp_context=get_context("spawn")) as pool:
        return list(pool.map(client, args))


def single_body(cutout: np.ndarray) -> bytes:
    return json.dumps({"detectid": 1000512345, "cutout": cutout.tolist(), "wave": 4500.0}).encode()


def single_source(port: int, cutout: np.ndarray, seconds: float, counts=(1, 2, 4)) -> dict:
    """One JSON detection per request, each client on its own kept-alive connection."""
    body, results = single_body(cutout), {}
    for connections in counts:
        per_client = run_clients(
            port, "/v1/score", "application/json", body, connections, seconds, warmup=200
        )
        latencies = np.concatenate(per_client)
        results[connections] = {
            "p50_ms": 1e3 * float(np.percentile(latencies, 50)),
            "p99_ms": 1e3 * float(np.percentile(latencies, 99)),
            "requests_per_second": len(latencies) / seconds,
            "latencies": latencies,
        }
    return results


def against_floor(port: int, floor_port: int, cutout: np.ndarray, seconds: float) -> dict:
    """p50 and p99 ms of /livez and of a one-detection POST /v1/score, from the service and from
    the floor app: four kept-alive connections from one client process, taking turns in blocks
    of 100 requests, so the four see the same machine whatever else runs on it."""
    body = single_body(cutout)
    targets = {
        ("service", "/livez"): server.Target(port, "/livez"),
        ("floor", "/livez"): server.Target(floor_port, "/livez"),
        ("service", "/v1/score"): server.Target(port, "/v1/score", "application/json", body),
        ("floor", "/v1/score"): server.Target(floor_port, "/v1/score", "application/json", body),
    }
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        latencies = pool.submit(
            server.interleaved, (list(targets.values()), seconds, 100, 200)
        ).result()
    return {
        key: {
            "p50_ms": 1e3 * float(np.percentile(times, 50)),
            "p99_ms": 1e3 * float(np.percentile(times, 99)),
            "requests": len(times),
        }
        for key, times in zip(targets, latencies, strict=True)
    }


def batch_rate(port: int, content_type: str, body: bytes, size: int, seconds: float) -> float:
    """Cutouts/s of ``size``-cutout batches from 2 client connections."""
    per_client = run_clients(port, "/v1/score/batch", content_type, body, 2, seconds, 2)
    return size * sum(len(c) for c in per_client) / seconds


def batch_throughput(port: int, cutouts: np.ndarray, seconds: float) -> dict:
    return {
        (name, size): batch_rate(port, content_type, body, size, seconds)
        for size in (256, 1024)
        for name, (content_type, body) in decode.bodies(cutouts[:size]).items()
    }


def scrape(port: int) -> dict[str, float]:
    _, text = server.get(port, "/metrics")
    values = {}
    for line in text.decode().splitlines():
        match = re.match(r'linescore_stage_duration_seconds_sum\{stage="(\w+)"\} (\S+)', line)
        if match:
            values[match.group(1)] = float(match.group(2))
        elif line.startswith("linescore_batch_size_sum "):
            values["cutouts"] = float(line.split()[1])
    return values


def cold_starts() -> dict:
    """Seconds from process start to every worker ready, fast path and umap-learn's path."""
    runs = [("fast", {})]
    with tempfile.TemporaryDirectory() as cache:
        env = {"LINESCORE_UMAP_TRANSFORM": "reference", "NUMBA_CACHE_DIR": cache}
        runs += [("reference, empty numba cache", env), ("reference, warm numba cache", env)]
        results = {}
        for label, overrides in runs:
            started = server.start(overrides)
            results[label] = started.ready_seconds
            started.stop()
    return results


def plot(single: dict, path: Path) -> None:
    fig = Figure(figsize=(7, 4), layout="tight")
    ax = fig.subplots()
    top = max(np.percentile(r["latencies"], 99.5) for r in single.values()) * 1e3
    bins = np.linspace(0, top, 80)
    for connections, result in single.items():
        ax.hist(
            result["latencies"] * 1e3,
            bins=bins,
            histtype="step",
            label=f"{connections} connection(s): p50 {result['p50_ms']:.2f} ms",
        )
    ax.set(xlabel="latency (ms)", ylabel="requests", title="POST /v1/score, one detection")
    ax.legend()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="in-process repeats")
    args = parser.parse_args()
    model_dir = newest_model_dir(ROOT / "models")
    cutouts = simulate(class_counts_for(1024), seed=4242).im_sum
    info = machine()

    cold = cold_starts()
    with server.serving({}) as live, server.serving({}, command=server.FLOOR) as floor:
        floors = against_floor(live.port, floor.port, cutouts[0], 4 * args.seconds)
        single = single_source(live.port, cutouts[0], args.seconds)
        before = scrape(live.port)
        batches = batch_throughput(live.port, cutouts, args.seconds)
        after = scrape(live.port)
        memory = {pid: server.resident_mb(pid) for pid in live.workers()}
    scored = after["cutouts"] - before["cutouts"]
    stages = {s: 1e6 * (after.get(s, 0) - before.get(s, 0)) / scored for s in STAGES}
    core = references.core(model_dir, cutouts, args.repeats)
    single_core = references.single_cutout(model_dir, cutouts)
    research = references.research_path(model_dir, cutouts, args.repeats)
    cnn_rate = references.cnn_alone(model_dir, cutouts, args.repeats)
    measured = Measurements(
        info=info,
        model_dir=model_dir,
        seconds=args.seconds,
        floors=floors,
        cnn_rate=cnn_rate,
        single=single,
        batches=batches,
        cold=cold,
        memory=memory,
        stages=stages,
        core=core,
        single_core=single_core,
        research=research,
        agreement=umap.agreement(model_dir),
        decoding=decode.table(args.repeats * 3),
    )
    plot(single, OUT / "latency.png")
    text = measured.markdown()
    (OUT / "RESULTS.md").write_text(text)
    print(text)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


@dataclass
class Measurements:
    """Everything one `make bench` run measured, and its Markdown report."""

    info: dict
    model_dir: Path
    seconds: float
    floors: dict
    cnn_rate: float
    single: dict
    batches: dict
    cold: dict
    memory: dict
    stages: dict
    core: dict
    single_core: dict
    research: dict
    agreement: dict
    decoding: list[str]

    def markdown(self) -> str:
        info, model_dir, single, batches = self.info, self.model_dir, self.single, self.batches
        cold, memory, stages, core = self.cold, self.memory, self.stages, self.core
        research, agreement, single_core = self.research, self.agreement, self.single_core
        floors, cnn_rate = self.floors, self.cnn_rate
        one = single_core["shared"]["total_us"] / 1e3
        research_rate = 1024 / research["seconds"]
        best_binary = batches[("npy", 1024)]
        npy, json_rate = batches[("npy", 1024)] / cnn_rate, batches[("json", 1024)] / cnn_rate

        def p50(who: str, path: str) -> float:
            return floors[(who, path)]["p50_ms"]

        score_gap = p50("service", "/v1/score") - p50("floor", "/v1/score")
        livez_gap = p50("service", "/livez") - p50("floor", "/livez")
        lines = [
            "# Benchmark results",
            "",
            f"`make bench` on {info['date']}, commit {info['commit']}, model `{model_dir.name}`. "
            f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, Python "
            f"{info['python']}. The service: `linescore serve`, 2 gunicorn workers (2 request "
            "threads each, keep-alive), on loopback; clients in separate processes on the same 2 "
            "cores, every latency from `http.client` on a kept-alive connection. References "
            "measured in the same run: the bare app (`bench/floor.py`: Flask answering "
            '`{"status": "ok"}` under the same gunicorn worker class and settings), the latency '
            "floor; and `cnn.onnx` alone in ONNX Runtime on the same cutouts, 2 processes x 1 "
            f"thread, the throughput floor. {self.seconds:g} s per measurement; medians.",
            "",
            "## Targets",
            "",
            "| target | measured | verdict |",
            "|---|---|---|",
            f"| npy batches of 1024 >= 0.45 of the CNN-alone rate | {npy:.2f} "
            f"({best_binary:,.0f} of {cnn_rate:,.0f} cutouts/s) | {verdict(npy >= 0.45)} |",
            f"| JSON batches of 1024 >= 0.30 of the CNN-alone rate | {json_rate:.2f} "
            f"({batches[('json', 1024)]:,.0f} of {cnn_rate:,.0f} cutouts/s) | "
            f"{verdict(json_rate >= 0.30)} |",
            f"| kept-alive `POST /v1/score` p50 <= the bare app's + 0.6 ms | "
            f"{p50('service', '/v1/score'):.2f} ms = bare {p50('floor', '/v1/score'):.2f} ms "
            f"+ {score_gap:.2f} | {verdict(score_gap <= 0.6)} |",
            f"| kept-alive `/livez` p50 within 0.1 ms of the bare app's | "
            f"{p50('service', '/livez'):.2f} ms = bare {p50('floor', '/livez'):.2f} ms "
            f"+ {livez_gap:.2f} | {verdict(livez_gap <= 0.1)} |",
            f"| one cutout in process (`Scorer.score`) <= 0.30 ms | {one:.3f} ms | "
            f"{verdict(one <= 0.30)} |",
            f"| cold start to ready <= 2 s | {cold['fast']:.2f} s | {verdict(cold['fast'] <= 2)} |",
            f"| resident memory <= 300 MB per worker | {max(memory.values()):.0f} MB (largest) | "
            f"{verdict(max(memory.values()) <= 300)} |",
            "",
            "## Latency against the bare app (kept-alive `http.client`, taking turns)",
            "",
            "| request | service p50 ms | bare app p50 ms | service - bare ms | service / bare "
            "| service p99 ms | bare app p99 ms |",
            "|---|---|---|---|---|---|---|",
            *[
                f"| `{'GET /livez' if path == '/livez' else 'POST /v1/score'}` | "
                f"{p50('service', path):.3f} | {p50('floor', path):.3f} | "
                f"{p50('service', path) - p50('floor', path):.3f} | "
                f"{p50('service', path) / p50('floor', path):.2f} | "
                f"{floors[('service', path)]['p99_ms']:.3f} | "
                f"{floors[('floor', path)]['p99_ms']:.3f} |"
                for path in ("/livez", "/v1/score")
            ],
            "",
            "## Single source (`POST /v1/score`, JSON, `http.client` kept alive)",
            "",
            "| connections | p50 ms | p99 ms | requests/s |",
            "|---|---|---|---|",
            *[
                f"| {c} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['requests_per_second']:,.0f} |"
                for c, r in single.items()
            ],
            "",
            "![latency histogram](latency.png)",
            "",
            "## One cutout in process (`Scorer.score`, 1 thread, 256 cutouts one at a time)",
            "",
            "One k-NN search in the embedding serves both the UMAP placement and novelty's "
            "embedding space (the same training sample), against the two searches of before; "
            "the two take turns in one process. Medians, us per cutout:",
            "",
            "| | total | " + " | ".join(single_core["shared"]["stages_us"]) + " |",
            "|---|---|" + "---|" * len(single_core["shared"]["stages_us"]),
            *[
                f"| {name} | {r['total_us']:.0f} | "
                + " | ".join(f"{v:.0f}" for v in r["stages_us"].values())
                + " |"
                for name, r in single_core.items()
            ],
            "",
            "## Batch throughput (`POST /v1/score/batch`, 2 client connections)",
            "",
            "| format | batch | cutouts/s | / CNN alone |",
            "|---|---|---|---|",
            *[
                f"| {name} | {size} | {rate:,.0f} | {rate / cnn_rate:.2f} |"
                for (name, size), rate in batches.items()
            ],
            "",
            "## References on the same 1024 cutouts",
            "",
            "| path | cutouts/s | service (npy, 1024) / path |",
            "|---|---|---|",
            f"| research: PyTorch eager + umap-learn transform + SVC, in-process | "
            f"{research_rate:,.0f} | {best_binary / research_rate:.1f} |",
            f"| scoring core without HTTP, 2 processes x 1 thread | "
            f"{core['cutouts_per_second']:,.0f} | {best_binary / core['cutouts_per_second']:.2f} |",
            f"| `cnn.onnx` alone in ONNX Runtime, 2 processes x 1 thread | {cnn_rate:,.0f} | "
            f"{best_binary / cnn_rate:.2f} |",
            "",
            f"The research path's CNN agrees with the ONNX model to "
            f"{research['max_score_difference_vs_onnx']:.1e} in score.",
            "",
            "## Decode cost of a batch body (service.codec, in-process)",
            "",
            *self.decoding,
            "",
            "## Stage breakdown",
            "",
            "| stage | service during the batch runs (all formats, so decode is mostly JSON), "
            "us/cutout | core, batch 1024, us/cutout |",
            "|---|---|---|",
            *[
                f"| {s} | {stages[s]:.1f} | {1e6 * core['stage_seconds'][s] / 1024:.1f} |"
                if s in core["stage_seconds"]
                else f"| {s} | {stages[s]:.1f} | - |"
                for s in STAGES
            ],
            "",
            "## Cold start (process start to /readyz 200 on both workers)",
            "",
            "| UMAP path | seconds |",
            "|---|---|",
            *[f"| {label} | {seconds:.2f} |" for label, seconds in cold.items()],
            "",
            "## Resident memory after the load",
            "",
            "| worker pid | MB |",
            "|---|---|",
            *[f"| {pid} | {mb:.0f} |" for pid, mb in memory.items()],
            "",
            "## Fast UMAP placement vs umap-learn's transform (held-out set)",
            "",
            f"On the {agreement['cutouts']:,} regenerated held-out cutouts: identical final "
            f"decisions {agreement['identical_decisions']:.4%} (target >= 99.5%); in the "
            "ambiguous band where "
            f"the SVM decides ({agreement['ambiguous']} cutouts) "
            f"{agreement['identical_decisions_ambiguous']:.2%}. Coordinate shift median "
            f"{agreement['shift_median']:.3f}, 95th percentile {agreement['shift_p95']:.3f}, max "
            f"{agreement['shift_max']:.2f}, on a map {agreement['map_span']:.1f} wide.",
            "",
            "Where umap-learn's transform spends its time (batch 1024, per point): neighbour "
            f"query {agreement['reference_profile']['query_us']:.0f} us, the rest (weights, "
            f"initialisation, refinement epochs) {agreement['reference_profile']['rest_us']:.0f} "
            f"us, of {agreement['reference_profile']['total_us']:.0f} us.",
            "",
            "| path | us/point, batch 1024 | us/point, batch 1 |",
            "|---|---|---|",
            *[
                f"| {name} | {v['batch_1024']:.1f} | {v['batch_1']:.0f} |"
                for name, v in agreement["us_per_point"].items()
            ],
            "",
        ]
        return "\n".join(lines)


if __name__ == "__main__":
    main()
