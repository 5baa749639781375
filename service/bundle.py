"""A verified model bundle: manifest plus ONNX CNN, UMAP and SVM, loaded only after checksums pass.

Every file the bundle loads must be listed by plain name in the manifest's ``artifacts``; each is
read once, its SHA-256 checked, and only those same bytes are deserialised. A swapped or
corrupted file is reported by name and never unpickled.
"""

import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnxruntime as ort

from service.errors import ArtifactError
from service.preprocess import Normalization
from service.svm_fast import RbfDecision
from service.umap_fast import NeighbourTransform

MANIFEST = "manifest.json"
UMAP_SOURCES = ("pixels", "embedding")
VERSION_NAME = re.compile(r"^\d+(\.\d+)*$")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_manifest(model_dir: Path) -> dict:
    path = Path(model_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"no {MANIFEST} in {model_dir}", pointer=str(path)) from None
    except (OSError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path} is not readable JSON: {error}", pointer=str(path)) from None


def listed_entry(manifest: dict, name: str) -> dict:
    """The manifest entry of an artifact given by plain name; anything else is refused."""
    entry = manifest.get("artifacts", {}).get(name)
    if entry is None or Path(name).name != name:
        raise ArtifactError(f"{name!r} is not an artifact listed in {MANIFEST}", pointer=name)
    return entry


def verified_bytes(model_dir: Path, manifest: dict, name: str) -> bytes:
    """The bytes of one listed artifact, after their SHA-256 matched the manifest."""
    entry = listed_entry(manifest, name)
    path = Path(model_dir) / name
    try:
        data = path.read_bytes()
    except OSError:
        raise ArtifactError(
            f"artifact {path} is missing or unreadable", pointer=str(path)
        ) from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != entry["sha256"]:
        raise ArtifactError(
            f"artifact {path} has SHA-256 {actual}, manifest expects {entry['sha256']}",
            pointer=str(path),
        )
    return data


def verify_artifacts(model_dir: Path, manifest: dict) -> dict[str, bytes]:
    """Every listed artifact's bytes, after all matched their SHA-256; else raise
    :class:`ArtifactError` naming the first file that is unlisted or fails its checksum."""
    for part, key in (("cnn", "file"), ("umap", "file"), ("umap", "map"), ("svm", "file")):
        listed_entry(manifest, manifest[part][key])  # before any file is read or loaded
    return {name: verified_bytes(model_dir, manifest, name) for name in manifest["artifacts"]}


def newest_model_dir(models_root: Path) -> Path:
    """The highest numeric ``models/<version>/`` holding a manifest (1.10.0 > 1.9.0)."""
    candidates = [
        p.parent
        for p in Path(models_root).glob(f"*/{MANIFEST}")
        if VERSION_NAME.match(p.parent.name)
    ]
    if not candidates:
        raise ArtifactError(f"no model versions under {models_root}", pointer=str(models_root))
    return max(candidates, key=lambda path: tuple(int(part) for part in path.name.split(".")))


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

        with np.load(io.BytesIO(artifacts[manifest["umap"]["map"]]), allow_pickle=False) as arrays:
            umap_map = {name: arrays[name] for name in arrays.files}
        if umap_transform == "fast":
            place = NeighbourTransform(
                umap_map["features"], umap_map["coords"], int(umap_map["n_neighbors"])
            ).transform
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
        )
