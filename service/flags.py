"""Domain warnings attached to a result: they inform the astronomer, never change the decision."""

import numpy as np

from service.domain import SKY_RESIDUAL_WINDOWS_A, TRUSTED_WAVE_RANGE_A

MOSTLY_MASKED = "mostly_masked"
SKY_RESIDUAL_WINDOW = "sky_residual_window"
OUTSIDE_TRUSTED_RANGE = "outside_trusted_wavelength_range"
NOVEL = "novel"  # novelty reached the model's threshold: unlike anything the model was trained on


def masked_fraction(cutouts: np.ndarray) -> np.ndarray:
    """Share of exactly-zero (masked) pixels per canonical cutout."""
    return (cutouts == 0.0).mean(axis=(1, 2))


def flags_for(masked: float, wave: float | None, novel: bool = False) -> list[str]:
    """Flags of one detection from its masked share, its line wavelength (A) when given, and
    whether its novelty reached the model's threshold (:mod:`service.novelty`)."""
    flags = []
    if masked > 0.5:
        flags.append(MOSTLY_MASKED)
    if wave is not None:
        if any(low <= wave <= high for low, high in SKY_RESIDUAL_WINDOWS_A):
            flags.append(SKY_RESIDUAL_WINDOW)
        low, high = TRUSTED_WAVE_RANGE_A
        if not low <= wave <= high:
            flags.append(OUTSIDE_TRUSTED_RANGE)
    if novel:
        flags.append(NOVEL)
    return flags
