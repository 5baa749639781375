"""Model directories and their manifest: where a model is, and its files checked by SHA-256.

Light on purpose (no numpy, no ONNX Runtime): the gunicorn master checks the model directory with
it before forking, and the bundle reads every artifact through it.
"""

import hashlib
import json
import re
from pathlib import Path

from service.errors import ArtifactError

MANIFEST = "manifest.json"
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


def resolve_model_dir(model_dir: Path | None, models_root: Path) -> Path:
    """The model to serve: ``model_dir`` if given (it must exist), else the newest in the root."""
    if model_dir is None:
        return newest_model_dir(models_root)
    if not Path(model_dir).is_dir():
        raise ArtifactError(f"model directory {model_dir} does not exist", pointer=str(model_dir))
    return Path(model_dir)


def newest_model_dir(models_root: Path) -> Path:
    """The highest numeric ``models/<version>/`` holding a manifest (1.10.0 > 1.9.0)."""
    candidates = [
        p.parent
        for p in Path(models_root).glob(f"*/{MANIFEST}")
        if VERSION_NAME.match(p.parent.name)
    ]
    if not candidates:
        raise ArtifactError(
            f"no model versions (<version>/{MANIFEST}) under {models_root}",
            pointer=str(models_root),
        )
    return max(candidates, key=lambda path: tuple(int(part) for part in path.name.split(".")))
