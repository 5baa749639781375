"""The measurements behind the serving path's design choices, side by side in one run.

Where one worker's time goes under load (py-spy, bench/profile.py); the gunicorn worker with and
without keep-alive and with 1 or 2 request threads (single sources and batches); ONNX Runtime
batch chunk and memory arena; the SVM's decision function (scikit-learn vs numpy) for one point;
normalisation (nanmedian vs sort); umap-learn's placement of the same cutout alone vs inside a
batch. Writes bench/CHOICES.md. Run: .venv/bin/python -m bench.choices (part of `make bench`).
"""

import io
import os
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench import decode, profile, server
from bench.run import batch_rate, single_source
from bench.timing import median_seconds
from service.bundle import ModelBundle
from service.manifest import newest_model_dir
from service.pipeline import Scorer, umap_features
from service.preprocess import MAD_TO_SIGMA, robust_centre_and_spread
from service.runtime import cap_thread_pools
from training.simulators.a import simulate
from training.simulators.simulated_set import class_counts_for

ROOT = Path(__file__).resolve().parents[1]


def resident_mb() -> float:
    return server.resident_mb(os.getpid())


WORKER_CHOICES = {
    "close after each answer (as the sync workers did)": {"LINESCORE_KEEPALIVE": "0"},
    "keep-alive, 1 request thread per worker": {"LINESCORE_HTTP_THREADS": "1"},
    "keep-alive, 2 request threads per worker (default)": {},
}


def worker_choices(cutouts: np.ndarray, seconds: float = 4) -> list[str]:
    """The shipped worker in each configuration, one after another in this run."""
    buffer = io.BytesIO()
    np.save(buffer, cutouts)
    rows = [
        "| worker | single p50 ms (1 connection) | single p99 ms | requests/s (4 connections) "
        "| npy 1024 cutouts/s (2 clients) |",
        "|---|---|---|---|---|",
    ]
    for label, env in WORKER_CHOICES.items():
        with server.serving(env) as live:
            single = single_source(live.port, cutouts[0], seconds, counts=(1, 4))
            rate = batch_rate(
                live.port, "application/x-npy", buffer.getvalue(), len(cutouts), seconds
            )
        rows.append(
            f"| {label} | {single[1]['p50_ms']:.2f} | {single[1]['p99_ms']:.2f} | "
            f"{single[4]['requests_per_second']:,.0f} | {rate:,.0f} |"
        )
    return rows


MALLOC_CHOICES: dict[str, dict[str, str | None]] = {
    "2 arenas, glibc's dynamic thresholds": {
        "MALLOC_ARENA_MAX": "2",
        "MALLOC_MMAP_THRESHOLD_": None,
        "MALLOC_TRIM_THRESHOLD_": None,
    },
    "2 arenas, mmap from 1 MiB (trim: glibc's 128 KiB)": {
        "MALLOC_ARENA_MAX": "2",
        "MALLOC_MMAP_THRESHOLD_": str(1 << 20),
        "MALLOC_TRIM_THRESHOLD_": None,
    },
    "2 arenas, mmap from 8 MiB, trim above 32 MiB (default)": {
        "MALLOC_ARENA_MAX": None,
        "MALLOC_MMAP_THRESHOLD_": None,
        "MALLOC_TRIM_THRESHOLD_": None,
    },
}


def malloc_settings(cutouts: np.ndarray, seconds: float = 3) -> list[str]:
    """Resident memory per worker after every batch format at 1024, per glibc setting (None:
    the variable is unset; with MALLOC_ARENA_MAX unset, `linescore serve` sets its defaults)."""
    rows = [
        "| glibc malloc | RSS per worker MB after the batch load | npy 1024 cutouts/s "
        "| JSON 1024 cutouts/s |",
        "|---|---|---|---|",
    ]
    for label, env in MALLOC_CHOICES.items():
        with server.serving(env) as live:
            rates = {
                name: batch_rate(live.port, content_type, body, len(cutouts), seconds)
                for name, (content_type, body) in decode.bodies(cutouts).items()
            }
            memory = [server.resident_mb(pid) for pid in live.workers()]
        rows.append(
            f"| {label} | {', '.join(f'{mb:.0f}' for mb in memory)} | {rates['npy']:,.0f} | "
            f"{rates['json']:,.0f} |"
        )
    return rows


def onnx_runtime(model_dir: Path) -> list[str]:
    rows = ["| ORT setting | us/cutout (1024) | RSS growth MB |", "|---|---|---|"]
    batch = np.random.default_rng(0).standard_normal((1024, 2, 9, 32)).astype(np.float32)
    for arena, chunk in ((True, 1024), (True, 256), (False, 1024)):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.enable_cpu_mem_arena = arena
        session = ort.InferenceSession(str(model_dir / "cnn.onnx"), options)
        before = resident_mb()
        seconds = median_seconds(
            lambda s=session, c=chunk: [
                s.run(None, {"cutout": batch[i : i + c]}) for i in range(0, 1024, c)
            ]
        )
        rows.append(
            f"| arena {'on' if arena else 'off'}, chunk {chunk} | "
            f"{seconds / 1024 * 1e6:.1f} | {resident_mb() - before:.0f} |"
        )
        del session
    return rows


def single_point_svm(bundle: ModelBundle) -> list[str]:
    point = bundle.umap_map["coords"][:1].astype(np.float64)
    sklearn = median_seconds(lambda: bundle.svm.decision_function(point), 200)
    numpy = median_seconds(lambda: bundle.svm_decision(point), 200)
    return [
        f"SVM decision for one point: scikit-learn {sklearn * 1e6:.0f} us, numpy "
        f"(service.svm_fast) {numpy * 1e6:.0f} us."
    ]


def normalisation(cutouts: np.ndarray) -> list[str]:
    flat = cutouts[:, :, 34:66].reshape(len(cutouts), -1)
    masked = flat == 0

    def nanmedian_version() -> None:
        values = np.where(masked, np.nan, flat)
        with warnings.catch_warnings():  # fully masked bad-amp cutouts: all-NaN rows
            warnings.simplefilter("ignore", RuntimeWarning)
            centre = np.nanmedian(values, axis=1)
            np.nanmedian(np.abs(values - centre[:, None]), axis=1) * MAD_TO_SIGMA

    slow = median_seconds(nanmedian_version)
    fast = median_seconds(lambda: robust_centre_and_spread(flat, masked))
    return [
        f"Robust statistics for 1024 cutouts: np.nanmedian {slow / 1024 * 1e6:.1f} us/cutout, "
        f"sort-based {fast / 1024 * 1e6:.1f} us/cutout."
    ]


def numpy_search(train: np.ndarray, k: int) -> Callable[[np.ndarray], tuple]:
    """The exact search the service ran before faiss: one matrix product against the sample,
    argpartition and a sort of the k chosen, then their distances."""
    minus_two_train_t = np.ascontiguousarray(-2.0 * train.T)
    train_sq = np.einsum("ij,ij->i", train, train)

    def search(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        partial = features @ minus_two_train_t
        partial += train_sq
        nearest = np.argpartition(partial, k - 1, axis=1)[:, :k]
        rows = np.arange(len(features))[:, None]
        order = np.argsort(partial[rows, nearest], axis=1)
        squared = partial[rows, nearest[rows, order]]
        squared += np.einsum("ij,ij->i", features, features)[:, None]
        return nearest[rows, order], np.sqrt(np.maximum(squared, 0.0))

    return search


def knn_search(bundle: ModelBundle) -> list[str]:
    """faiss (service.neighbours) against the numpy search it replaced, on the packaged model's
    own reference samples, one thread, taking turns; queries are sample points plus noise."""
    cap_thread_pools(1)
    rng = np.random.default_rng(0)
    searches = {f"novelty, {space}": ref for space, ref in bundle.novelty.references_.items()}
    if bundle.shared_search is not None:  # the placement's search (novelty's embedding one too)
        searches = {"UMAP placement": bundle.shared_search.neighbours, **searches}
    rows = [
        "| search | dims | k | batch | numpy us/query | faiss us/query | numpy / faiss "
        "| same neighbours |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, faiss_search in searches.items():
        train, k = faiss_search.train_, faiss_search.k_
        noise = rng.normal(0, 0.3 * train.std(), (1024, train.shape[1])).astype(np.float32)
        queries = train[rng.choice(len(train), 1024)] + noise
        numpy = numpy_search(train, k)
        same = np.mean(np.sort(numpy(queries)[0], 1) == np.sort(faiss_search(queries)[0], 1))
        for batch in (1024, 1):
            part = np.ascontiguousarray(queries[:batch])
            repeats = 15 if batch > 1 else 300
            old, new = [], []
            for _ in range(3):  # taking turns, so drift on a shared machine hits both
                old.append(median_seconds(partial(numpy, part), repeats))
                new.append(median_seconds(partial(faiss_search, part), repeats))
            old_us, new_us = np.median(old) / batch * 1e6, np.median(new) / batch * 1e6
            rows.append(
                f"| {name} | {train.shape[1]} | {k} | {batch} | {old_us:.1f} | {new_us:.1f} "
                f"| {old_us / new_us:.2f} | {same:.4f} |"
            )
    return rows


def batch_dependence(model_dir: Path, cutouts: np.ndarray) -> list[str]:
    reference = ModelBundle.load(model_dir, umap_transform="reference")
    fast = ModelBundle.load(model_dir, umap_transform="fast")
    scorer = Scorer(fast)
    model_input = scorer.model_input(cutouts[:512])
    _, embedding = scorer.cnn(model_input)
    features = umap_features(model_input, embedding, fast.umap_source)
    shifts = {}
    for name, bundle in (("umap-learn", reference), ("fast", fast)):
        in_batch = bundle.place(features)
        alone = np.concatenate([bundle.place(features[i : i + 1]) for i in range(50)])
        shifts[name] = float(np.abs(alone - in_batch[:50]).max())
    return [
        f"Largest coordinate change of a cutout placed alone instead of inside a batch of "
        f"512: umap-learn {shifts['umap-learn']:.3f}, fast {shifts['fast']:.1e}."
    ]


def main() -> None:
    model_dir = newest_model_dir(ROOT / "models")
    cutouts = simulate(class_counts_for(1024), seed=4242).im_sum
    bundle = ModelBundle.load(model_dir)
    sections = [
        ("Where a worker's time goes under load (py-spy)", profile.section(cutouts[0], cutouts)),
        ("Gunicorn worker (2 workers): keep-alive and request threads", worker_choices(cutouts)),
        ("Worker memory: glibc malloc settings", malloc_settings(cutouts)),
        ("ONNX Runtime batch chunk and memory arena", onnx_runtime(model_dir)),
        ("k-NN search: faiss against the numpy search it replaced", knn_search(bundle)),
        ("Single-point SVM", single_point_svm(bundle)),
        ("Normalisation", normalisation(cutouts)),
        ("UMAP placement and batch composition", batch_dependence(model_dir, cutouts)),
    ]
    lines = [
        "# Measurements behind the serving choices",
        "",
        "`python -m bench.choices` (part of `make bench`), one run, medians.",
        "",
    ]
    for title, rows in sections:
        lines += [f"## {title}", "", *rows, ""]
    text = "\n".join(lines)
    (ROOT / "bench" / "CHOICES.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
