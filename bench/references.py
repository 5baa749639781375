"""The in-process references the service is compared with, on the same cutouts.

research: what the 2020 code would run in a notebook: PyTorch eager CNN, umap-learn's own
``transform``, scikit-learn's SVC. core: this project's scoring core (``service.pipeline``)
without HTTP, one process per core like the gunicorn workers. CNN alone: ``cnn.onnx`` in ONNX
Runtime on the normalised cutouts and nothing else, also one process per core: the floor of the
work itself, which no serving of the whole ensemble can beat.
"""

import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from bench.timing import median_seconds
from service.bundle import ModelBundle
from service.pipeline import CHUNK, Scorer, umap_features


def eager_cnn_from_onnx(path: Path):
    """LineCNN in PyTorch eager with the exported weights (BatchNorm was folded into the
    convolutions at export, so the BatchNorm layers are set to identity)."""
    import onnx
    import torch

    from training.cnn import LineCNN

    weights = {
        i.name.removeprefix("cnn."): onnx.numpy_helper.to_array(i)
        for i in onnx.load(str(path)).graph.initializer
    }
    cnn = LineCNN().eval()
    state = cnn.state_dict()
    for name, value in state.items():
        if name in weights:
            state[name] = torch.from_numpy(weights[name].copy())
        elif name.endswith("running_var"):
            state[name] = torch.full_like(value, 1.0 - 1e-5)  # (x - 0) / sqrt(var + eps) = x
        elif name.endswith(("running_mean", "bias")):
            state[name] = torch.zeros_like(value)
        elif name.endswith("weight"):
            state[name] = torch.ones_like(value)
    cnn.load_state_dict(state)
    return cnn


def research_path(model_dir: Path, cutouts: np.ndarray, repeats: int) -> dict:
    """Median seconds of the research path on ``cutouts``, and its agreement with the core."""
    import torch

    bundle = ModelBundle.load(model_dir, umap_transform="reference")
    reducer_transform = bundle.place
    cnn = eager_cnn_from_onnx(model_dir / bundle.manifest["cnn"]["file"])
    scorer = Scorer(bundle)

    def run() -> np.ndarray:
        model_input = scorer.model_input(cutouts)
        with torch.no_grad():
            logit, embedding = cnn(torch.from_numpy(model_input))
        score = torch.sigmoid(logit).numpy()
        coords = reducer_transform(
            umap_features(model_input, embedding.numpy(), bundle.umap_source)
        )
        bundle.svm.decision_function(coords)
        return score

    score = run()  # warm-up, includes numba compilation
    onnx_score, _ = scorer.cnn(scorer.model_input(cutouts))
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        run()
        times.append(time.perf_counter() - begin)
    return {
        "seconds": float(np.median(times)),
        "max_score_difference_vs_onnx": float(np.abs(score - onnx_score).max()),
    }


def _core_worker(args: tuple[Path, np.ndarray, int]) -> tuple[float, dict]:
    from service.runtime import cap_thread_pools

    model_dir, cutouts, repeats = args
    scorer = Scorer(ModelBundle.load(model_dir, intra_op_threads=1))
    cap_thread_pools(1)
    scorer.score(cutouts)
    times, stages = [], []
    for _ in range(repeats):
        timings: dict[str, float] = {}
        begin = time.perf_counter()
        scorer.score(cutouts, timings)
        times.append(time.perf_counter() - begin)
        stages.append(timings)
    medians = {name: float(np.median([t[name] for t in stages])) for name in stages[0]}
    return float(np.median(times)), medians


@contextmanager
def environment(**variables: str) -> Iterator[None]:
    """Set variables for processes started inside the block (spawned children read them
    before importing numpy, which is when thread pools are sized)."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def core(model_dir: Path, cutouts: np.ndarray, repeats: int, processes: int = 2) -> dict:
    """Aggregate cutouts/s of the scoring core in ``processes`` single-threaded processes."""
    caps = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    with (
        environment(**caps),
        ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool,
    ):
        results = list(pool.map(_core_worker, [(model_dir, cutouts, repeats)] * processes))
    seconds = [r[0] for r in results]
    return {
        "cutouts_per_second": processes * len(cutouts) / float(np.median(seconds)),
        "stage_seconds": results[0][1],
    }


def _cnn_worker(args: tuple[Path, np.ndarray, int]) -> float:
    """Median seconds of the CNN alone on ``model_input``, in the service's chunks and session
    settings (one thread), after one warm-up pass."""
    model_dir, model_input, repeats = args
    cnn = Scorer(ModelBundle.load(model_dir, intra_op_threads=1)).cnn

    def run() -> None:
        for i in range(0, len(model_input), CHUNK):
            cnn(model_input[i : i + CHUNK])

    return median_seconds(run, repeats)


def cnn_alone(model_dir: Path, cutouts: np.ndarray, repeats: int, processes: int = 2) -> float:
    """Aggregate cutouts/s of ``cnn.onnx`` alone in ``processes`` single-threaded processes."""
    model_input = Scorer(ModelBundle.load(model_dir)).model_input(cutouts)
    caps = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    with (
        environment(**caps),
        ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool,
    ):
        seconds = list(pool.map(_cnn_worker, [(model_dir, model_input, repeats)] * processes))
    return processes * len(cutouts) / float(np.median(seconds))


def _single_cutout_worker(args: tuple[Path, np.ndarray, int]) -> dict:
    """Median us per stage and in all of ``Scorer.score`` on one cutout at a time, with one
    k-NN search shared by placement and novelty and with the two searches of before, taking
    turns so both see the same machine."""
    from service.runtime import cap_thread_pools

    model_dir, cutouts, rounds = args
    bundle = ModelBundle.load(model_dir, intra_op_threads=1)
    scorer, shared = Scorer(bundle), bundle.shared_search
    cap_thread_pools(1)
    totals: dict[str, list[float]] = {"shared": [], "separate": []}
    stages: dict[str, list[dict]] = {"shared": [], "separate": []}
    for round_ in range(rounds + 1):
        for name, search in (("shared", shared), ("separate", None)):
            bundle.shared_search = search
            timings: dict[str, float] = {}
            begin = time.perf_counter()
            for cutout in cutouts:
                scorer.score(cutout[None], timings)
            if round_:  # the first round warms up
                totals[name].append((time.perf_counter() - begin) / len(cutouts))
                stages[name].append({k: v / len(cutouts) for k, v in timings.items()})
    return {
        name: {
            "total_us": 1e6 * float(np.median(totals[name])),
            "stages_us": {
                stage: 1e6 * float(np.median([t[stage] for t in stages[name]]))
                for stage in stages[name][0]
            },
        }
        for name in totals
    }


def single_cutout(model_dir: Path, cutouts: np.ndarray, rounds: int = 7) -> dict:
    """The in-process core on one cutout per call, in a fresh single-threaded process."""
    caps = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    with (
        environment(**caps),
        ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool,
    ):
        return pool.submit(_single_cutout_worker, (model_dir, cutouts[:256], rounds)).result()
