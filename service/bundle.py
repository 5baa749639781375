"""A verified model bundle: manifest plus ONNX CNN, UMAP and SVM, loaded only after checksums pass.

Every file the bundle loads must be listed by plain name in the manifest's ``artifacts``; each is
read once, its SHA-256 checked, and only those same bytes are deserialised. A swapped or
corrupted file is reported by name and never unpickled.
"""

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnxruntime as ort

from service.errors import ArtifactError
from service.manifest import read_manifest, verify_artifacts
from service.novelty import Novelty
from service.preprocess import Normalization
from service.svm_fast import RbfDecision
from service.umap_fast import NeighbourTransform

UMAP_SOURCES = ("pixels", "embedding")


@dataclass
class ModelBundle:
    """Everything the scoring pipeline needs, loaded from one verified model directory."""

    model_dir: Path
    manifest: dict
    normalization: Normalization
    cnn: ort.InferenceSession
    place: Callable[[np.ndarray], np.ndarray]  # UMAP features -> (N, 2) coordinates
    svm: Any  # the fitted scikit-learn pipeline (for plots and reference)
    svm_decision: Callable[[np.ndarray], np.ndarray]  # (N, 2) -> signed distances, in numpy
    umap_map: dict[str, np.ndarray]  # the training sample: features, coords, vis_class
    novelty: Novelty
    # Set when one k-NN search in the embedding serves both the UMAP placement and novelty's
    # embedding space (the fast transform, and novelty's reference is the map's sample).
    shared_search: NeighbourTransform | None = None

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def thresholds(self) -> tuple[float, float]:
        entry = self.manifest["thresholds"]
        return float(entry["low"]), float(entry["high"])

    @property
    def umap_source(self) -> str:
        return self.manifest["umap"]["input"]

    @classmethod
    def load(
        cls, model_dir: Path, *, intra_op_threads: int = 1, umap_transform: str = "fast"
    ) -> "ModelBundle":
        """Verify, then load. ``umap_transform="reference"`` places points with umap-learn's
        own ``transform`` (slow, imports numba); "fast" uses :mod:`service.umap_fast`."""
        model_dir = Path(model_dir)
        manifest = read_manifest(model_dir)
        artifacts = verify_artifacts(model_dir, manifest)  # read and hashed once, loaded below
        if "novelty" not in manifest:
            raise ArtifactError(
                f"{model_dir}: the manifest has no novelty entry (a model from before 2.0.0); "
                "retrain it with this version"
            )
        if manifest["umap"]["input"] not in UMAP_SOURCES:
            raise ArtifactError(f"unknown UMAP input {manifest['umap']['input']!r}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        cnn = ort.InferenceSession(
            artifacts[manifest["cnn"]["file"]], options, providers=["CPUExecutionProvider"]
        )

        def unpickle(name: str) -> Any:
            return joblib.load(io.BytesIO(artifacts[name]))

        umap_map = load_arrays(artifacts[manifest["umap"]["map"]])
        novelty = Novelty.from_arrays(load_arrays(artifacts[manifest["novelty"]["file"]]))
        shared_search = None
        if umap_transform == "fast":
            transform = NeighbourTransform(
                umap_map["features"], umap_map["coords"], int(umap_map["n_neighbors"])
            )
            place = transform.transform
            if shares_reference(transform, novelty, manifest["umap"]["input"]):
                shared_search = transform
        elif umap_transform == "reference":
            place = unpickle(manifest["umap"]["file"]).transform
        else:
            raise ArtifactError(f"unknown UMAP transform {umap_transform!r}")
        svm = unpickle(manifest["svm"]["file"])
        return cls(
            model_dir=model_dir,
            manifest=manifest,
            normalization=Normalization.from_manifest(manifest["normalization"]),
            cnn=cnn,
            place=place,
            svm=svm,
            svm_decision=RbfDecision(svm),
            umap_map=umap_map,
            novelty=novelty,
            shared_search=shared_search,
        )


def shares_reference(transform: NeighbourTransform, novelty: Novelty, umap_input: str) -> bool:
    """Whether the placement's nearest neighbours are novelty's in the embedding space too."""
    reference = novelty.references_.get("embedding")
    return (
        umap_input == "embedding"
        and reference is not None
        and novelty.k <= transform.n_neighbors_
        and np.array_equal(reference.train_, transform.neighbours.train_)
    )


def load_arrays(data: bytes) -> dict[str, np.ndarray]:
    """Arrays of a verified ``.npz`` (never pickles)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}
