"""HETDEX facts that both the simulator and the service rely on (see the HETDEX brief)."""

import hashlib

import numpy as np

VISUAL_CLASSES: tuple[int, ...] = (-2, -1, 0, 1, 2, 3, 4, 5)
"""DR1 visual classes: -2 bad amp, -1 bad pixel, 0 spurious ... 5 confidently real."""

VISUAL_CLASS_NAMES: dict[int, str] = {
    -2: "bad amp",
    -1: "bad pixel",
    0: "spurious",
    1: "likely spurious",
    2: "possibly spurious",
    3: "possibly real",
    4: "likely real",
    5: "confidently real",
}

FIRST_REAL_CLASS = 3
"""Classes 3, 4 and 5 count as real."""

DR1_CLASS_COUNTS: dict[int, int] = {
    -2: 20640,
    -1: 843,
    0: 9195,
    1: 1343,
    2: 651,
    3: 755,
    4: 3240,
    5: 34252,
}

SKY_RESIDUAL_WINDOWS_A: tuple[tuple[float, float], ...] = (
    (3534.0, 3556.0),
    (5194.0, 5205.0),
    (5456.0, 5466.0),
)
"""Fixed wavelengths (A, air) where sky-subtraction residuals fake lines."""

TRUSTED_WAVE_RANGE_A: tuple[float, float] = (3540.0, 5515.0)
"""Outside this range the HETDEX pipeline treats detections as artifacts."""


def is_real_class(vis_class):
    """Ground truth everywhere: a visual class of 3 or more is real (scalar or array)."""
    return vis_class >= FIRST_REAL_CLASS


def night_fingerprint(detectids, file_name: str) -> str:
    """Which night a review database or a labels file belongs to: every detectid of the night's
    FiberImages file and the file's name (the review, the label export and ``adapt`` agree)."""
    digest = hashlib.sha256(np.sort(np.asarray(detectids, dtype="<i8")).tobytes())
    digest.update(file_name.encode())
    return digest.hexdigest()
