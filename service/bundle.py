"""A verified model bundle: manifest plus ONNX CNN, UMAP and SVM, loaded only after checksums pass.

Nothing is unpickled before its SHA-256 matches the manifest, so a swapped or corrupted file is
reported by name and never executed.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import onnxruntime as ort

from service.errors import ArtifactError
from service.preprocess import Normalization

MANIFEST = "manifest.json"
UMAP_SOURCES = ("pixels", "embedding")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(model_dir: Path) -> dict:
    path = Path(model_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"no {MANIFEST} in {model_dir}", pointer=str(path)) from None
    except json.JSONDecodeError as error:
        raise ArtifactError(f"{path} is not valid JSON: {error}", pointer=str(path)) from None


def verify_artifacts(model_dir: Path, manifest: dict) -> None:
    """Raise :class:`ArtifactError` naming the first artifact whose SHA-256 does not match."""
    for name, entry in manifest["artifacts"].items():
        path = Path(model_dir) / name
        if not path.is_file():
            raise ArtifactError(f"artifact {path} is missing", pointer=str(path))
        actual = sha256_of(path)
        if actual != entry["sha256"]:
            raise ArtifactError(
                f"artifact {path} has SHA-256 {actual}, manifest expects {entry['sha256']}",
                pointer=str(path),
            )


def newest_model_dir(models_root: Path) -> Path:
    """The highest ``models/<version>/`` that holds a manifest (versions compare numerically)."""
    candidates = [p.parent for p in Path(models_root).glob(f"*/{MANIFEST}")]
    if not candidates:
        raise ArtifactError(f"no model versions under {models_root}", pointer=str(models_root))

    def version_key(path: Path) -> tuple:
        return tuple(int(part) if part.isdigit() else part for part in path.name.split("."))

    return max(candidates, key=version_key)


@dataclass
class ModelBundle:
    """Everything the scoring pipeline needs, loaded from one verified model directory."""

    model_dir: Path
    manifest: dict
    normalization: Normalization
    cnn: ort.InferenceSession
    umap: Any
    svm: Any

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
    def load(cls, model_dir: Path, *, intra_op_threads: int = 1) -> "ModelBundle":
        model_dir = Path(model_dir)
        manifest = read_manifest(model_dir)
        verify_artifacts(model_dir, manifest)
        if manifest["umap"]["input"] not in UMAP_SOURCES:
            raise ArtifactError(f"unknown UMAP input {manifest['umap']['input']!r}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        cnn = ort.InferenceSession(
            str(model_dir / manifest["cnn"]["file"]), options, providers=["CPUExecutionProvider"]
        )
        return cls(
            model_dir=model_dir,
            manifest=manifest,
            normalization=Normalization.from_manifest(manifest["normalization"]),
            cnn=cnn,
            umap=joblib.load(model_dir / manifest["umap"]["file"]),
            svm=joblib.load(model_dir / manifest["svm"]["file"]),
        )
