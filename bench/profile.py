"""Where a gunicorn worker's time goes under load: py-spy samples one worker while a client
hammers it.

``linescore serve`` runs with one worker; a client process sends requests on a kept-alive
``http.client`` connection (one detection to POST /v1/score, then npy batches of 1024); py-spy
(pinned in the ``test`` extra) attaches to the worker and records its Python stacks
(``py-spy record --format raw --nonblocking``: the worker is not paused; threads asleep are
left out, so a thread woken but still waiting for a core counts). Each sample is put in the
part of the request path it was in, and the functions holding the most samples themselves are
listed. py-spy needs to be allowed to attach (root, or ptrace permitted); if it cannot, the
section says why. bench.choices writes it into bench/CHOICES.md; alone: python -m bench.profile
"""

import io
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from bench import server

PY_SPY = Path(sys.executable).parent / "py-spy"
NPY = "application/x-npy"
RATE = 250  # samples per second

# (part of the request path, what marks a sample as in it): the first part whose mark is in a
# sample's stack takes the sample, so the scoring stages come before what calls them.
STAGES_OF_THE_CORE = (
    ("core: preprocess", "Scorer.model_input"),
    ("core: CNN (ONNX Runtime)", "Scorer.cnn"),
    ("core: UMAP placement (k-NN, weights)", "umap_fast.py"),
    ("core: SVM", "svm_fast.py"),
    ("core: novelty (pixel k-NN, shares)", "novelty.py"),
)
PARTS = (
    *STAGES_OF_THE_CORE,
    ("core: other", "Scorer."),
    ("data plane: results, flags", "DataPlane.score"),
    ("encode", "encode (service/codec.py"),
    ("decode (codec)", "service/codec.py"),
    ("metrics (prometheus-client)", "service/telemetry.py"),
    ("access log", "logging/"),
    ("request hooks: id, headers", "service/web/hooks.py"),
    ("Flask and Werkzeug", "flask/"),
    ("gunicorn: read and parse the request", "gunicorn/http/"),
    ("gunicorn: write the answer", "Response.write"),
    ("gunicorn: poller, hand-off to and from the thread, heartbeat", "gunicorn/"),
    ("thread pool: a request thread woken, waiting for a core", "concurrent/futures/"),
)


def part_of(stack: str) -> str:
    return next((part for part, mark in PARTS if mark in stack), "other")


def summarise(raw: str, top: int = 12) -> tuple[Counter, Counter, int]:
    """Samples per part of the request path, and per function on top of the stack."""
    parts: Counter = Counter()
    leaves: Counter = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        parts[part_of(stack)] += samples
        leaves[stack.rsplit(";", 1)[-1]] += samples
    return parts, Counter(dict(leaves.most_common(top))), total


def record(pid: int, seconds: float) -> str:
    """py-spy's raw samples of ``pid`` for ``seconds``; raises RuntimeError with py-spy's
    words if it cannot attach."""
    out = Path(f"/tmp/linescore-profile-{pid}.txt")
    try:
        done = subprocess.run(
            [
                str(PY_SPY if PY_SPY.exists() else shutil.which("py-spy") or "py-spy"),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                str(RATE),
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
        if done.returncode != 0 or not out.exists():
            raise RuntimeError((done.stderr or done.stdout).strip().splitlines()[-1])
        return out.read_text()
    except FileNotFoundError as error:
        raise RuntimeError(f"py-spy is not installed ({error})") from None
    finally:
        out.unlink(missing_ok=True)


def under_load(targets: list[server.Target], pid: int, seconds: float) -> tuple[str, float]:
    """py-spy's samples of the worker while ``targets`` take turns on kept-alive connections
    from another process, and the client's median latency in ms."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        load = pool.submit(server.interleaved, (targets, seconds + 3, 10, 50))
        time.sleep(1.5)  # the client is up and warm
        try:
            raw = record(pid, seconds)
        finally:
            latencies = load.result()
    return raw, 1e3 * float(np.median(np.concatenate(latencies)))


def table(title: str, raw: str, latency_ms: float) -> list[str]:
    parts, leaves, total = summarise(raw)
    return [
        f"{title} (client p50 {latency_ms:.2f} ms while sampled; {total:,} samples)",
        "",
        "| part of the request path | share of the worker's samples |",
        "|---|---|",
        *[f"| {part} | {count / total:.1%} |" for part, count in parts.most_common()],
        "",
        "| function on top of the stack | share |",
        "|---|---|",
        *[f"| `{leaf}` | {count / total:.1%} |" for leaf, count in leaves.items()],
        "",
    ]


def section(cutout: np.ndarray, batch: np.ndarray, seconds: float = 6) -> list[str]:
    """Markdown: the profile of one worker under single detections, then under npy batches."""
    single = json.dumps({"detectid": 1000512345, "cutout": cutout.tolist(), "wave": 4500.0})
    buffer = io.BytesIO()
    np.save(buffer, batch)
    version = subprocess.run(
        [str(PY_SPY), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    lines = [
        f"`{version or 'py-spy'}` on the one worker of `linescore serve --workers 1`, "
        f"{RATE} samples/s for {seconds:g} s per load, not pausing it; threads asleep are left "
        "out (a thread woken but still waiting for a core counts).",
        "",
    ]
    with server.serving({}, workers=1) as live:
        (worker,) = live.workers()
        loads = (
            (
                "One detection, `POST /v1/score`, 1 kept-alive connection",
                [server.Target(live.port, "/v1/score", "application/json", single.encode())],
            ),
            (
                f"npy batches of {len(batch)}, `POST /v1/score/batch`, 1 kept-alive connection",
                [
                    server.Target(
                        live.port, "/v1/score/batch", "application/x-npy", buffer.getvalue()
                    )
                ],
            ),
        )
        for title, targets in loads:
            try:
                raw, latency = under_load(targets, worker, seconds)
            except RuntimeError as error:
                return [*lines, f"py-spy could not sample the worker here: {error}", ""]
            lines += table(title, raw, latency)
    return lines


def main() -> None:
    from training.simulators.a import simulate
    from training.simulators.simulated_set import class_counts_for

    cutouts = simulate(class_counts_for(1024), seed=4242).im_sum
    print("\n".join(section(cutouts[0], cutouts)))


if __name__ == "__main__":
    main()
