"""Fast UMAP placement (service.umap_fast) against umap-learn's own transform, on held-out data.

Reports the share of identical final decisions (all cutouts, and the ambiguous band where the
SVM decides), coordinate differences, and the cost per point of both paths.
"""

import json
from pathlib import Path

import numpy as np

from bench.timing import median_seconds
from service.bundle import ModelBundle
from service.pipeline import Scorer, decide, umap_features
from training.build import SimulatedSpec


def seconds_per_point(place, features: np.ndarray, batch: int, repeats: int) -> float:
    def run() -> None:
        for start in range(0, len(features), batch):
            place(features[start : start + batch])

    return median_seconds(run, repeats) / len(features)  # warm-up compiles numba (reference)


def place_both(model_dir: Path, cutouts: np.ndarray) -> dict:
    """Coordinates and final decisions of the same cutouts under both UMAP placements."""
    fast = ModelBundle.load(model_dir, umap_transform="fast")
    reference = ModelBundle.load(model_dir, umap_transform="reference")
    scorer = Scorer(fast)
    model_input = scorer.model_input(cutouts)
    score, embedding = scorer.cnn(model_input)
    features = umap_features(model_input, embedding, fast.umap_source)
    low, high = fast.thresholds
    coords = {"fast": fast.place(features), "reference": reference.place(features)}
    decisions = {
        name: decide(score, fast.svm.decision_function(xy), low, high)[0]
        for name, xy in coords.items()
    }
    return {
        "fast": fast,
        "reference": reference,
        "features": features,
        "coords": coords,
        "decisions": decisions,
        "ambiguous": (score >= low) & (score < high),
    }


def reference_profile(model_dir: Path, features: np.ndarray, repeats: int) -> dict:
    """Where umap-learn's transform spends its time: the neighbour query vs everything after
    it (membership weights, initialisation and the ~100 epochs of refinement)."""
    import io

    import joblib

    from service.manifest import read_manifest, verified_bytes

    manifest = read_manifest(model_dir)
    reducer = joblib.load(io.BytesIO(verified_bytes(model_dir, manifest, manifest["umap"]["file"])))
    epsilon = 0.24 if reducer._knn_search_index._angular_trees else 0.12  # as umap-learn does
    batch = features[:1024]
    total = median_seconds(lambda: reducer.transform(batch), repeats) / len(batch)
    query = median_seconds(
        lambda: reducer._knn_search_index.query(batch, reducer.n_neighbors, epsilon), repeats
    ) / len(batch)
    return {"total_us": 1e6 * total, "query_us": 1e6 * query, "rest_us": 1e6 * (total - query)}


def decisions_by_transform(model_dir: Path, cutouts: np.ndarray) -> dict[str, np.ndarray]:
    return place_both(model_dir, cutouts)["decisions"]


def agreement(model_dir: Path, repeats: int = 3) -> dict:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    spec = SimulatedSpec.from_description(manifest["heldout"]["simulator"])
    cutouts = spec.generate(progress=False).im_sum
    placed = place_both(model_dir, cutouts)
    fast, reference, features = placed["fast"], placed["reference"], placed["features"]
    coords, decisions, ambiguous = placed["coords"], placed["decisions"], placed["ambiguous"]
    same = decisions["fast"] == decisions["reference"]
    shift = np.linalg.norm(coords["fast"] - coords["reference"], axis=1)
    span = float(np.ptp(fast.umap_map["coords"], axis=0).max())
    single = features[:200]
    return {
        "cutouts": len(cutouts),
        "ambiguous": int(ambiguous.sum()),
        "identical_decisions": float(same.mean()),
        "identical_decisions_ambiguous": float(same[ambiguous].mean()),
        "shift_median": float(np.median(shift)),
        "shift_p95": float(np.percentile(shift, 95)),
        "shift_max": float(shift.max()),
        "map_span": span,
        "reference_profile": reference_profile(model_dir, features, repeats),
        "us_per_point": {
            name: {
                "batch_1024": 1e6 * seconds_per_point(bundle.place, features[:4096], 1024, repeats),
                "batch_1": 1e6 * seconds_per_point(bundle.place, single, 1, repeats),
            }
            for name, bundle in (("fast", fast), ("reference", reference))
        },
    }
