"""Labelled cutout files: HDF5 with a HETDEX-style ``FiberImages`` table and a ``Labels`` table.

``FiberImages`` mirrors the HETDEX machine-learning product (a compound table with ``detectid``
int64, ``im_wave`` (100,), ``im_sum`` (9, 100) and optionally ``im_array`` (4, 9, 100)).
``Labels`` holds ``detectid`` and ``vis_class`` (-2..5), optionally the ground truth
``is_real`` (classes 3-5), ``sn``, ``wave`` and the simulator's ``family``. The labels may
live in a second file. Everything is checked before training starts, and every error names the
file and the field.
"""

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from service.contract import PRODUCT_COLUMNS, ROWS
from service.domain import FIRST_REAL_CLASS, VISUAL_CLASSES, is_real_class, night_fingerprint
from training.simulators.simulated_set import TOP_FIBERS, SimulatedSet

FIBER_TABLE = "FiberImages"
LABEL_TABLE = "Labels"
FAMILY_BYTES = 32


class DatasetError(ValueError):
    """A labelled file that cannot be used for training, with the file and field named."""


@dataclass
class LabelledCutouts:
    """Labelled detections joined on detectid; ``sn``/``family`` are NaN/"" where unknown.
    ``origin`` names the file or simulated set each row came from (``source`` by default):
    training leaves one origin out to judge stage 2 (:mod:`training.stage2_gate`)."""

    source: str
    detectid: np.ndarray
    im_sum: np.ndarray  # (N, 9, 100) float32
    vis_class: np.ndarray
    sn: np.ndarray
    family: np.ndarray
    origin: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.origin is None:
            self.origin = np.full(len(self.detectid), self.source)

    @property
    def is_real(self) -> np.ndarray:
        return np.asarray(is_real_class(self.vis_class), dtype=bool)

    def __len__(self) -> int:
        return len(self.detectid)

    def subset(self, index: np.ndarray) -> "LabelledCutouts":
        return LabelledCutouts(
            self.source,
            self.detectid[index],
            self.im_sum[index],
            self.vis_class[index],
            self.sn[index],
            self.family[index],
            self.origin[index],
        )

    @classmethod
    def concatenate(cls, parts: list["LabelledCutouts"]) -> "LabelledCutouts":
        """Several labelled sets as one (e.g. both simulators); detectids must not collide."""
        joined = cls(
            " + ".join(p.source for p in parts),
            *(
                np.concatenate([getattr(p, name) for p in parts])
                for name in ("detectid", "im_sum", "vis_class", "sn", "family", "origin")
            ),
        )
        if len(np.unique(joined.detectid)) != len(joined):
            raise DatasetError(f"{joined.source}: detectids collide between the parts")
        return joined

    @classmethod
    def from_simulated(cls, data: SimulatedSet, source: str = "simulated") -> "LabelledCutouts":
        return cls(source, data.detectid, data.im_sum, data.vis_class, data.sn, data.family)

    def summary(self) -> dict:
        classes, counts = np.unique(self.vis_class, return_counts=True)
        return {
            "source": self.source,
            "detections": len(self),
            "real": int(self.is_real.sum()),
            "class_counts": {str(int(c)): int(n) for c, n in zip(classes, counts, strict=True)},
        }


def write_dataset(path: Path, data: SimulatedSet) -> Path:
    """Write a simulated set in the FiberImages + Labels layout."""
    fields = [
        ("detectid", "<i8"),
        ("im_wave", "<f4", (PRODUCT_COLUMNS,)),
        ("im_sum", "<f4", (ROWS, PRODUCT_COLUMNS)),
    ]
    if data.im_array is not None:
        fields.append(("im_array", "<f4", (TOP_FIBERS, ROWS, PRODUCT_COLUMNS)))
    images = np.empty(len(data), dtype=fields)
    images["detectid"], images["im_wave"], images["im_sum"] = (
        data.detectid,
        data.im_wave,
        data.im_sum,
    )
    if data.im_array is not None:
        images["im_array"] = data.im_array
    labels = np.empty(
        len(data),
        dtype=[
            ("detectid", "<i8"),
            ("vis_class", "<i2"),
            ("is_real", "?"),
            ("sn", "<f4"),
            ("wave", "<f4"),
            ("family", f"S{FAMILY_BYTES}"),
        ],
    )
    labels["detectid"], labels["vis_class"], labels["sn"] = data.detectid, data.vis_class, data.sn
    labels["is_real"] = is_real_class(data.vis_class)
    labels["wave"], labels["family"] = data.wave, np.char.encode(data.family.astype(str))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_dataset(FIBER_TABLE, data=images)
        handle.create_dataset(LABEL_TABLE, data=labels)
        for key, value in data.meta.items():
            handle.attrs[key] = str(value)
    return path


def _table(handle: h5py.File, path: Path, name: str, required: tuple[str, ...]) -> h5py.Dataset:
    if name not in handle:
        raise DatasetError(f"{path}: table '{name}' is missing")
    table = handle[name]
    names = table.dtype.names or ()
    for field in required:
        if field not in names:
            raise DatasetError(f"{path}: {name}/{field} is missing (table has {list(names)})")
    return table


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except OSError as error:
        raise DatasetError(f"{path}: not a readable HDF5 file ({error})") from None


def checked_classes(raw: np.ndarray, labels_path: Path) -> np.ndarray:
    """Visual classes as int8, refusing NaN, fractions and unknown values before any cast."""
    where = f"{labels_path}: {LABEL_TABLE}/vis_class"
    if raw.dtype.kind not in "iuf":
        raise DatasetError(f"{where} has dtype {raw.dtype}, expected integers")
    values = raw.astype(np.float64)
    if not np.isfinite(values).all() or np.any(values != np.round(values)):
        raise DatasetError(f"{where} has NaN or non-integer values")
    unknown = ~np.isin(values, VISUAL_CLASSES)
    if unknown.any():
        raise DatasetError(
            f"{where} has unknown classes {sorted(set(values[unknown].astype(int).tolist()))} "
            f"(allowed {list(VISUAL_CLASSES)})"
        )
    return values.astype(np.int8)


@dataclass(frozen=True)
class Images:
    """The cutouts of a FiberImages file (labelled or not), checked."""

    path: Path
    detectid: np.ndarray  # (N,) int64
    im_sum: np.ndarray  # (N, 9, 100) float32

    @property
    def fingerprint(self) -> str:
        return night_fingerprint(self.detectid, self.path.name)

    def rows_of(self, detectid: np.ndarray, where: str) -> np.ndarray:
        """Row of each detectid; a detectid the file lacks is refused, named with ``where``."""
        order = np.argsort(self.detectid)
        position = np.clip(
            np.searchsorted(self.detectid, detectid, sorter=order), 0, len(order) - 1
        )
        rows = order[position]
        missing = self.detectid[rows] != detectid
        if missing.any():
            raise DatasetError(
                f"{where}/detectid {int(detectid[missing][0])} has no row in {self.path}: "
                f"{FIBER_TABLE} ({int(missing.sum())} labels without images)"
            )
        return rows


def read_images(path: Path) -> Images:
    """The FiberImages table of ``path``: unique detectids, finite (9, 100) cutouts."""
    path = Path(path)
    with _open(path) as handle:
        images = _table(handle, path, FIBER_TABLE, ("detectid", "im_sum"))
        shape = images.dtype["im_sum"].shape
        if shape != (ROWS, PRODUCT_COLUMNS):
            raise DatasetError(
                f"{path}: {FIBER_TABLE}/im_sum has shape {shape}, "
                f"expected ({ROWS}, {PRODUCT_COLUMNS})"
            )
        detectid = np.asarray(images.fields("detectid")[:], dtype=np.int64)
        im_sum = np.asarray(images.fields("im_sum")[:], dtype=np.float32)
    if len(np.unique(detectid)) != len(detectid):
        raise DatasetError(f"{path}: {FIBER_TABLE}/detectid has duplicate ids")
    bad = ~np.isfinite(im_sum).all(axis=(1, 2))
    if bad.any():
        raise DatasetError(
            f"{path}: {FIBER_TABLE}/im_sum has NaN or infinite values "
            f"(first detectid {int(detectid[bad][0])}, {int(bad.sum())} cutouts)"
        )
    return Images(path, detectid, im_sum)


@dataclass(frozen=True)
class Labels:
    """A Labels table: ``detectid`` and ``vis_class`` (required), the rest where present."""

    path: Path
    detectid: np.ndarray  # (K,) int64, unique
    vis_class: np.ndarray  # (K,) int8
    sn: np.ndarray  # (K,) float32, NaN where unknown
    family: np.ndarray  # (K,) str, "" where unknown
    attrs: dict  # the file's metadata (``linescore labels export`` writes the night's fingerprint)


def read_labels(path: Path) -> Labels:
    path = Path(path)
    with _open(path) as handle:
        labels = _table(handle, path, LABEL_TABLE, ("detectid", "vis_class"))[...]
        attrs = {key: str(value) for key, value in handle.attrs.items()}
    names = labels.dtype.names
    detectid = labels["detectid"].astype(np.int64)
    vis_class = checked_classes(labels["vis_class"], path)
    if "is_real" in names and np.any(labels["is_real"] != is_real_class(vis_class)):
        raise DatasetError(
            f"{path}: {LABEL_TABLE}/is_real contradicts vis_class "
            f"(real means vis_class >= {FIRST_REAL_CLASS})"
        )
    if len(np.unique(detectid)) != len(detectid):
        raise DatasetError(f"{path}: {LABEL_TABLE}/detectid has duplicate ids")
    sn = labels["sn"].astype(np.float32) if "sn" in names else np.full(len(labels), np.nan, "f4")
    family = (
        np.char.decode(labels["family"])
        if "family" in names
        else np.full(len(labels), "", dtype=object)
    ).astype(str)
    return Labels(path, detectid, vis_class, sn, family, attrs)


def read_labelled(path: Path, labels_path: Path | None = None) -> LabelledCutouts:
    """Read and validate a labelled file; only detections that have a label are returned."""
    images = read_images(path)
    labels = read_labels(Path(labels_path) if labels_path else Path(path))
    rows = images.rows_of(labels.detectid, f"{labels.path}: {LABEL_TABLE}")
    return LabelledCutouts(
        str(path), labels.detectid, images.im_sum[rows], labels.vis_class, labels.sn, labels.family
    )
