"""This checkout against another (before a change), side by side on the same machine.

    python -m bench.compare BEFORE [--seconds 20] [--rounds 5]

BEFORE is the root of another checkout (for example ``git worktree add /tmp/before HEAD~1``).
``linescore serve`` runs from each, beside the bare floor app (bench/floor.py); one client
process takes turns between them on kept-alive ``http.client`` connections (/livez and one
detection to POST /v1/score), so all see the same machine. Then one cutout at a time through
``Scorer.score``, in fresh processes of each checkout taking turns. Prints Markdown with
after/before ratios: how each cut of the request path was measured.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from bench import server
from service.manifest import newest_model_dir

ROOT = Path(__file__).resolve().parents[1]

# One cutout at a time through Scorer.score, in whichever checkout the process imports from.
SINGLE = """
import os, sys, time
for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[name] = "1"
import numpy as np
from service.bundle import ModelBundle
from service.pipeline import Scorer
from service.runtime import cap_thread_pools
cutouts = np.load(sys.argv[2])
scorer = Scorer(ModelBundle.load(sys.argv[1], intra_op_threads=1))
cap_thread_pools(1)
rounds = []
for round_ in range(4):
    begin = time.perf_counter()
    for cutout in cutouts:
        scorer.score(cutout[None])
    rounds.append((time.perf_counter() - begin) / len(cutouts))
print(1e6 * float(np.median(rounds[1:])))
"""


def serve_from(checkout: Path, model_dir: Path) -> server.Server:
    """``linescore serve`` importing the ``service`` package of ``checkout``."""
    return server.start(
        {"PYTHONPATH": str(checkout), "LINESCORE_MODEL_DIR": str(model_dir)},
        command=[sys.executable, "-P", "-m", "service.cli", "serve"],
        cwd=checkout,  # linescore serve re-executes itself with -m: the cwd comes first then
    )


def single_cutout_us(checkout: Path, model_dir: Path, cutouts: Path) -> float:
    done = subprocess.run(
        [sys.executable, "-P", "-c", SINGLE, str(model_dir), str(cutouts)],
        env={**os.environ, "PYTHONPATH": str(checkout)},
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("before", type=Path, help="root of the checkout to compare against")
    parser.add_argument("--seconds", type=float, default=20.0, help="HTTP, all turns together")
    parser.add_argument("--rounds", type=int, default=5, help="in-process turns per checkout")
    args = parser.parse_args()
    from training.simulators.a import simulate
    from training.simulators.simulated_set import class_counts_for

    model_dir = newest_model_dir(ROOT / "models")
    cutouts = simulate(class_counts_for(1024), seed=4242).im_sum[:256]
    body = json.dumps({"detectid": 1000512345, "cutout": cutouts[0].tolist(), "wave": 4500.0})
    checkouts = {"before": args.before.resolve(), "after": ROOT}
    lives = {name: serve_from(path, model_dir) for name, path in checkouts.items()}
    lives["bare app"] = server.start({}, command=server.FLOOR)
    try:
        keys = [(name, path) for path in ("/livez", "/v1/score") for name in lives]
        targets = [
            server.Target(lives[name].port, "/livez")
            if path == "/livez"
            else server.Target(lives[name].port, path, "application/json", body.encode())
            for name, path in keys
        ]
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            latencies = pool.submit(server.interleaved, (targets, args.seconds, 100, 200)).result()
    finally:
        for live in lives.values():
            live.stop()
    p50 = {key: 1e3 * float(np.median(times)) for key, times in zip(keys, latencies, strict=True)}
    with tempfile.NamedTemporaryFile(suffix=".npy") as file:
        np.save(file.name, cutouts)
        turns: dict[str, list[float]] = {name: [] for name in checkouts}
        for _ in range(args.rounds):
            for name, path in checkouts.items():
                turns[name].append(single_cutout_us(path, model_dir, Path(file.name)))
    one = {name: float(np.median(times)) for name, times in turns.items()}
    lines = [
        f"before: {checkouts['before']}; after: {ROOT}; medians",
        "",
        "| measure | bare app | before | after | after / before |",
        "|---|---|---|---|---|",
        *[
            f"| {path} p50 ms (kept-alive http.client) | {p50[('bare app', path)]:.3f} | "
            f"{p50[('before', path)]:.3f} | {p50[('after', path)]:.3f} | "
            f"{p50[('after', path)] / p50[('before', path)]:.2f} |"
            for path in ("/livez", "/v1/score")
        ],
        f"| one cutout in process, us | - | {one['before']:.0f} | {one['after']:.0f} | "
        f"{one['after'] / one['before']:.2f} |",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
