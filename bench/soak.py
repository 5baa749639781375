"""Soak: 60 s of open-loop load at ~80% of the measured maximum, on loopback; stops by itself.

1. Maximum: two closed-loop clients post npy batches for ``--max-seconds``.
2. Load: four client processes send the same batches on a fixed schedule at ``--fraction`` of
   that rate for ``--seconds``. Latency is measured from each request's *scheduled* time, so a
   stalled server shows up as latency rather than as fewer requests.
3. Worker resident memory is sampled every 5 s; growth is from the first sample (after warm-up
   traffic) to the last.

"Stable p99" means it does not grow while the load goes on: the last window's p99 is at most 1.5
times the first's. Every window is reported, so spikes from the shared machine stay visible.

Writes bench/SOAK.md. Run: ``python -m bench.soak`` (``make soak``).
"""

import argparse
import http.client
import io
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from bench import server
from bench.run import machine, run_clients
from training.simulators.a import simulate
from training.simulators.simulated_set import class_counts_for

OUT = Path(__file__).resolve().parent
PATH, NPY = "/v1/score/batch", "application/x-npy"
CLIENTS = 4
WINDOW_SECONDS = 20
TARGETS = {"p99_drift": 1.5, "memory_growth": 0.05}


def scheduled_client(args: tuple[int, bytes, float, float, float]) -> list[tuple]:
    """Send at start + k / rate until ``seconds`` pass: (scheduled, latency, service, status)."""
    port, body, rate, start, seconds = args
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    records = []
    k = 0
    while (scheduled := start + k / rate) < start + seconds:
        time.sleep(max(0.0, scheduled - time.time()))
        sent = time.time()
        try:
            connection.request("POST", PATH, body, {"Content-Type": NPY})
            response = connection.getresponse()
            response.read()
            status: int | str = response.status
        except OSError as error:
            status = type(error).__name__
            connection.close()
        done = time.time()
        records.append((scheduled - start, done - scheduled, done - sent, status))
        k += 1
    connection.close()
    return records


def started(_: int) -> int:
    """Run in every client process before the schedule starts, so imports do not eat into it."""
    time.sleep(0.2)
    return os.getpid()


def load(port: int, body: bytes, rate: float, seconds: float, live: server.Server) -> dict:
    memory: list[tuple[float, dict[int, float]]] = []
    with ProcessPoolExecutor(CLIENTS, mp_context=get_context("spawn")) as pool:
        ready: set[int] = set()
        while len(ready) < CLIENTS:
            ready |= set(pool.map(started, range(CLIENTS)))
        start = time.time() + 1.0
        args = [(port, body, rate / CLIENTS, start + i / rate, seconds) for i in range(CLIENTS)]
        futures = [pool.submit(scheduled_client, a) for a in args]
        while not all(f.done() for f in futures):
            if time.time() > start + 5 and (not memory or time.time() - memory[-1][0] >= 5):
                memory.append((time.time(), {p: server.resident_mb(p) for p in live.workers()}))
            time.sleep(0.2)
        records = [r for f in futures for r in f.result()]
    return {"records": records, "memory": memory}


def summarise(records: list[tuple], memory: list, seconds: float) -> dict:
    at, latency, service = (np.array([r[i] for r in records], dtype=float) for i in range(3))
    status = np.array([str(r[3]) for r in records])
    ok = status == "200"
    windows = []
    for begin in range(0, int(seconds), WINDOW_SECONDS):
        inside = (at >= begin) & (at < begin + WINDOW_SECONDS)
        windows.append(
            {
                "window": f"{begin}-{begin + WINDOW_SECONDS} s",
                "requests": int(inside.sum()),
                "p50_ms": 1e3 * float(np.percentile(latency[inside], 50)),
                "p99_ms": 1e3 * float(np.percentile(latency[inside], 99)),
            }
        )
    first, last = memory[0][1], memory[-1][1]
    growth = {pid: (last[pid] - first[pid]) / first[pid] for pid in first if pid in last}
    p99s = [w["p99_ms"] for w in windows]
    return {
        "requests": len(records),
        "errors": int((~ok).sum()),
        "error_kinds": sorted(set(status[~ok])),
        "p50_ms": 1e3 * float(np.percentile(latency, 50)),
        "p99_ms": 1e3 * float(np.percentile(latency, 99)),
        "service_p99_ms": 1e3 * float(np.percentile(service, 99)),
        "windows": windows,
        "p99_drift": p99s[-1] / p99s[0],
        "p99_spread": max(p99s) / min(p99s),
        "memory_first": first,
        "memory_last": last,
        "memory_growth": growth,
        "memory_samples": len(memory),
    }


def markdown(info: dict, batch: int, maximum: float, rate: float, args, result: dict) -> str:
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    worst_growth = max(result["memory_growth"].values())
    lines = [
        "# Soak (`make soak`, `python -m bench.soak`)",
        "",
        f"Machine: {info['cores']} cores, {info['memory_gib']} GiB, Python {info['python']}, "
        f"commit {info['commit']}. Server: `linescore serve`, 2 workers, packaged model; "
        f"clients on the same cores. Body: npy batch of {batch} simulated cutouts.",
        "",
        f"- Measured maximum ({args.max_seconds:.0f} s, 2 closed-loop clients): "
        f"{maximum:.1f} requests/s ({maximum * batch:,.0f} cutouts/s).",
        f"- Load: {args.seconds:.0f} s open loop at {args.fraction:.0%} of that, "
        f"{rate:.1f} requests/s from {CLIENTS} client processes; "
        f"{result['requests']} requests sent.",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
        f"| zero errors | {result['errors']} errors {result['error_kinds'] or ''} | "
        f"{verdict(result['errors'] == 0)} |",
        f"| stable p99 (last / first {WINDOW_SECONDS} s window <= {TARGETS['p99_drift']}) | "
        f"{result['p99_drift']:.2f} (worst / best window {result['p99_spread']:.2f}) | "
        f"{verdict(result['p99_drift'] <= TARGETS['p99_drift'])} |",
        f"| worker memory growth < {TARGETS['memory_growth']:.0%} | "
        f"{worst_growth:+.2%} (worst worker) | "
        f"{verdict(worst_growth < TARGETS['memory_growth'])} |",
        "",
        f"Latency from the scheduled send time: p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms (from the actual send: "
        f"p99 {result['service_p99_ms']:.1f} ms).",
        "",
        "| window | requests | p50 ms | p99 ms |",
        "|---|---|---|---|",
        *(
            f"| {w['window']} | {w['requests']} | {w['p50_ms']:.1f} | {w['p99_ms']:.1f} |"
            for w in result["windows"]
        ),
        "",
        f"Worker resident memory ({result['memory_samples']} samples, every 5 s):",
        "",
        "| worker | first MB | last MB | growth |",
        "|---|---|---|---|",
        *(
            f"| {pid} | {result['memory_first'][pid]:.1f} | {result['memory_last'][pid]:.1f} | "
            f"{growth:+.2%} |"
            for pid, growth in result["memory_growth"].items()
        ),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load phase")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="maximum measurement")
    parser.add_argument("--fraction", type=float, default=0.8, help="of the measured maximum")
    parser.add_argument("--batch", type=int, default=256, help="cutouts per request")
    args = parser.parse_args()
    cutouts = simulate(class_counts_for(args.batch), seed=4242).im_sum[: args.batch]
    buffer = io.BytesIO()
    np.save(buffer, cutouts)
    body = buffer.getvalue()
    info = machine()
    with server.serving({"LINESCORE_DRAIN_SECONDS": "0"}) as live:
        closed = run_clients(live.port, PATH, NPY, body, 2, args.max_seconds, warmup=5)
        maximum = sum(len(c) for c in closed) / args.max_seconds
        rate = args.fraction * maximum
        measured = load(live.port, body, rate, args.seconds, live)
    result = summarise(measured["records"], measured["memory"], args.seconds)
    text = markdown(info, args.batch, maximum, rate, args, result)
    (OUT / "SOAK.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
