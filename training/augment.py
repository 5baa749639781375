"""Training-time augmentations of raw (N, 9, 100) cutouts, applied before the shared normalisation.

Flips along rows mirror the cross-dispersion profile about the trace row; shifts move the line
and trace by up to one pixel (cropping later keeps the line near column 16); noise re-draws add
extra noise at a random fraction of the cutout's own noise; flux scaling multiplies the counts
(a no-op after robust-noise normalisation, measured rather than assumed, see ``ablate``).
"""

from dataclasses import asdict, dataclass

import numpy as np

from service.preprocess import robust_centre_and_spread

ALL = ("flip", "shift", "noise", "scale")


@dataclass(frozen=True)
class Augmentation:
    flip: bool = True
    shift: bool = True
    noise: bool = True
    scale: bool = False

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
        out[masked] = 0.0
        return out
