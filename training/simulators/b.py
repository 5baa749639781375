"""Simulator B: an independent, clean-room simulator of labelled HETDEX detection cutouts.

It exists to test whether a model trained on simulator A generalises to data it was not built
from, so it was written only from the HETDEX domain brief (``/work/shared/domain/HETDEX.md``) and
the shared constants in :mod:`service.domain` / :mod:`service.contract`.

What one detection is
---------------------
Every detection is rendered the way the HETDEX product is built: a set of fiber-exposure cutouts
(9 rows across the dispersion, fiber trace in row 4; 100 columns at ~2 A/px, detection wavelength
at column 50) combined into ``im_sum`` as a weighted mean with PSF weights summing to 1.

* Geometry and weights. 1.5" fibers on a 2.5" hexagonal pitch, three dithered exposures with
  pointing jitter and their own transparency, a per-fiber throughput, a Moffat PSF
  (beta = 3.5, seeing lognormal around 1.8", blurred by the fiber aperture) and a source placed
  anywhere in a fiber cell. The 15-30 fibers with the most light are kept and their light
  fractions, normalised to 1, are the ``im_sum`` weights.
* Fibers. The four highest-weight fibers are rendered pixel by pixel (they are ``im_array``);
  the remaining fibers enter as one pre-weighted "rest" image whose noise has the exact
  variance of their weighted sum (sums of Gaussians are Gaussian), which keeps the default path
  fast without changing ``im_sum``'s statistics.
* Cross-dispersion. Each fiber's trace follows exp(-|dy|^2.5 / (2 * 2.5^2.5)) with its own
  sub-pixel offset; the neighbouring traces sit 8-9.2 px away, so only their wings reach the
  cutout, and they can carry some of the source's light (a neighbour on the slit is often a
  neighbour on the sky).
* Noise model (own). Per pixel variance = sky x illumination(row) x fiber throughput + read
  noise^2. The sky per pixel is lognormal around 25 e- at the trace centre, times the counts per
  unit flux of the brief (blue pixels collect far fewer counts), a random throughput tilt, a
  red-rising sky continuum and bumps at the sky lines (3545, 4358, 5199, 5461 A); read noise is
  2.8-4.5 e-. The illumination is the own trace plus both neighbour wings plus a scattered-light
  floor, so noise is highest on the trace and, in the sky-poor blue, nearly read-noise flat.
  Every detection also keeps a faint copy of the sky from a ~1% sky-model error.
  Pixel noise is correlated by a small kernel (the resampling of the spectra): a 3-tap along
  wavelength (side taps 0-0.35 of the centre, neighbour correlation up to ~0.55) and a 2-tap
  across rows (0-0.15).
* Masking. Masked pixels are exactly 0 in the fiber where they occur. In ``im_sum`` a pixel is 0
  where the top fiber is masked; pixels masked only in other fibers are left out of the weighted
  mean (the weights are renormalised). No other pixel is ever exactly 0.
* Catalogue S/N. Each detection has a target S/N ``sn``. The "pipeline" measures S/N with a
  matched filter on ``im_sum``: the trace profile times a Gaussian (the fitted width, at least
  0.8 px) minus its local mean (the line-plus-continuum fit), weighted by the nominal variance.
  The detection's feature (real line or artefact) is scaled so that the measured S/N of the final
  image, noise included, equals ``sn`` (the catalogue value is a measurement, not a truth). Bad
  amplifiers with raised rms are measured against the nominal variance, which is why they reach
  high S/N.

Families (name -> visual classes)
---------------------------------
Real (3, 4, 5): ``b_real_narrow``, ``b_real_broad``, ``b_real_lae_asym``, ``b_real_continuum``,
``b_real_masked``, ``b_real_skyline`` and (4, 5) ``b_real_multiline``.
Bad amplifier (-2): ``b_bad_amp_wiggle``, ``b_bad_amp_noisy``, ``b_bad_amp_masked``,
``b_bad_amp_pedestal``, ``b_bad_amp_continua``, ``b_bad_amp_twin``.
Bad pixel (-1): ``b_bad_column_hot``, ``b_bad_column_wide``, ``b_bad_flat_dip``,
``b_bad_masked_centre``, ``b_bad_charge_trap``.
Spurious (0, 1, 2): ``b_cosmic_ray``, ``b_sky_residual``, ``b_continuum_absorption``,
``b_noise_offtrace``, ``b_noise_correlated``, ``b_noise_incoherent`` and
``b_noise_spike`` (0, 1), ``b_noise_gaussian`` and ``b_noise_fiber`` (1, 2).
:data:`FAMILY_NOTES` says in one line what each renders.

Classes and S/N
---------------
``sn = 4.8 + excess``: class 5 lognormal (median ~10, a tail past 50), class 4 median ~6.4,
class 3 median ~5.2, classes 0/1/2 exponential (scales 0.4/0.35/0.3, so mostly 4.8-5.5), classes
-1/-2 lognormal with long tails. Class 2's main family (Gaussian noise conditioned on the filter
reading ``sn``) is, by construction, a line-shaped excursion at the S/N of class 3's faint real
lines, so "possibly spurious" and "possibly real" are genuinely ambiguous; class 3 lines also
get more masked hits and stray cosmic rays than brighter ones.

Reproducibility: detection ``i`` uses ``np.random.default_rng([seed, i])`` only, so it depends on
(seed, i, class) and nothing else; the class order is shuffled by a separate stream of the seed.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.contract import PRODUCT_COLUMNS, PRODUCT_LINE_COLUMN, ROWS, TRACE_ROW
from service.domain import SKY_RESIDUAL_WINDOWS_A, TRUSTED_WAVE_RANGE_A, VISUAL_CLASSES
from training.simulators.simulated_set import TOP_FIBERS, SimulatedSet

Generator = np.random.Generator

SIMULATOR = "B"
VERSION = "1"
_SLOTS = TOP_FIBERS + 1  # the four top fibers plus the pre-weighted rest of the fibers
_SHAPE = (_SLOTS, ROWS, PRODUCT_COLUMNS)
_ROW = np.arange(ROWS, dtype=float) - TRACE_ROW
_COL = np.arange(PRODUCT_COLUMNS, dtype=float) - PRODUCT_LINE_COLUMN
_ORDER_STREAM = (0xFFFFFFFF, 0xB)  # keeps the shuffle stream apart from the per-index streams
_NOT_ZERO = np.float32(1e-6)


def _clamp(value: float, low: float, high: float) -> float:
    """Scalar clip (np.clip costs microseconds per call on scalars)."""
    return min(max(float(value), low), high)


def _profile(dy: np.ndarray) -> np.ndarray:
    """Cross-dispersion profile of one fiber on the CCD (peak 1), from the brief."""
    return np.exp(-(np.abs(dy) ** 2.5) / (2.0 * 2.5**2.5))


_PROFILE_FLUX = float(_profile(np.arange(-40.0, 41.0)).sum())  # counts per column at peak 1

# Counts per unit line flux against wavelength (brief: 1 e- ~ 1.1e-18 at 3500 A, 2.8e-19 at
# 4040 A, 1.8e-19 at 4700-5400 A), normalised to the red plateau.
_THROUGHPUT_WAVE = np.array([3400.0, 3500.0, 4040.0, 4700.0, 5400.0, 5600.0])
_THROUGHPUT = np.array([0.12, 0.164, 0.643, 1.0, 1.0, 0.97])

# Sky emission lines (A, sigma A, strength relative to the continuum): they raise the noise and
# are where sky-subtraction residuals appear.
_SKY_LINES = ((3545.0, 7.0, 0.6), (4358.3, 2.5, 0.5), (5199.0, 2.6, 1.2), (5460.7, 2.4, 0.9))
_ABSORPTION_GAPS = ((3775.0, 3785.0, 0.45), (4503.0, 4513.0, 0.35), (3945.0, 3957.0, 0.20))


def _fiber_layout() -> tuple[np.ndarray, np.ndarray]:
    """Fiber centres (arcsec) of three dithered exposures of a hexagonal 2.5" grid."""
    pitch = 2.5
    i, j = np.meshgrid(np.arange(-5, 6), np.arange(-5, 6))
    x = pitch * (i + 0.5 * j)
    y = pitch * np.sqrt(3.0) / 2.0 * j
    keep = np.hypot(x, y) < 7.0  # covers the 30 brightest fibers wherever the source sits
    base = np.stack([x[keep], y[keep]], axis=1)
    dithers = np.array([[0.0, 0.0], [pitch / 2, pitch / 12**0.5], [pitch / 2, -pitch / 12**0.5]])
    xy = np.concatenate([base + d for d in dithers])
    exposure = np.repeat(np.arange(3), len(base))
    return xy, exposure


_FIBER_XY, _FIBER_EXP = _fiber_layout()
_MOFFAT_BETA = 3.5


def _combine(weights: np.ndarray, stack: np.ndarray) -> np.ndarray:
    """Weighted sum over the slots of a (5, 9, 100) stack."""
    return (weights @ stack.reshape(len(weights), -1)).reshape(ROWS, PRODUCT_COLUMNS)


class _Scene:
    """One detection under construction: conditions, noise, and the stacks features go into.

    Stacks have shape (5, 9, 100): slots 0-3 are the top fibers' own cutouts, slot 4 is the
    already-weighted sum of the other fibers, so ``im_sum = sum_k w_k x_k + x_rest``.
    """

    def __init__(self, rng: Generator, wave: float, col_corr: tuple[float, float] | None = None):
        # All scalar nuisances come from two vector draws (scalar draws are slow in numpy).
        u = rng.random(24)
        z = rng.standard_normal(16 + len(_FIBER_XY))
        self.wave = float(wave)
        self.disp = 1.97 + 0.06 * u[0]
        self.im_wave = self.wave + _COL * self.disp
        self.inst_a = 2.2 + 0.5 * u[1]  # instrumental Gaussian sigma, A
        self.inst_px = self.inst_a / self.disp
        self._fibers(u, z)
        self._trace(u, z)
        self._sky(u, z)
        low, high = col_corr or (0.0, 0.35)
        self._noise(rng, low + (high - low) * u[20], 0.15 * u[21])
        # self.extra (absolute counts: nuisances) starts as the sky-model error set in _sky.
        self.feature = np.zeros(_SHAPE)  # scaled to the catalogue S/N, counted by the filter
        self.companion = np.zeros(_SHAPE)  # scaled with the feature, not counted (continuum)
        self.mask = np.zeros((TOP_FIBERS, ROWS, PRODUCT_COLUMNS), dtype=bool)
        self.t_center = 0.0
        self.t_sigma = self.inst_px
        self.conditional = False
        self.twin = False

    def _fibers(self, u: np.ndarray, z: np.ndarray) -> None:
        seeing = _clamp(1.8 * np.exp(0.22 * z[0]), 1.1, 3.4)
        fwhm = np.hypot(seeing, 0.75)  # the 1.5" aperture blurs the PSF it samples
        alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / _MOFFAT_BETA) - 1.0))
        jitter = 0.15 * z[1:7].reshape(3, 2)
        pos = _FIBER_XY + jitter[_FIBER_EXP] - 2.5 * (u[2:4] - 0.5)
        psf = (1.0 + (pos * pos).sum(axis=1) / alpha**2) ** -_MOFFAT_BETA
        throughput = 1.0 + 0.05 * z[16:]
        light = psf * (0.75 + 0.25 * u[4:7])[_FIBER_EXP] * throughput
        n = 15 + int(16 * u[7])
        order = np.argsort(light)[::-1][:n]
        w = light[order] / light[order].sum()
        rest = w[TOP_FIBERS:]
        self.w = w[:TOP_FIBERS]
        self.rest_w1 = float(rest.sum())
        self.slot_w = np.ones(_SLOTS)  # im_sum = slot_w . stack
        self.slot_w[:TOP_FIBERS] = self.w
        self.source_w = self.slot_w.copy()  # a source's light in a fiber goes as its weight
        self.source_w[TOP_FIBERS] = float(rest @ rest)
        self.fiber_thr = throughput[order[:TOP_FIBERS]]
        self.amp = np.ones(_SLOTS)  # how a feature shared by all fibers enters each slot
        self.amp[TOP_FIBERS] = self.rest_w1

    def _trace(self, u: np.ndarray, z: np.ndarray) -> None:
        dy = np.zeros(_SLOTS)
        dy[:TOP_FIBERS] = np.clip(0.2 * z[7:11], -0.6, 0.6)
        spacing = 8.0 + 1.2 * u[8]
        rel = _ROW[None, :] - dy[:, None]
        own, above, below = _profile(rel + np.array([0.0, -spacing, spacing])[:, None, None])
        near = 0.85 + 0.3 * u[9:11]
        wings = near[0] * above + near[1] * below
        self.trace_rows = own / _PROFILE_FLUX  # (5, 9): a unit flux per column
        self.wing_rows = wings / _PROFILE_FLUX
        self.neighbour_rows = above, below
        self.illum = own + wings + 0.03 * u[11]  # sky light reaching each row
        self.shift = np.zeros(_SLOTS)  # each fiber's wavelength solution is a little off
        self.shift[:TOP_FIBERS] = 0.12 * z[11:15]

    def _sky(self, u: np.ndarray, z: np.ndarray) -> None:
        lam = self.im_wave
        tilt = 1.0 + 0.3 * (u[12] - 0.5) * (lam - 4500.0) / 1000.0
        self.throughput = np.interp(lam, _THROUGHPUT_WAVE, _THROUGHPUT) * tilt
        lines = np.zeros(PRODUCT_COLUMNS)
        for i, (centre, sigma, strength) in enumerate(_SKY_LINES):
            if abs(centre - self.wave) < 150.0:
                scale = strength * (0.5 + u[13 + i])
                lines += scale * np.exp(-0.5 * ((lam - centre) / sigma) ** 2)
        level = 25.0 * np.exp(0.6 * z[15])
        self.sky = level * self.throughput * (lam / 5000.0) * (1.0 + lines)
        self.sky_img = self.illum[:, :, None] * self.sky  # (5, 9, 100) sky counts per pixel
        sky_scale = self.source_w.copy()  # the rest is a weighted sum of fibers
        sky_scale[:TOP_FIBERS] = self.fiber_thr
        read_scale = np.ones(_SLOTS)
        read_scale[TOP_FIBERS] = self.source_w[TOP_FIBERS]
        self.var = self.sky_img * sky_scale[:, None, None]
        self.var += ((2.8 + 1.7 * u[17]) ** 2 * read_scale)[:, None, None]  # read noise
        # A sky model off by ~1% leaves a faint copy of the sky (strongest at sky lines).
        self.extra = self.sky_img * (0.035 * (u[18] - 0.5) * self.amp)[:, None, None]
        self.var_sum = _combine(self.slot_w**2, self.var)  # what the pipeline believes

    def _noise(self, rng: Generator, rho_col: float, rho_row: float) -> None:
        """Unit noise made correlated by a small kernel (the resampling of the spectra: a
        3-tap along wavelength, a 2-tap across rows), then scaled to the pixel variance."""
        z = rng.standard_normal((_SLOTS, ROWS + 1, PRODUCT_COLUMNS + 2))
        out = z[:, :-1, 1:-1].copy()
        out += rho_col * (z[:, :-1, :-2] + z[:, :-1, 2:])
        out += rho_row * z[:, 1:, 1:-1]
        out *= np.sqrt(self.var) / np.sqrt(1.0 + 2.0 * rho_col * rho_col + rho_row * rho_row)
        self.noise = out

    # --- helpers the families use -------------------------------------------------------------

    def source(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """A point source seen through every fiber: light in fiber f is proportional to w_f."""
        cols = cols if cols.ndim == 2 else cols[None, :]
        return rows[:, :, None] * cols[:, None, :] * self.source_w[:, None, None]

    def shared(self, image: np.ndarray, slots: np.ndarray | None = None) -> np.ndarray:
        """A feature present in every fiber (or in the fibers ``slots`` selects)."""
        scale = self.amp if slots is None else slots
        return (image if image.ndim == 3 else image[None]) * scale[:, None, None]

    def single(self, k: int, image: np.ndarray) -> np.ndarray:
        """A feature in one fiber-exposure only."""
        stack = np.zeros(_SHAPE)
        stack[k] = image
        return stack

    def gauss_cols(self, centre: float, sigma: float) -> np.ndarray:
        """(5, 100) Gaussians; each fiber's wavelength solution is off by a fraction of a px."""
        d = _COL[None, :] - (centre + self.shift)[:, None]
        return np.exp(-0.5 * (d / sigma) ** 2)

    def sigma_px(self, intrinsic_a: float) -> float:
        return float(np.hypot(self.inst_a, intrinsic_a) / self.disp)

    def pixel_sigma(self, k: int, row: int, col: int) -> float:
        return float(np.sqrt(self.var[k, row, col]))

    # --- measurement and assembly -------------------------------------------------------------

    @staticmethod
    def _line_template(centre: float, sigma: float) -> np.ndarray:
        """A Gaussian of the fitted width minus its local mean (the line + continuum fit)."""
        sigma = max(sigma, 0.8)
        half = max(10.0, 3.0 * sigma + 6.0)
        low = max(math.ceil(centre - half) + PRODUCT_LINE_COLUMN, 0)
        high = min(math.floor(centre + half) + PRODUCT_LINE_COLUMN + 1, PRODUCT_COLUMNS)
        g = np.zeros(PRODUCT_COLUMNS)
        segment = np.exp(-0.5 * ((_COL[low:high] - centre) / sigma) ** 2)
        g[low:high] = segment - segment.mean()
        return g

    def column_response(self, cols: np.ndarray, centre: float, sigma: float) -> float:
        """Sign check for a candidate feature's wavelength shape along the trace."""
        g = self._line_template(centre, sigma)
        return float((g * cols / self.var_sum[TRACE_ROW]).sum())

    def _filter(self) -> tuple[np.ndarray, np.ndarray]:
        """The pipeline's matched filter: returns (u, t) with S/N = sum(u * im_sum)."""
        g = self._line_template(self.t_center, self.t_sigma)
        t = self.trace_rows[TOP_FIBERS][:, None] * g[None, :]
        t[self.mask[0]] = 0.0
        tv = t / self.var_sum
        return tv / max(np.sqrt((t * tv).sum()), 1e-12), t

    def render(self, sn: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Scale the feature to the catalogue S/N; return im_sum, fibers, its mask, S/N read."""
        if self.twin:
            for stack in (self.noise, self.extra, self.feature, self.companion):
                stack[1] = stack[0]
            self.mask[1] = self.mask[0]
        u, t = self._filter()
        if self.conditional:
            # Exact Gaussian conditioning on the filter output: Cov(slot, S/N) ~ w_k V_k u.
            self.feature = self.var * t[None] * self.slot_w[:, None, None]
        if self.mask.any():
            # Masked pixels leave the weighted mean (the others are renormalised); where the top
            # fiber is masked im_sum is 0. Per-pixel slot weights make that one linear map.
            kept = 1.0 - (self.w @ self.mask.reshape(TOP_FIBERS, -1)).reshape(ROWS, -1)
            weights = np.empty(_SHAPE)
            weights[:TOP_FIBERS] = self.w[:, None, None] * ~self.mask
            weights[TOP_FIBERS] = 1.0
            weights /= kept
            weights[:, self.mask[0]] = 0.0
            weighted_u = (weights * u).reshape(_SLOTS, -1)

            def combine(stack: np.ndarray) -> np.ndarray:
                return (weights * stack).sum(axis=0)

            def read(stack: np.ndarray) -> float:
                """What the filter reads on im_sum from this stack."""
                return float((weighted_u * stack.reshape(_SLOTS, -1)).sum())

        else:
            flat_u = u.ravel()

            def combine(stack: np.ndarray) -> np.ndarray:
                return _combine(self.slot_w, stack)

            def read(stack: np.ndarray) -> float:
                return float(self.slot_w @ (stack.reshape(_SLOTS, -1) @ flat_u))

        base = self.noise + self.extra
        m_feature, m_companion, m_rest = read(self.feature), read(self.companion), read(base)
        m_signal = max(m_feature + m_companion, 0.5 * m_feature)  # a continuum leaks in a little
        scale = max(sn - m_rest, 0.4 * sn) / m_signal if m_feature > 0 else 0.0
        x = base + scale * (self.feature + self.companion)
        im = combine(x)
        fibers = x[:TOP_FIBERS]
        fibers[self.mask] = 0.0
        im = im.astype(np.float32)
        fibers = fibers.astype(np.float32)
        im[(im == 0.0) & ~self.mask[0]] = _NOT_ZERO
        fibers[(fibers == 0.0) & ~self.mask] = _NOT_ZERO
        return im, fibers, self.mask[0].copy(), float((u * im).sum())


# --- wavelength rules ------------------------------------------------------------------------


def _wave_real(rng: Generator) -> float:
    """Real lines: anywhere the pipeline trusts."""
    return float(rng.uniform(*TRUSTED_WAVE_RANGE_A))


def _wave_any(rng: Generator) -> float:
    """Artefacts: anywhere on the CCD, including the untrusted ends."""
    return float(rng.uniform(3490.0, 5540.0))


def _wave_sky_window(rng: Generator) -> float:
    """Inside one of the fixed sky-residual windows."""
    low, high = SKY_RESIDUAL_WINDOWS_A[int(rng.choice(3, p=[0.4, 0.35, 0.25]))]
    return float(rng.uniform(low, high))


def _wave_near_sky(rng: Generator) -> float:
    """A real line a few to a few tens of A from a sky line."""
    centre = _SKY_LINES[int(rng.integers(len(_SKY_LINES)))][0]
    wave = centre + rng.choice([-1.0, 1.0]) * rng.uniform(5.0, 45.0)
    low, high = TRUSTED_WAVE_RANGE_A
    if not low <= wave <= high:
        wave = 2.0 * centre - wave
    return _clamp(wave, low, high)


def _wave_absorption(rng: Generator) -> float:
    """Between two stellar absorption lines (the brief's gaps, plus Ca II H and K)."""
    weights = [gap[2] for gap in _ABSORPTION_GAPS]
    low, high, _ = _ABSORPTION_GAPS[int(rng.choice(len(weights), p=weights))]
    return float(rng.uniform(low, high))


# --- shared pieces ---------------------------------------------------------------------------


def _centre(rng: Generator, spread: float = 0.25, limit: float = 0.7) -> float:
    """Where the fitted centroid lands relative to column 50."""
    return _clamp(rng.normal(0.0, spread), -limit, limit)


def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * (x / sigma) ** 2)


def _lumpy(sc: _Scene, rng: Generator, spread: float = 0.5) -> np.ndarray:
    """Trace rows with multiplicative lumps: a noise excursion has no clean fiber profile."""
    return sc.trace_rows * np.exp(rng.normal(0.0, spread, (_SLOTS, ROWS)))


def _sky_rows(sc: _Scene, rng: Generator) -> np.ndarray:
    """Row shape of a sky residual: it fills all rows (flat plus the sky illumination)."""
    flat = rng.uniform(0.4, 1.0)
    rows = flat + (1.0 - flat) * sc.illum / sc.illum.max(axis=1, keepdims=True)
    return rows * (1.0 + rng.normal(0.0, 0.08, ROWS))


def _residual_cols(
    sc: _Scene, rng: Generator, centre: float, kind: int
) -> tuple[np.ndarray, float]:
    """Wavelength shape of a sky-subtraction residual: broad bump, p-Cygni or narrow."""
    d = _COL - centre
    inst = sc.inst_px
    if kind == 0:  # blended band (3534-3556 A): one or two broad bumps
        sigma = rng.uniform(2.5, 6.0) / sc.disp
        cols = _gauss(d, sigma)
        if rng.random() < 0.3:
            cols += rng.uniform(0.3, 0.8) * _gauss(
                d - rng.choice([-1, 1]) * rng.uniform(3, 6), sigma
            )
        return cols, sigma
    if kind == 1:  # p-Cygni-like: a positive lobe beside a negative one (5194-5205 A)
        lobe = rng.choice([-1.0, 1.0]) * rng.uniform(1.5, 3.0)
        return _gauss(d, inst) - rng.uniform(0.5, 1.0) * _gauss(d - lobe, inst), inst
    return _gauss(d, inst) - 0.35 * _gauss(d, 2.5 * inst), inst  # over-subtracted wings


def _cosmic_image(rng: Generator, row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
    """A 1-3 px cosmic-ray hit (possibly a short track) with a charge-diffusion halo."""
    core = np.zeros((ROWS, PRODUCT_COLUMNS))
    dr, dc = ((0, 1), (1, 0), (1, 1), (1, -1))[int(rng.integers(4))]
    for step in range(int(rng.integers(1, 4))):
        r, c = row + step * dr, col + step * dc
        if 0 <= r < ROWS and 0 <= c < PRODUCT_COLUMNS:
            core[r, c] = rng.uniform(0.6, 1.0)
    halo = np.zeros_like(core)
    halo[1:] += core[:-1]
    halo[:-1] += core[1:]
    halo[:, 1:] += core[:, :-1]
    halo[:, :-1] += core[:, 1:]
    return core + rng.uniform(0.08, 0.3) * halo, core > 0


def _stray_cosmic(sc: _Scene, rng: Generator) -> None:
    """An unmasked cosmic ray somewhere in the cutout (absolute brightness)."""
    k = int(rng.integers(TOP_FIBERS))
    row, col = int(rng.integers(ROWS)), int(rng.integers(PRODUCT_COLUMNS))
    image, _ = _cosmic_image(rng, row, col)
    sc.extra[k] += rng.uniform(8.0, 60.0) * sc.pixel_sigma(k, row, col) * image


def _mask_patch(sc: _Scene, rng: Generator, k: int, col: int | None = None) -> None:
    """A masked cosmic ray or bad pixel: a small zeroed patch in one fiber."""
    width, height = int(rng.integers(1, 4)), int(rng.integers(1, 6))
    col = int(rng.integers(PRODUCT_COLUMNS - width)) if col is None else col
    row = int(rng.integers(ROWS - height + 1))
    sc.mask[k, row : row + height, max(col, 0) : max(col + width, 1)] = True


# --- real lines (classes 3-5) ----------------------------------------------------------------


def _real_line(sc: _Scene, rng: Generator, intrinsic_a: float) -> np.ndarray:
    """A Gaussian emission line of a point source; returns its row profiles for companions."""
    centre = _centre(rng)
    sigma = sc.sigma_px(intrinsic_a)
    eta = rng.uniform(0.0, 0.35) if rng.random() < 0.5 else 0.0  # light in neighbour traces
    rows = sc.trace_rows + eta * sc.wing_rows
    sc.feature += sc.source(rows, sc.gauss_cols(centre, sigma))
    sc.t_center, sc.t_sigma = centre, sigma
    return rows


def _real_narrow(sc: _Scene, rng: Generator) -> None:
    _real_line(sc, rng, rng.uniform(0.0, 3.0))


def _real_broad(sc: _Scene, rng: Generator) -> None:
    _real_line(sc, rng, float(np.exp(rng.uniform(np.log(4.0), np.log(14.0)))))


def _real_lae_asym(sc: _Scene, rng: Generator) -> None:
    """Lyman-alpha: sharp blue edge, red wing, sometimes a faint blue peak."""
    fitted = _centre(rng)
    blue = sc.inst_px * rng.uniform(1.0, 1.15)
    red = sc.sigma_px(rng.uniform(3.0, 10.0))
    peak = fitted - 0.4 * (red - blue)  # a Gaussian fit lands redward of the peak
    d = _COL[None, :] - (peak + sc.shift)[:, None]
    cols = np.exp(-0.5 * (d / np.where(d < 0.0, blue, red)) ** 2)
    if rng.random() < 0.25:
        cols += rng.uniform(0.12, 0.35) * _gauss(d + rng.uniform(2.5, 5.0), blue)
    eta = rng.uniform(0.0, 0.3) if rng.random() < 0.5 else 0.0
    sc.feature += sc.source(sc.trace_rows + eta * sc.wing_rows, cols)
    sc.t_center, sc.t_sigma = fitted, 0.5 * (blue + red)


def _real_continuum(sc: _Scene, rng: Generator) -> None:
    """A line on a faint continuum stripe ([OII] emitters, bright LAEs)."""
    rows = _real_line(sc, rng, rng.uniform(0.0, 5.0))
    level = float(np.exp(rng.uniform(np.log(0.03), np.log(0.4))))
    cont = level * sc.throughput / sc.throughput[PRODUCT_LINE_COLUMN]
    if rng.random() < 0.5:  # LAE: the forest suppresses the continuum blueward of the line
        edge = sc.t_center + rng.uniform(-2.0, 2.0)
        cont = cont * np.where(_COL - edge < 0.0, rng.uniform(0.2, 0.8), 1.0)
    else:  # a galaxy continuum with a colour
        cont = cont * (sc.im_wave / sc.wave) ** rng.uniform(-2.0, 2.0)
    sc.companion += sc.source(rows, cont)


def _real_masked(sc: _Scene, rng: Generator) -> None:
    """A line with masked cosmic rays or a masked column close by (sometimes on its wing)."""
    _real_line(sc, rng, rng.uniform(0.0, 6.0))
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.25:
            near = int(rng.integers(-1, 2))
        else:
            near = int(rng.choice([-1, 1]) * rng.integers(2, 15))
        k = 0 if rng.random() < 0.7 else int(rng.integers(1, TOP_FIBERS))
        _mask_patch(sc, rng, k, PRODUCT_LINE_COLUMN + near)
    if rng.random() < 0.3:
        col = PRODUCT_LINE_COLUMN + int(rng.choice([-1, 1]) * rng.integers(3, 13))
        sc.mask[0, :, col : col + int(rng.integers(1, 3))] = True


def _real_skyline(sc: _Scene, rng: Generator) -> None:
    """A line beside a sky line that left a subtraction residual in the cutout."""
    _real_line(sc, rng, rng.uniform(0.0, 5.0))
    line = min((s[0] for s in _SKY_LINES), key=lambda w: abs(w - sc.wave))
    col = (line - sc.wave) / sc.disp
    cols, _ = _residual_cols(sc, rng, col, int(rng.integers(3)))
    rows = _sky_rows(sc, rng)
    sky_at_line = float(np.interp(line, sc.im_wave, sc.sky))
    strength = rng.choice([-1.0, 1.0]) * rng.uniform(0.02, 0.12) * sky_at_line
    image = strength * rows[:, :, None] * cols
    image[:TOP_FIBERS] *= sc.fiber_thr[:, None, None]
    sc.extra += sc.shared(image)


def _real_multiline(sc: _Scene, rng: Generator) -> None:
    """A line with a second line of the same source in the window ([OIII] pair, H-beta...)."""
    rows = _real_line(sc, rng, rng.uniform(0.0, 4.0))
    offset = rng.choice([-1.0, 1.0]) * rng.uniform(10.0, 40.0)
    ratio = rng.uniform(0.15, 0.6)
    sc.companion += ratio * sc.source(rows, sc.gauss_cols(sc.t_center + offset, sc.t_sigma))


# --- spurious: cosmic rays, sky, continuum, noise (classes 0-2) ------------------------------


def _cosmic_ray(sc: _Scene, rng: Generator) -> None:
    """A hit in one fiber and one exposure, anywhere in rows; its core is sometimes masked."""
    k = int(rng.choice(TOP_FIBERS, p=[0.4, 0.25, 0.2, 0.15]))
    col = PRODUCT_LINE_COLUMN + int(rng.integers(-1, 2))
    image, core = _cosmic_image(rng, int(rng.integers(ROWS)), col)
    if rng.random() < 0.4:  # the mask caught the core, the halo escaped
        sc.mask[k] |= core
        image = np.where(core, 0.0, image)
    sc.feature += sc.single(k, image)
    column_weight = image.sum(axis=0)
    sc.t_center = float((column_weight * _COL).sum() / column_weight.sum())
    sc.t_sigma = 0.9
    if rng.random() < 0.3:
        _stray_cosmic(sc, rng)


def _sky_residual(sc: _Scene, rng: Generator) -> None:
    """A sky-subtraction residual at one of the fixed windows, filling every row."""
    window = int(np.argmin([abs(sc.wave - (lo + hi) / 2) for lo, hi in SKY_RESIDUAL_WINDOWS_A]))
    kind = window if rng.random() < 0.75 else int(rng.integers(3))
    centre = _centre(rng, 0.5, 1.5)
    cols, sigma = _residual_cols(sc, rng, centre, kind)
    image = _sky_rows(sc, rng)[:, :, None] * cols
    image[:TOP_FIBERS] *= sc.fiber_thr[:, None, None]
    sc.feature += sc.shared(image)
    sc.t_center, sc.t_sigma = centre, sigma


def _continuum_absorption(sc: _Scene, rng: Generator) -> None:
    """A star's continuum stripe; the gap between two absorption lines is the false peak."""
    cont = sc.throughput * (sc.im_wave / sc.wave) ** rng.uniform(-2.5, 1.0)
    for _attempt in range(6):  # redraw until the gap reads as a peak (it does, nearly always)
        offset = _centre(rng, 0.4, 1.0)
        half_gap = rng.uniform(3.5, 8.0)
        depth = np.ones(PRODUCT_COLUMNS)
        for side in (-1.0, 1.0):
            width = min(sc.sigma_px(rng.uniform(1.0, 4.0)), half_gap / 2.5)
            depth -= rng.uniform(0.3, 0.7) * _gauss(_COL - (offset + side * half_gap), width)
        for _ in range(int(rng.integers(0, 4))):  # other lines of the star in the window
            where = rng.choice([-1.0, 1.0]) * rng.uniform(16.0, 45.0)
            depth -= rng.uniform(0.1, 0.5) * _gauss(_COL - where, sc.sigma_px(3.0))
        sigma = _clamp(rng.uniform(0.22, 0.4) * half_gap, 0.9, 2.2)  # the peak's width
        profile = cont * np.clip(depth, 0.05, None)
        if sc.column_response(profile, offset, sigma) > 0.0:
            break
        cont = sc.throughput  # a flatter star next time
    sc.feature += sc.source(sc.trace_rows, profile)
    sc.t_center, sc.t_sigma = offset, sigma


def _noise_spike(sc: _Scene, rng: Generator) -> None:
    """Narrower than the instrument allows, lumpy in rows, not shared evenly by the fibers."""
    centre = rng.uniform(-0.8, 0.8)
    cols = sc.gauss_cols(centre, rng.uniform(0.35, 0.7))
    if rng.random() < 0.4:
        cols += rng.uniform(0.3, 0.9) * sc.gauss_cols(centre + rng.choice([-1, 1]), 0.5)
    gain = rng.exponential(1.0, _SLOTS)
    sc.feature += sc.source(_lumpy(sc, rng), cols) * gain[:, None, None]
    sc.t_center, sc.t_sigma = centre, 0.9


def _noise_offtrace(sc: _Scene, rng: Generator) -> None:
    """An excursion off the trace: a neighbour fiber's wing or a blob in the outer rows."""
    side = float(rng.choice([-1.0, 1.0]))
    centre = _centre(rng, 0.5, 1.0)
    sigma = sc.sigma_px(rng.uniform(0.0, 4.0))
    if rng.random() < 0.5:
        rows = sc.neighbour_rows[0 if side > 0 else 1] / _PROFILE_FLUX
    else:
        offset = side * rng.uniform(2.5, 4.5)
        rows = np.broadcast_to(_gauss(_ROW - offset, rng.uniform(0.7, 1.3)), (_SLOTS, ROWS))
    gain = rng.exponential(1.0, _SLOTS)
    sc.feature += sc.source(rows, sc.gauss_cols(centre, sigma)) * gain[:, None, None]
    sc.t_center, sc.t_sigma = centre, sigma


def _noise_incoherent(sc: _Scene, rng: Generator) -> None:
    """A handful of scattered positive pixels in different fibers: no coherent shape."""
    n = int(rng.integers(3, 15))
    slots = rng.integers(0, _SLOTS, n)
    rows = rng.integers(1, ROWS - 1, n)
    offsets = np.clip(np.rint(rng.normal(0.0, 2.0, n)), -6, 6)
    amps = (rng.exponential(1.0, n) + 0.2) / sc.slot_w[slots]
    stack = np.zeros(_SHAPE)
    np.add.at(stack, (slots, rows, (PRODUCT_LINE_COLUMN + offsets).astype(int)), amps)
    wide = rng.random(n) < 0.3
    np.add.at(
        stack,
        (slots[wide], rows[wide], (PRODUCT_LINE_COLUMN + offsets[wide] + 1).astype(int)),
        0.6 * amps[wide],
    )
    contribution = amps * sc.slot_w[slots]
    centre = float((contribution * offsets).sum() / contribution.sum())
    spread = float(np.sqrt((contribution * (offsets - centre) ** 2).sum() / contribution.sum()))
    for _ in range(int(rng.integers(0, 3))):  # and a few low pixels
        k = int(rng.integers(_SLOTS))
        col = PRODUCT_LINE_COLUMN + int(rng.integers(-6, 7))
        stack[k, int(rng.integers(ROWS)), col] -= rng.exponential(0.7) / sc.slot_w[k]
    sc.feature += stack
    sc.t_center, sc.t_sigma = centre, _clamp(spread, 1.0, 2.5)


def _noise_correlated(sc: _Scene, rng: Generator) -> None:
    """Strongly correlated noise: a broad, smooth bump that ignores the fiber profile."""
    sigma = rng.uniform(2.0, 4.5)
    centre = _centre(rng, 0.5, 1.0)
    rows = 1.0 + 0.4 * np.sin(2 * np.pi * _ROW / rng.uniform(6.0, 14.0) + rng.uniform(0, 2 * np.pi))
    image = rows[:, None] * _gauss(_COL - centre, sigma)
    sc.feature += sc.shared(image) * rng.uniform(0.3, 1.7, _SLOTS)[:, None, None]
    ripple = np.sin(2 * np.pi * _COL / rng.uniform(20.0, 50.0) + rng.uniform(0, 2 * np.pi))
    strength = rng.uniform(0.1, 0.4) * np.sqrt(sc.var_sum[TRACE_ROW, PRODUCT_LINE_COLUMN])
    sc.extra += sc.shared(strength * np.ones((ROWS, 1)) * ripple)
    sc.t_center, sc.t_sigma = centre, sigma


def _noise_fiber(sc: _Scene, rng: Generator) -> None:
    """A line-shaped excursion in one fiber-exposure only (the others disagree)."""
    k = int(rng.choice(TOP_FIBERS, p=[0.2, 0.3, 0.25, 0.25]))
    centre, sigma = _centre(rng, 0.3), rng.uniform(1.0, 2.0)
    sc.feature += sc.single(k, sc.trace_rows[k][:, None] * _gauss(_COL - centre, sigma))
    sc.t_center, sc.t_sigma = centre, sigma


def _noise_gaussian(sc: _Scene, rng: Generator) -> None:
    """Pure noise conditioned on the filter reading the catalogue S/N (line-like, ambiguous)."""
    sc.t_center, sc.t_sigma = _centre(rng, 0.3), rng.uniform(0.9, 2.2)
    sc.conditional = True


# --- bad amplifiers (class -2) ---------------------------------------------------------------


def _bad_amp(sc: _Scene, rng: Generator, raise_p: float, gain: tuple[float, float] = (1.5, 3.0)):
    """Pick the fibers on the bad amplifier (always the top one); maybe raise their rms."""
    member = rng.random(TOP_FIBERS) < 0.5
    member[0] = True
    rest = rng.uniform(0.15, 0.5)
    if rng.random() < raise_p:
        g = rng.uniform(*gain)
        sc.noise[:TOP_FIBERS][member] *= g
        sc.noise[TOP_FIBERS] *= np.sqrt(1.0 + rest * (g * g - 1.0))
    if rng.random() < 0.15:
        sc.twin = True
    slots = np.ones(_SLOTS)
    slots[:TOP_FIBERS] = member
    slots[TOP_FIBERS] = rest * sc.rest_w1
    return slots, member


def _in_sum(sc: _Scene, slots: np.ndarray) -> float:
    """How much of a shared feature confined to ``slots`` reaches im_sum."""
    return float(sc.slot_w @ slots)


def _bad_amp_wiggle(sc: _Scene, rng: Generator) -> None:
    """Periodic wiggles along wavelength, in every row or following the light."""
    slots, _ = _bad_amp(sc, rng, 0.5)
    period = rng.uniform(5.0, 30.0)
    centre = _centre(rng, 0.4, 1.0)
    envelope = 1.0 + 0.3 * np.sin(2 * np.pi * _COL / rng.uniform(60, 200) + rng.uniform(0, 6.3))
    cols = np.cos(2 * np.pi * (_COL - centre) / period) * envelope
    if rng.random() < 0.5:
        rows = np.broadcast_to(1.0 + rng.uniform(-0.3, 0.3) * _ROW / 4, (_SLOTS, ROWS))
    else:
        rows = sc.illum / sc.illum.max(axis=1, keepdims=True)
    sc.feature += sc.shared(rows[:, :, None] * cols, slots)
    sc.t_center, sc.t_sigma = centre, _clamp(period / 5.0, 0.9, 4.0)


def _bad_amp_noisy(sc: _Scene, rng: Generator) -> None:
    """Raised, heavy-tailed noise; the detection is one of its excursions."""
    slots, member = _bad_amp(sc, rng, 1.0, (1.8, 3.0))
    hit = (rng.random((TOP_FIBERS, ROWS, PRODUCT_COLUMNS)) < 0.02) & member[:, None, None]
    size = rng.uniform(3.0, 8.0, hit.shape) * np.where(rng.random(hit.shape) < 0.5, -1.0, 1.0)
    sc.extra[:TOP_FIBERS] += np.where(hit, size * np.sqrt(sc.var[:TOP_FIBERS]), 0.0)
    centre, sigma = rng.uniform(-1.0, 1.0), rng.uniform(0.6, 2.0)
    blob = sc.source(_lumpy(sc, rng), _gauss(_COL - centre, sigma))
    sc.feature += blob * (slots * rng.exponential(1.0, _SLOTS))[:, None, None]
    sc.t_center, sc.t_sigma = centre, max(sigma, 0.9)


def _bad_amp_masked(sc: _Scene, rng: Generator) -> None:
    """Large zeroed areas; junk at the edge of a masked block is the detection."""
    slots, member = _bad_amp(sc, rng, 0.5)
    centre = int(rng.integers(-1, 2))
    side = int(rng.choice([-1, 1]))
    start = PRODUCT_LINE_COLUMN + centre + side * int(rng.integers(1, 4))
    width = int(rng.integers(8, 50))
    low, high = (start, start + width) if side > 0 else (start - width + 1, start + 1)
    low, high = max(low, 0), min(high, PRODUCT_COLUMNS)
    sc.mask[member, :, low:high] = True
    if rng.random() < 0.5:  # a second block, or a band of rows lost in the other fibers
        if rng.random() < 0.5:
            col = int(rng.integers(PRODUCT_COLUMNS))
            sc.mask[member, :, max(col - 15, 0) : col + 15] = True
        else:
            band = int(rng.integers(0, ROWS - 2))
            sc.mask[1:, band : band + int(rng.integers(2, 4)), :] |= member[1:, None, None]
    sc.mask[:, :, PRODUCT_LINE_COLUMN + centre] = False  # the detected pixel survived
    dist = np.abs(_COL - centre)
    junk = np.exp(-dist / rng.uniform(0.7, 2.5)) * ((_COL - centre) * side <= 0.5)
    rows = 1.0 + rng.normal(0.0, 0.2, ROWS)
    sc.feature += sc.shared(rows[:, None] * junk, slots)
    sc.t_center, sc.t_sigma = float(centre), rng.uniform(0.9, 1.8)


def _bad_amp_pedestal(sc: _Scene, rng: Generator) -> None:
    """A pedestal offset over a box or from a step onward, in all rows or a band."""
    slots, _ = _bad_amp(sc, rng, 0.5)
    centre = _centre(rng, 0.4, 1.0)
    if rng.random() < 0.3:  # a step
        side = rng.choice([-1.0, 1.0])
        start = -side * rng.uniform(0.5, 2.0)
        cols = 1.0 / (1.0 + np.exp(-side * (_COL - start) / 0.4))
        sigma = rng.uniform(1.0, 3.0)
    else:
        half = rng.uniform(1.5, 10.0)
        soft = rng.uniform(0.2, 0.8)
        cols = 1.0 / (1.0 + np.exp(-(_COL - centre + half) / soft))
        cols = cols / (1.0 + np.exp((_COL - centre - half) / soft))
        sigma = _clamp(half / 1.5, 0.9, 6.0)
    if rng.random() < 0.3:
        rows = _gauss(_ROW - rng.uniform(-3, 3), rng.uniform(1.0, 2.5))
    else:
        rows = np.ones(ROWS)
    sc.feature += sc.shared(rows[:, None] * cols, slots)
    sc.t_center, sc.t_sigma = centre, sigma


def _bad_amp_continua(sc: _Scene, rng: Generator) -> None:
    """Several false continua (stripes in random rows); a bump on one is the detection."""
    slots, _ = _bad_amp(sc, rng, 0.5)
    reach = _in_sum(sc, slots)
    noise = np.sqrt(sc.var_sum[TRACE_ROW, PRODUCT_LINE_COLUMN])
    rows_at = list(rng.uniform(-TRACE_ROW, TRACE_ROW, int(rng.integers(2, 5))))
    bump_row = rng.uniform(-1.5, 1.5)
    for i, at in enumerate([bump_row, *rows_at]):
        sign = 1.0 if i == 0 else rng.choice([-1.0, 1.0])
        strength = sign * rng.uniform(1.0, 5.0) * noise / reach
        along = 1.0 + rng.uniform(-0.5, 0.5) * _COL / 50.0
        sc.extra += sc.shared(
            strength * _gauss(_ROW - at, rng.uniform(0.4, 1.2))[:, None] * along, slots
        )
    sigma = rng.uniform(1.0, 3.0)
    centre = _centre(rng, 0.4, 1.0)
    bump = _gauss(_ROW - bump_row, rng.uniform(0.5, 1.2))[:, None] * _gauss(_COL - centre, sigma)
    sc.feature += sc.shared(bump, slots)
    sc.t_center, sc.t_sigma = centre, sigma


def _bad_amp_twin(sc: _Scene, rng: Generator) -> None:
    """Two of the top fibers carry identical data; an excursion in it is doubled."""
    _bad_amp(sc, rng, 0.5)
    sc.twin = True
    centre, sigma = _centre(rng, 0.4, 1.0), rng.uniform(0.8, 2.0)
    sc.feature += sc.single(0, _lumpy(sc, rng)[0][:, None] * _gauss(_COL - centre, sigma))
    sc.t_center, sc.t_sigma = centre, max(sigma, 0.9)


# --- bad pixels, columns, charge traps (class -1) --------------------------------------------


def _defect_slots(rng: Generator) -> np.ndarray:
    """The fiber(s) the defect sits in: usually the top one, sometimes a second trace too."""
    slots = np.zeros(_SLOTS)
    k = 0 if rng.random() < 0.6 else int(rng.integers(1, TOP_FIBERS))
    slots[k] = 1.0
    if rng.random() < 0.3:
        slots[(k + int(rng.integers(1, TOP_FIBERS))) % TOP_FIBERS] = rng.uniform(0.5, 1.0)
    return slots


def _across_rows(rng: Generator) -> np.ndarray:
    """A defect's strength in each of the 9 rows: all rows, uneven, never following a trace."""
    return rng.uniform(0.75, 1.25, ROWS) * (1.0 + rng.uniform(-0.3, 0.3) * _ROW / 4.0)


def _box(start: float, width: float) -> np.ndarray:
    offset = _COL - start
    return ((offset >= 0.0) & (offset < width)).astype(float)


def _bad_column_hot(sc: _Scene, rng: Generator) -> None:
    """A hot column 1-3 px wide across all rows."""
    width = int(rng.integers(1, 4))
    start = -(width // 2) + int(rng.integers(-1, 2))
    image = _across_rows(rng)[:, None] * _box(start, width)
    sc.feature += sc.shared(image, _defect_slots(rng))
    sc.t_center, sc.t_sigma = start + (width - 1) / 2.0, 0.9


def _bad_column_wide(sc: _Scene, rng: Generator) -> None:
    """A 4-11 px wide bad region across all rows, soft-edged."""
    width = rng.uniform(4.0, 11.0)
    centre = rng.uniform(-1.0, 1.0)
    soft = rng.uniform(0.3, 0.8)
    cols = 1.0 / (1.0 + np.exp(-(_COL - centre + width / 2) / soft))
    cols = cols / (1.0 + np.exp((_COL - centre - width / 2) / soft))
    sc.feature += sc.shared(_across_rows(rng)[:, None] * cols, _defect_slots(rng))
    sc.t_center, sc.t_sigma = centre, _clamp(width / 2.5, 1.0, 5.0)


def _bad_flat_dip(sc: _Scene, rng: Generator) -> None:
    """An over-corrected pixel-flat dip: a blip that scales with the sky light in every row."""
    width = int(rng.integers(1, 3))
    start = -(width // 2) + int(rng.integers(-1, 2))
    cols = _box(start, width)
    if rng.random() < 0.4:  # the flat's neighbouring pixels went the other way
        cols = cols - rng.uniform(0.2, 0.5) * (
            _box(start - width, width) + _box(start + width, width)
        )
    image = sc.sky_img / sc.sky[PRODUCT_LINE_COLUMN] * cols
    sc.feature += sc.shared(image, _defect_slots(rng))
    sc.t_center, sc.t_sigma = start + (width - 1) / 2.0, 0.9


def _bad_masked_centre(sc: _Scene, rng: Generator) -> None:
    """Zeros at the line centre across all rows, with hot residue at the mask's edges."""
    width = int(rng.integers(1, 6))
    start = -(width // 2) + int(rng.integers(-1, 2))
    slots = np.zeros(_SLOTS)
    slots[0] = 1.0
    others = rng.random(TOP_FIBERS - 1) < 0.3
    slots[1:TOP_FIBERS] = others
    cols = slice(PRODUCT_LINE_COLUMN + start, PRODUCT_LINE_COLUMN + start + width)
    sc.mask[slots[:TOP_FIBERS] > 0, :, cols] = True
    edges = rng.uniform(0.5, 1.0) * _box(start - 1, 1) * (rng.random() < 0.8)
    edges = edges + rng.uniform(0.5, 1.0) * _box(start + width, 1)
    decay = rng.uniform(0.3, 0.7)
    edges = edges + decay * (_box(start - 2, 1) * edges[PRODUCT_LINE_COLUMN + start - 1])
    edges = edges + decay * (
        _box(start + width + 1, 1) * edges[PRODUCT_LINE_COLUMN + start + width]
    )
    sc.feature += sc.shared(_across_rows(rng)[:, None] * edges, slots)
    sc.t_center = start + (width - 1) / 2.0
    sc.t_sigma = max(rng.uniform(1.0, 2.0), (width / 2.0 + 1.0) / 1.2)


def _bad_charge_trap(sc: _Scene, rng: Generator) -> None:
    """A charge trap: a deficit, then the released charge trailing off along the readout."""
    direction = float(rng.choice([-1.0, 1.0]))
    tau = rng.uniform(1.5, 5.0)
    start = -direction * rng.uniform(0.5, 2.0)
    d = (_COL - start) * direction
    cols = np.where(d >= 0.0, np.exp(-d / tau), 0.0)
    cols = cols - np.where((d < 0.0) & (d >= -rng.integers(1, 3)), rng.uniform(0.3, 1.0), 0.0)
    if rng.random() < 0.5:  # trapped charge scales with the light in each row
        image = (sc.illum / sc.illum.max(axis=1, keepdims=True))[:, :, None] * cols
    else:
        image = _across_rows(rng)[:, None] * cols
    sc.feature += sc.shared(image, _defect_slots(rng))
    sc.t_center = start + direction * tau * 0.5
    sc.t_sigma = _clamp(tau / 1.5, 0.9, 3.0)


# --- the catalogue ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Family:
    render: Callable[[_Scene, Generator], None]
    wave: Callable[[Generator], float]
    note: str
    col_corr: tuple[float, float] | None = None


_FAMILIES: dict[str, _Family] = {
    "b_real_narrow": _Family(_real_narrow, _wave_real, "Gaussian line, intrinsic sigma 0-3 A"),
    "b_real_broad": _Family(_real_broad, _wave_real, "broad line, intrinsic sigma 4-14 A"),
    "b_real_lae_asym": _Family(
        _real_lae_asym, _wave_real, "Lyman-alpha: sharp blue edge, red wing, blue bump"
    ),
    "b_real_continuum": _Family(
        _real_continuum, _wave_real, "line on a continuum stripe (LAE break or coloured)"
    ),
    "b_real_masked": _Family(_real_masked, _wave_real, "line with masked pixels/column nearby"),
    "b_real_skyline": _Family(
        _real_skyline, _wave_near_sky, "line beside a sky line and its residual"
    ),
    "b_real_multiline": _Family(
        _real_multiline, _wave_real, "line with a second line of the source in the window"
    ),
    "b_bad_amp_wiggle": _Family(_bad_amp_wiggle, _wave_any, "periodic wiggles along wavelength"),
    "b_bad_amp_noisy": _Family(_bad_amp_noisy, _wave_any, "1.8-3x rms, heavy tails, excursion"),
    "b_bad_amp_masked": _Family(
        _bad_amp_masked, _wave_any, "large zeroed areas, junk at a mask edge"
    ),
    "b_bad_amp_pedestal": _Family(_bad_amp_pedestal, _wave_any, "pedestal offset box or step"),
    "b_bad_amp_continua": _Family(
        _bad_amp_continua, _wave_any, "false continua in random rows, bump on one"
    ),
    "b_bad_amp_twin": _Family(_bad_amp_twin, _wave_any, "two top fibers identical"),
    "b_bad_column_hot": _Family(_bad_column_hot, _wave_any, "hot column 1-3 px, all rows"),
    "b_bad_column_wide": _Family(_bad_column_wide, _wave_any, "bad region 4-11 px, all rows"),
    "b_bad_flat_dip": _Family(
        _bad_flat_dip, _wave_any, "over-corrected pixel-flat dip: sky-scaled blip, all rows"
    ),
    "b_bad_masked_centre": _Family(
        _bad_masked_centre, _wave_any, "zeroed columns at the line centre, hot edges"
    ),
    "b_bad_charge_trap": _Family(
        _bad_charge_trap, _wave_any, "charge trap: deficit then trailing release, all rows"
    ),
    "b_cosmic_ray": _Family(
        _cosmic_ray, _wave_any, "1-3 px hit in one fiber/exposure, any row, core maybe masked"
    ),
    "b_sky_residual": _Family(
        _sky_residual, _wave_sky_window, "sky-subtraction residual in a fixed window, all rows"
    ),
    "b_continuum_absorption": _Family(
        _continuum_absorption, _wave_absorption, "star continuum, false peak between absorptions"
    ),
    "b_noise_spike": _Family(
        _noise_spike, _wave_any, "sub-instrumental spike, lumpy rows, fibers disagree"
    ),
    "b_noise_offtrace": _Family(
        _noise_offtrace, _wave_any, "excursion in the outer rows or a neighbour's wing"
    ),
    "b_noise_incoherent": _Family(
        _noise_incoherent, _wave_any, "scattered positive pixels in several fibers"
    ),
    "b_noise_correlated": _Family(
        _noise_correlated, _wave_any, "strongly correlated noise: broad smooth bump", (0.5, 0.8)
    ),
    "b_noise_fiber": _Family(_noise_fiber, _wave_any, "line-shaped excursion in one fiber only"),
    "b_noise_gaussian": _Family(
        _noise_gaussian, _wave_any, "noise conditioned on the filter S/N: line-like, ambiguous"
    ),
}

_MIX: dict[int, dict[str, float]] = {
    -2: {
        "b_bad_amp_wiggle": 0.25,
        "b_bad_amp_noisy": 0.20,
        "b_bad_amp_masked": 0.15,
        "b_bad_amp_pedestal": 0.15,
        "b_bad_amp_continua": 0.15,
        "b_bad_amp_twin": 0.10,
    },
    -1: {
        "b_bad_column_hot": 0.30,
        "b_bad_column_wide": 0.15,
        "b_bad_flat_dip": 0.20,
        "b_bad_masked_centre": 0.20,
        "b_bad_charge_trap": 0.15,
    },
    0: {
        "b_noise_spike": 0.18,
        "b_noise_incoherent": 0.18,
        "b_noise_offtrace": 0.14,
        "b_noise_correlated": 0.10,
        "b_cosmic_ray": 0.16,
        "b_sky_residual": 0.12,
        "b_continuum_absorption": 0.12,
    },
    1: {
        "b_noise_spike": 0.12,
        "b_noise_incoherent": 0.12,
        "b_noise_offtrace": 0.10,
        "b_noise_correlated": 0.10,
        "b_noise_gaussian": 0.12,
        "b_noise_fiber": 0.08,
        "b_cosmic_ray": 0.12,
        "b_sky_residual": 0.12,
        "b_continuum_absorption": 0.12,
    },
    2: {
        "b_noise_gaussian": 0.35,
        "b_noise_fiber": 0.15,
        "b_noise_correlated": 0.10,
        "b_noise_incoherent": 0.05,
        "b_noise_offtrace": 0.05,
        "b_cosmic_ray": 0.05,
        "b_sky_residual": 0.12,
        "b_continuum_absorption": 0.13,
    },
    3: {
        "b_real_narrow": 0.35,
        "b_real_broad": 0.15,
        "b_real_lae_asym": 0.20,
        "b_real_masked": 0.12,
        "b_real_skyline": 0.10,
        "b_real_continuum": 0.08,
    },
    4: {
        "b_real_narrow": 0.30,
        "b_real_broad": 0.10,
        "b_real_lae_asym": 0.22,
        "b_real_continuum": 0.15,
        "b_real_masked": 0.08,
        "b_real_skyline": 0.07,
        "b_real_multiline": 0.08,
    },
    5: {
        "b_real_narrow": 0.28,
        "b_real_broad": 0.10,
        "b_real_lae_asym": 0.22,
        "b_real_continuum": 0.18,
        "b_real_masked": 0.08,
        "b_real_skyline": 0.06,
        "b_real_multiline": 0.08,
    },
}

FAMILIES: dict[str, tuple[int, ...]] = {
    name: tuple(c for c in VISUAL_CLASSES if name in _MIX[c]) for name in _FAMILIES
}
"""Each family and the visual classes it is drawn for."""

FAMILY_NOTES: dict[str, str] = {name: family.note for name, family in _FAMILIES.items()}
"""One line per family: what it renders."""

_MIX_TABLE = {
    c: (tuple(mix), np.cumsum(list(mix.values())) / sum(mix.values())) for c, mix in _MIX.items()
}


def _draw_sn(rng: Generator, vis_class: int) -> float:
    """Catalogue S/N per class: 0-3 hug the 4.8 cut, 4 sits above it, 5 reaches far."""
    if vis_class == 5:
        excess = rng.lognormal(np.log(5.5), 0.75)
    elif vis_class == 4:
        excess = rng.lognormal(np.log(1.6), 0.6)
    elif vis_class == 3:
        excess = rng.lognormal(np.log(0.4), 0.7)
    elif vis_class in (0, 1, 2):
        excess = rng.exponential((0.4, 0.35, 0.3)[vis_class])
    else:  # bad amps and bad pixels fool the pipeline at any S/N
        excess = rng.lognormal(np.log(1.2 if vis_class == -2 else 1.5), 1.0)
    return float(min(4.8 + excess, 200.0))


def _nuisances(sc: _Scene, rng: Generator, vis_class: int) -> None:
    """What happens to any detection: masked hits and stray cosmic rays (and, in the scene,
    the sky-model error)."""
    messy = 3.0 if vis_class == 3 else 1.0  # a 'possibly real' line is often a messy one
    for k in range(TOP_FIBERS):
        if rng.random() < (0.05 if k == 0 else 0.08) * messy:
            _mask_patch(sc, rng, k)
    if rng.random() < 0.08 * messy:
        _stray_cosmic(sc, rng)


@dataclass
class Detection:
    """One rendered detection, with the masks (for tests and galleries)."""

    family: str
    vis_class: int
    sn: float
    wave: float
    im_wave: np.ndarray  # (100,) float32
    im_sum: np.ndarray  # (9, 100) float32
    im_array: np.ndarray  # (4, 9, 100) float32
    sum_mask: np.ndarray  # (9, 100) bool: where im_sum is masked (exactly 0)
    fiber_mask: np.ndarray  # (4, 9, 100) bool
    measured_sn: float  # the pipeline filter read on the final im_sum (~sn by construction)


def render_detection(seed: int, index: int, vis_class: int) -> Detection:
    """Detection ``index`` of a set made with ``seed``: a function of (seed, index, class) only."""
    if vis_class not in _MIX_TABLE:
        raise ValueError(f"unknown visual class {vis_class} (known {list(VISUAL_CLASSES)})")
    rng = np.random.default_rng([seed, index])
    names, cumulative = _MIX_TABLE[vis_class]
    name = names[int(np.searchsorted(cumulative, rng.random(), side="right"))]
    family = _FAMILIES[name]
    sn = _draw_sn(rng, vis_class)
    sc = _Scene(rng, family.wave(rng), family.col_corr)
    family.render(sc, rng)
    _nuisances(sc, rng, vis_class)
    im_sum, im_array, sum_mask, measured = sc.render(sn)
    return Detection(
        name,
        vis_class,
        sn,
        sc.wave,
        sc.im_wave.astype(np.float32),
        im_sum,
        im_array,
        sum_mask,
        sc.mask.copy(),
        measured,
    )


def simulate(
    class_counts: dict[int, int],
    seed: int,
    *,
    first_detectid: int = 2_000_500_000,
    with_fibers: bool = False,
    progress: bool = False,
) -> SimulatedSet:
    """Simulate exactly ``class_counts`` detections, in an order shuffled by ``seed``.

    Detection ``i`` (id ``first_detectid + i``) depends only on (seed, i, its class), so sets
    made with the same seed agree wherever their classes agree.
    """
    unknown = sorted(set(class_counts) - set(VISUAL_CLASSES))
    if unknown:
        raise ValueError(f"unknown visual classes {unknown} (known {list(VISUAL_CLASSES)})")
    if any(int(n) < 0 for n in class_counts.values()):
        raise ValueError("class counts must be non-negative")
    if seed < 0:
        raise ValueError("seed must be non-negative")
    labels = np.repeat(
        np.array(VISUAL_CLASSES, dtype=np.int8),
        [int(class_counts.get(c, 0)) for c in VISUAL_CLASSES],
    )
    labels = np.random.default_rng([seed, *_ORDER_STREAM]).permutation(labels)
    n = len(labels)
    im_wave = np.empty((n, PRODUCT_COLUMNS), np.float32)
    im_sum = np.empty((n, ROWS, PRODUCT_COLUMNS), np.float32)
    im_array = np.empty((n, TOP_FIBERS, ROWS, PRODUCT_COLUMNS), np.float32) if with_fibers else None
    sn = np.empty(n, np.float32)
    wave = np.empty(n, np.float32)
    family = np.empty(n, dtype=f"<U{max(len(name) for name in _FAMILIES)}")
    indices = range(n)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, total=n, desc="simulate B", unit="cutout")
    for i in indices:
        detection = render_detection(seed, i, int(labels[i]))
        im_wave[i], im_sum[i], sn[i], wave[i] = (
            detection.im_wave,
            detection.im_sum,
            detection.sn,
            detection.wave,
        )
        family[i] = detection.family
        if im_array is not None:
            im_array[i] = detection.im_array
    return SimulatedSet(
        detectid=np.arange(first_detectid, first_detectid + n, dtype=np.int64),
        im_wave=im_wave,
        im_sum=im_sum,
        vis_class=labels,
        sn=sn,
        wave=wave,
        family=family,
        im_array=im_array,
        meta={
            "simulator": SIMULATOR,
            "simulator_version": VERSION,
            "seed": int(seed),
            "class_counts": {int(c): int(class_counts.get(c, 0)) for c in VISUAL_CLASSES},
            "first_detectid": int(first_detectid),
            "with_fibers": bool(with_fibers),
        },
    )
