"""Training-time augmentations of raw (N, 9, 100) cutouts, applied before the shared normalisation.

Flips along rows mirror the cross-dispersion profile about the trace row; shifts move the line
and trace by up to one pixel (cropping later keeps the line near column 16); noise re-draws add
extra noise at a random fraction of the cutout's own noise; flux scaling multiplies the counts
(a no-op after robust-noise normalisation, measured rather than assumed, see ``ablate``).

The robustness set stands in for instruments and reductions no simulator rendered: random
masking (masked columns and blocks away from the line), row-profile jitter (each row's gain
off by a few per cent: another trace profile), a pedestal over a block of columns or rows, and
noise correlated along wavelength. Each is applied to a random half of the draws.
"""

from dataclasses import asdict, dataclass

import numpy as np

from service.contract import PRODUCT_LINE_COLUMN as LINE
from service.preprocess import robust_centre_and_spread

ALL = ("flip", "shift", "noise", "scale", "mask", "rows", "pedestal", "correlated")
ROBUST = ("mask", "rows", "pedestal", "correlated")


@dataclass(frozen=True)
class Augmentation:
    flip: bool = True
    shift: bool = True
    noise: bool = True
    scale: bool = False
    mask: bool = False
    rows: bool = False
    pedestal: bool = False
    correlated: bool = False

    @classmethod
    def robust(cls) -> "Augmentation":
        """The default set plus every robustness augmentation."""
        return cls(**{name: True for name in ROBUST})

    @classmethod
    def only(cls, *names: str) -> "Augmentation":
        return cls(**{name: name in names for name in ALL})

    def describe(self) -> dict:
        return asdict(self)

    def __call__(self, cutouts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = cutouts.copy()
        n = len(out)
        masked = out == 0.0
        if self.flip:
            flip = rng.random(n) < 0.5
            out[flip] = out[flip, ::-1, :]
            masked[flip] = masked[flip, ::-1, :]
        if self.shift:
            for axis, limit in ((2, 1), (1, 1)):
                steps = rng.integers(-limit, limit + 1, n)
                for step in (-limit, limit):
                    chosen = steps == step
                    out[chosen] = np.roll(out[chosen], step, axis=axis)
                    masked[chosen] = np.roll(masked[chosen], step, axis=axis)
        if self.noise:
            _, sigma = robust_centre_and_spread(out.reshape(n, -1), masked.reshape(n, -1))
            level = rng.uniform(0.0, 0.5, n) * sigma
            out += rng.standard_normal(out.shape).astype(np.float32) * level[:, None, None]
        if self.scale:
            out *= rng.uniform(0.7, 1.4, n).astype(np.float32)[:, None, None]
        if self.rows or self.pedestal or self.correlated:
            _, sigma = robust_centre_and_spread(out.reshape(n, -1), masked.reshape(n, -1))
            sigma = sigma.astype(np.float32)
            if self.rows:
                jitter = 1.0 + rng.normal(0.0, 0.08, (n, out.shape[1], 1)).astype(np.float32)
                out = np.where(half(rng, n)[:, None, None], out * jitter, out)
            if self.pedestal:
                out += pedestals(rng, out.shape) * (half(rng, n) * sigma)[:, None, None]
            if self.correlated:
                white = rng.standard_normal(out.shape).astype(np.float32)
                smooth = (white + np.roll(white, 1, axis=2) + np.roll(white, -1, axis=2)) / 3.0
                level = rng.uniform(0.0, 0.6, n).astype(np.float32) * sigma * half(rng, n)
                out += smooth * level[:, None, None]
        if self.mask:
            masked |= random_masks(rng, out.shape) & (half(rng, n) > 0)[:, None, None]
        out[masked] = 0.0
        return out


def half(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random half of the draws (as 0/1 so it can also scale)."""
    return (rng.random(n) < 0.5).astype(np.float32)


def pedestals(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A step of +-(0.5..3) noise units over the columns right of a random edge, or over a few
    rows: an amplifier offset that median subtraction does not remove."""
    n, rows, columns = shape
    level = rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 3.0, n)
    edge = rng.integers(LINE - 20, LINE + 20, n)
    by_column = np.arange(columns)[None, :] >= edge[:, None]  # (n, columns)
    first_rows = np.arange(rows)[None, :] < rng.integers(1, rows, n)[:, None]  # (n, rows)
    along_rows = rng.random(n) < 0.3
    step = np.where(
        along_rows[:, None, None],
        first_rows[:, :, None] & np.ones((1, 1, columns), bool),
        by_column[:, None, :] & np.ones((1, rows, 1), bool),
    )
    return (step * level[:, None, None]).astype(np.float32)


def random_masks(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Masked columns (1-3 px, all or some rows) 3-14 px from the line, or a block of rows."""
    n, rows, columns = shape
    mask = np.zeros(shape, dtype=bool)
    offset, width = rng.integers(3, 15, n), rng.integers(1, 4, n)
    start = np.where(rng.random(n) < 0.5, LINE + offset, LINE - offset - width + 1)
    top = rng.integers(0, rows, n)
    height = np.where(rng.random(n) < 0.6, rows, rng.integers(1, rows, n))
    cols = np.arange(columns)[None, :]
    row_index = np.arange(rows)[None, :]
    in_cols = (cols >= start[:, None]) & (cols < (start + width)[:, None])
    in_rows = (row_index >= top[:, None]) & (row_index < (top + height)[:, None])
    mask |= in_rows[:, :, None] & in_cols[:, None, :]
    return mask
