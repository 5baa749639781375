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
from service.domain import FIRST_REAL_CLASS, VISUAL_CLASSES, is_real_class
from training.simulated_set import TOP_FIBERS, SimulatedSet

FIBER_TABLE = "FiberImages"
LABEL_TABLE = "Labels"
FAMILY_BYTES = 32


class DatasetError(ValueError):
    """A labelled file that cannot be used for training, with the file and field named."""


@dataclass
class LabelledCutouts:
    """Labelled detections joined on detectid; ``sn``/``family`` are NaN/"" where unknown."""

    source: str
    detectid: np.ndarray
    im_sum: np.ndarray  # (N, 9, 100) float32
    vis_class: np.ndarray
    sn: np.ndarray
    family: np.ndarray

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
        )

    @classmethod
    def concatenate(cls, parts: list["LabelledCutouts"]) -> "LabelledCutouts":
        """Several labelled sets as one (e.g. both simulators); detectids must not collide."""
        joined = cls(
            " + ".join(p.source for p in parts),
            *(
                np.concatenate([getattr(p, name) for p in parts])
                for name in ("detectid", "im_sum", "vis_class", "sn", "family")
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


def read_labelled(path: Path, labels_path: Path | None = None) -> LabelledCutouts:
    """Read and validate a labelled file; only detections that have a label are returned."""
    path = Path(path)
    labels_path = Path(labels_path) if labels_path else path
    with _open(path) as handle:
        images = _table(handle, path, FIBER_TABLE, ("detectid", "im_sum"))
        shape = images.dtype["im_sum"].shape
        if shape != (ROWS, PRODUCT_COLUMNS):
            raise DatasetError(
                f"{path}: {FIBER_TABLE}/im_sum has shape {shape}, "
                f"expected ({ROWS}, {PRODUCT_COLUMNS})"
            )
        image_ids = np.asarray(images["detectid"], dtype=np.int64)
        im_sum = np.asarray(images["im_sum"], dtype=np.float32)
    with _open(labels_path) as handle:
        table = _table(handle, labels_path, LABEL_TABLE, ("detectid", "vis_class"))
        labels = table[...]
    names = labels.dtype.names
    label_ids = labels["detectid"].astype(np.int64)
    vis_class = checked_classes(labels["vis_class"], labels_path)
    if "is_real" in names and np.any(labels["is_real"] != is_real_class(vis_class)):
        raise DatasetError(
            f"{labels_path}: {LABEL_TABLE}/is_real contradicts vis_class "
            f"(real means vis_class >= {FIRST_REAL_CLASS})"
        )
    for ids, where in (
        (image_ids, f"{path}: {FIBER_TABLE}"),
        (label_ids, f"{labels_path}: {LABEL_TABLE}"),
    ):
        if len(np.unique(ids)) != len(ids):
            raise DatasetError(f"{where}/detectid has duplicate ids")
    order = np.argsort(image_ids)
    position = np.searchsorted(image_ids, label_ids, sorter=order)
    position = np.clip(position, 0, len(image_ids) - 1)
    rows = order[position]
    missing = image_ids[rows] != label_ids
    if missing.any():
        raise DatasetError(
            f"{labels_path}: {LABEL_TABLE}/detectid {int(label_ids[missing][0])} has no row in "
            f"{path}: {FIBER_TABLE} ({int(missing.sum())} labels without images)"
        )
    im_sum = im_sum[rows]
    bad = ~np.isfinite(im_sum).all(axis=(1, 2))
    if bad.any():
        raise DatasetError(
            f"{path}: {FIBER_TABLE}/im_sum has NaN or infinite values "
            f"(first detectid {int(label_ids[bad][0])}, {int(bad.sum())} cutouts)"
        )
    sn = labels["sn"].astype(np.float32) if "sn" in names else np.full(len(labels), np.nan, "f4")
    family = (
        np.char.decode(labels["family"])
        if "family" in names
        else np.full(len(labels), "", dtype=object)
    ).astype(str)
    return LabelledCutouts(str(path), label_ids, im_sum, vis_class, sn, family)
