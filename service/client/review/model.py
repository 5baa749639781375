"""What the review compares a night with: the packaged model that scored it.

Its thresholds, its UMAP map (the training sample's places and classes, checksum-verified), and
its held-out numbers: the score bands and per-class accuracy of the held-out set, and the CNN
score distribution of the held-out set where the manifest records it (models built after 2.0.0),
else of the calibration split (held out from CNN training), recovered from the manifest's
threshold grid, whose band counts are differences of that distribution's CDF.
"""

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.client.review.night import ReviewError
from service.errors import ArtifactError
from service.manifest import read_manifest, verified_bytes


@dataclass(frozen=True)
class ModelReference:
    version: str
    low: float
    high: float
    cnn_alone: float  # the CNN's own threshold
    map_coords: np.ndarray  # (M, 2) training sample places
    map_classes: np.ndarray  # (M,) their visual classes
    reference_edges: np.ndarray  # CNN score bin edges of the calibration histogram
    reference_density: np.ndarray  # its density per bin (integrates to the share inside)
    reference_label: str  # which scores those are
    heldout_bands: dict[str, float]  # discard / ambiguous / keep share on the held-out set
    heldout_class_accuracy: dict[int, float]  # per visual class, the ensemble's accuracy


def load_model(models_root: Path, version: str, catalogue: Path) -> ModelReference:
    """The model directory ``models_root/version``; one line naming the file if unusable."""
    model_dir = models_root / version
    try:
        manifest = read_manifest(model_dir)
        name = manifest["umap"]["map"]
        with np.load(io.BytesIO(verified_bytes(model_dir, manifest, name))) as packed:
            coords, classes = packed["coords"].astype(np.float64), packed["vis_class"]
    except ArtifactError as error:
        raise ReviewError(
            f"{catalogue}: scored by model {version!r}, but {error.detail} "
            "(set LINESCORE_MODELS_ROOT to the models it was scored with)"
        ) from None
    metrics = manifest.get("heldout", {}).get("metrics", {})
    heldout = heldout_histogram(metrics)
    edges, density = heldout or calibration_histogram(manifest)
    label = "model, held-out set" if heldout else "model, held-out calibration split"
    bands = {band["band"]: band["count"] for band in metrics.get("score_bands", [])}
    total = sum(bands.values()) or 1
    accuracy = metrics.get("per_class_accuracy", {}).get("ensemble", {})
    return ModelReference(
        version=version,
        low=float(manifest["thresholds"]["low"]),
        high=float(manifest["thresholds"]["high"]),
        cnn_alone=float(manifest["thresholds"].get("cnn_alone", 0.5)),
        map_coords=coords,
        map_classes=np.asarray(classes),
        reference_edges=edges,
        reference_density=density,
        reference_label=label,
        heldout_bands={band: count / total for band, count in bands.items()},
        heldout_class_accuracy={int(c): float(v["accuracy"]) for c, v in accuracy.items()},
    )


def heldout_histogram(metrics: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """Bin edges and densities of the held-out set's CNN scores, for models that record them
    (built after 2.0.0); None otherwise."""
    histogram = metrics.get("cnn_score_histogram")
    if histogram is None:
        return None
    edges = np.asarray(histogram["edges"], dtype=np.float64)
    counts = np.asarray(histogram["counts"], dtype=np.float64)
    return edges, counts / max(counts.sum(), 1.0) / np.diff(edges)


def calibration_histogram(manifest: dict) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges and densities of the calibration split's CNN scores from the threshold grid.

    Each grid entry counts the scores in [low, high): G(high) - G(low) for the unnormalised CDF
    G. Least squares over all entries (with G at the first edge fixed at 0) gives G at every
    edge, exactly when the grid is consistent. An empty grid gives no reference.
    """
    grid = manifest.get("validation", {}).get("threshold_grid", [])
    if not grid:
        return np.empty(0), np.empty(0)
    edges = np.unique([entry[key] for entry in grid for key in ("low", "high")])
    design = np.zeros((len(grid) + 1, len(edges)))
    counts = np.zeros(len(grid) + 1)
    for row, entry in enumerate(grid):
        design[row, np.searchsorted(edges, entry["high"])] += 1
        design[row, np.searchsorted(edges, entry["low"])] -= 1
        counts[row] = entry["ambiguous"]
    design[-1, 0] = 1  # G(first edge) = 0
    cdf = np.linalg.lstsq(design, counts, rcond=None)[0]
    total = grid[0]["n"]
    return edges, np.clip(np.diff(cdf), 0, None) / (total * np.diff(edges))
