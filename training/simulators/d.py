"""Simulator D: an independent, clean-room renderer of HETDEX detection cutouts, for testing only.

It stands in for a real night when testing a model trained on the other simulators, so it models
the detection pipeline its own way rather than drawing finished blobs on a noise image:

Pipeline model. Each detection is extracted from 15-30 fibers picked from three dithered hexagonal
exposures (2.54" pitch) nearest the source. The true light per fiber follows a Moffat PSF (seeing
1.0-3.4", beta 2.5-4.5) times a per-exposure transparency (0.3-1.05); the pipeline weights, which
sum to 1, come from a *Gaussian* PSF at a misestimated seeing and a slightly wrong centroid, so
weights and light do not match. Every fiber is rendered as a 9 x 101 CCD cutout on its own native
wavelength grid (a sub-pixel offset per fiber, dispersion 1.985-2.015 A/px), then linearly resampled
onto the common 100-column grid centred on the line; the resampling correlates neighbouring columns
and a masked native pixel poisons both outputs it feeds. ``im_sum`` is the weighted mean over the
fibers still valid at a pixel, and is exactly 0 where less than half the weight survives.

Noise model. Per CCD pixel: read noise (2.5-4 e) plus Poisson noise of the sky (a continuum rising
to the red with Hg/NI sky lines, brightness varying x0.4-2.5 with the moon) and of the source,
drawn from a Gaussian scale mixture (0.3-2 % of pixels x2-5) for heavy tails. Sky subtraction
leaves a flat-field error (0.5-2.5 % of sky, larger toward both chip ends) and a wavelength-solution
error (a derivative-shaped residual at sky lines), in the fiber and in its neighbours' wings 8-9
rows away. Each of 1-3 amplifiers has its own gain error and a bias pedestal drifting along
wavelength. Masks: chip ends (< 3470 or > 5540 A), cosmic-ray hits, an occasional dead CCD column;
an unmasked cosmic ray appears now and then in any detection.

Families (``FAMILIES`` gives their classes, ``FAMILY_NOTES`` one line each): real Lya with a
radiative-transfer-like red wing and blue bump, [OII] as a partially resolved doublet, broad AGN
lines, [OIII] 5007 with its 4959 companion; bad amplifiers (wiggles, pedestals and masked areas, a
duplicated fiber), bad columns and pixel-flat blips, escaped cosmic rays, sky residuals at the
fixed windows, stars peaking between absorption lines, noise excursions; and three artifacts the
brief does not name: a satellite glint, an amplifier crosstalk ghost and a fringe pattern. Every
detection's triggering feature is scaled so that its optimal (matched-filter) S/N is the catalogue
S/N times a lognormal measurement error, so brightness alone does not separate the families.
"""

from collections.abc import Callable

import numpy as np

from service.contract import PRODUCT_COLUMNS, PRODUCT_LINE_COLUMN, ROWS, TRACE_ROW
from service.domain import SKY_RESIDUAL_WINDOWS_A, VISUAL_CLASSES
from training.simulators.simulated_set import TOP_FIBERS, SimulatedSet

SIMULATOR = "D"
VERSION = "1"

FAMILIES: dict[str, tuple[int, ...]] = {
    "d_lae": (3, 4, 5),
    "d_oii": (3, 4, 5),
    "d_broad": (3, 4, 5),
    "d_oiii": (3, 4, 5),
    "d_amp_wiggle": (-2,),
    "d_amp_pedestal": (-2,),
    "d_amp_twin": (-2,),
    "d_hot_column": (-1,),
    "d_flat_blip": (-1,),
    "d_noise": (0, 1, 2),
    "d_cosmic": (0, 1, 2),
    "d_sky_residual": (0, 1, 2),
    "d_star_peak": (0, 1, 2),
    "d_new_satellite": (0,),
    "d_new_crosstalk": (0, 1),
    "d_new_fringe": (-2, 0),
}

FAMILY_NOTES: dict[str, str] = {
    "d_lae": "Lya 3500-5500 A: split-normal red wing, 30% with a weak blue peak, faint continuum "
    "suppressed blueward by the IGM",
    "d_oii": "[OII] 3726/3729 doublet (2.8-4.1 A apart, ratio 0.9-1.5), extended, usually on a "
    "continuum stripe",
    "d_broad": "AGN broad line, intrinsic sigma 8-14 A, mildly asymmetric, blue continuum",
    "d_oiii": "[OIII] 5007 at z < 0.1 with 4959 at a third of its flux ~24 columns blueward",
    "d_amp_wiggle": "bad amplifier: rms x1.5-3, periodic wiggle along wavelength cresting at the "
    "line column, false continua",
    "d_amp_pedestal": "bad amplifier: per-fiber pedestals, large masked blocks, false continua",
    "d_amp_twin": "bad amplifier: raised rms, two top fibers identical, excursion in the copy",
    "d_hot_column": "hot/defective CCD column 1-11 px wide across all rows of one amplifier, "
    "sometimes masked at its centre",
    "d_flat_blip": "over-corrected pixel-flat dip: sky-proportional blip of 1-3 px on every fiber "
    "of the amp, sometimes zeros at the centre",
    "d_noise": "noise excursion: a few incoherent positive pixels near the trace, more for "
    "higher classes",
    "d_cosmic": "cosmic ray escaping the mask: 1-3 px track in one fiber of one exposure, often "
    "off the trace",
    "d_sky_residual": "sky-subtraction residual in a fixed window (3534-3556, 5194-5205 p-Cygni, "
    "5456-5466 A) filling all rows",
    "d_star_peak": "bright star continuum with the false peak between two absorption lines "
    "(3775-3785 or 4503-4513 A)",
    "d_new_satellite": "earth-satellite glint: solar-spectrum continuum in the fibers a track "
    "crosses in one exposure, peak between solar absorption lines",
    "d_new_crosstalk": "crosstalk ghost of a bright line on another amplifier: bipolar, "
    "instrument-width blob displaced off the trace in 1-2 fibers",
    "d_new_fringe": "interference fringes: sky modulated by a 6-14 px sinusoid coherent across "
    "fibers and rows, in the red",
}

# Family mix within each visual class (weights); the d_new_ families stay under ~5% of fakes.
_MIX: dict[int, dict[str, float]] = {
    -2: {"d_amp_wiggle": 0.40, "d_amp_pedestal": 0.31, "d_amp_twin": 0.26, "d_new_fringe": 0.03},
    -1: {"d_hot_column": 0.55, "d_flat_blip": 0.45},
    0: {
        "d_noise": 0.36,
        "d_cosmic": 0.18,
        "d_sky_residual": 0.14,
        "d_star_peak": 0.22,
        "d_new_satellite": 0.04,
        "d_new_crosstalk": 0.04,
        "d_new_fringe": 0.02,
    },
    1: {
        "d_noise": 0.46,
        "d_cosmic": 0.14,
        "d_sky_residual": 0.14,
        "d_star_peak": 0.21,
        "d_new_crosstalk": 0.05,
    },
    2: {"d_noise": 0.56, "d_cosmic": 0.08, "d_sky_residual": 0.10, "d_star_peak": 0.26},
    3: {"d_lae": 0.50, "d_oii": 0.30, "d_broad": 0.12, "d_oiii": 0.08},
    4: {"d_lae": 0.55, "d_oii": 0.30, "d_broad": 0.10, "d_oiii": 0.05},
    5: {"d_lae": 0.60, "d_oii": 0.30, "d_broad": 0.07, "d_oiii": 0.03},
}

SN_FLOOR = 4.8
_NATIVE = PRODUCT_COLUMNS + 1
_OFFSET = np.arange(_NATIVE) - PRODUCT_LINE_COLUMN
_ROW_Y = np.arange(ROWS, dtype=float)
_CHIP_A = (3470.0, 5540.0)
_SKY_LINES_A = np.array(
    [[3541.0, 0.5], [3549.5, 0.4], [4046.6, 0.3], [4358.3, 1.0], [5199.0, 0.7], [5460.7, 1.5]]
)
_SOLAR_LINES_A = np.array(
    [[3933.7, 0.6], [3968.5, 0.55], [4101.7, 0.3], [4300.0, 0.35], [4340.5, 0.35],
     [4861.3, 0.3], [5172.7, 0.3], [5183.6, 0.3], [5269.5, 0.2]]
)  # fmt: skip
_SOLAR_GAPS_A = (3951.0, 4121.0, 4320.0, 5226.0)
_PITCH = 2.54
_FIBER_AREA = np.pi * 0.75**2
_HEX = np.array(
    [
        [_PITCH * (i + j / 2), _PITCH * j * np.sqrt(3) / 2]
        for i in range(-4, 5)
        for j in range(-4, 5)
        if np.hypot(i + j / 2, j * np.sqrt(3) / 2) < 2.6
    ]
)
_DITHERS = np.array(
    [[0.0, 0.0], [_PITCH / 2, _PITCH / (2 * np.sqrt(3))], [_PITCH / 2, -_PITCH / (2 * np.sqrt(3))]]
)
_LIGHT_KMS = 299_792.458
_FINE = 8
_FINE_X = np.arange(-_FINE * 52, _FINE * 52 + 1) / _FINE


def _gaussian_table(size: int = 1 << 16) -> np.ndarray:
    """Symmetric sorted Gaussian deviates: indexing it with random uint16 is ~3x faster than
    drawing normals, and noise generation dominates the cost of a cutout."""
    draws = np.sort(np.random.default_rng(0xD).standard_normal(size))
    return ((draws - draws[::-1]) / 2).astype(np.float32)


_GAUSS_TABLE = _gaussian_table()


def _trace(dy: np.ndarray) -> np.ndarray:
    """Cross-dispersion profile of one fiber on the CCD (the brief's exp(-|dy|^2.5/...))."""
    return np.exp(-(np.abs(dy) ** 2.5) / (2 * 2.5**2.5))


def _split_normal(x: np.ndarray, comps: np.ndarray) -> np.ndarray:
    """Density (per A) of split-normal components (centre, sigma left, sigma right, weight)."""
    sub = x[:, None] - comps[:, 0]
    sigma = np.where(sub < 0, comps[:, 1], comps[:, 2])
    norm = comps[:, 3] * 2 / (np.sqrt(2 * np.pi) * (comps[:, 1] + comps[:, 2]))
    return (norm * np.exp(-0.5 * (sub / sigma) ** 2)).sum(-1)


def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * (x / sigma) ** 2)


def _lines(lam: np.ndarray, lines: np.ndarray, sigma: float) -> np.ndarray:
    """Sum of Gaussian lines (centre, strength) of one width."""
    return (lines[:, 1] * _gauss(lam[:, None] - lines[:, 0], sigma)).sum(-1)


class _Scene:
    """One detection's observation on the native grid: fibers, weights, sky, noise, masks."""

    def __init__(self, r: np.random.Generator, wave: float) -> None:
        self.r, self.wave = r, wave
        self.disp = r.uniform(1.985, 2.015)
        k = self.k = int(r.integers(15, 31))
        self.phase = r.uniform(0.0, 1.0, k)
        self.lam = wave + self.disp * (_OFFSET[None, :] - self.phase[:, None])  # (K, 101)
        self.fine = wave + self.disp * _FINE_X
        self._start = (
            np.rint((_OFFSET - self.phase[:, None] - 0.5) * _FINE).astype(int) + 52 * _FINE
        )
        self.sigma_inst = r.uniform(2.0, 2.8)
        self._fibers(r, k)
        self._sky(r, k)
        self.signal = np.zeros((k, ROWS, _NATIVE), np.float32)
        self.rms = np.ones(k)
        self.mask = self._masks(r, k)
        self.twin = False

    def _fibers(self, r: np.random.Generator, k: int) -> None:
        """Dithered fibers nearest the source, their true light and the pipeline's weights."""
        self.seeing = float(np.clip(r.lognormal(np.log(1.8), 0.22), 1.0, 3.4))
        self.beta = r.uniform(2.5, 4.5)
        t_exp = np.clip(r.uniform(0.5, 1.0) * (1 + r.normal(0, 0.06, 3)), 0.3, 1.05)
        points = (_HEX[None] + _DITHERS[:, None] + r.uniform(-1.27, 1.27, 2)).reshape(-1, 2)
        pick = np.argpartition(np.hypot(*points.T), k)[:k]
        self.xy, self.exposure = points[pick], pick // len(_HEX)
        self.radius = np.hypot(*self.xy.T)
        self.transmission = t_exp[self.exposure] * r.uniform(0.92, 1.08, k)
        assumed = self.seeing * r.lognormal(0.0, 0.12) / 2.3548
        guess = np.hypot(*(self.xy - r.normal(0.0, 0.25, 2)).T)
        estimate = t_exp * r.lognormal(0.0, 0.05, 3)
        w = np.exp(-0.5 * (guess / assumed) ** 2) * estimate[self.exposure]
        self.weight = w / w.sum()
        self.order = np.argsort(self.weight)[::-1]
        n_amp = int(r.integers(1, 4))
        self.amp = r.integers(0, n_amp, k)
        self.gain = 1 + r.normal(0.0, 0.02, n_amp)
        self.bias = r.normal(0.0, 0.3, (n_amp, 1)) + r.normal(0.0, 0.3, (n_amp, 1)) * _OFFSET / 50
        dy = r.normal(0.0, 0.2, (k, 1))
        pitch = r.uniform(8.0, 9.0)
        y = _ROW_Y - TRACE_ROW - dy
        self.p_own = _trace(y).astype(np.float32)
        self.p_all = self.p_own + (_trace(y - pitch) + _trace(y + pitch)).astype(np.float32)

    def _sky(self, r: np.random.Generator, k: int) -> None:
        """Sky counts, the variance they set, and the imperfect subtraction they leave."""
        level = r.lognormal(np.log(25.0), 0.45)
        near = _SKY_LINES_A[np.abs(_SKY_LINES_A[:, 0] - self.wave) < 130]
        self.sky = self.sample(
            lambda lam: level * ((lam / 4500) ** 2.2 + 6 * _lines(lam, near, self.sigma_inst))
        ).astype(np.float32)
        self.read = r.uniform(2.5, 4.0)
        self.var0 = self.p_all[:, :, None] * self.sky[:, None, :]
        self.var0 += np.float32(self.read**2)
        edge = (1 + 1.5 * ((self.lam - 4500) / 1000) ** 2) * self.sky
        scale = r.uniform(0.005, 0.025)
        shift = r.normal(0.0, r.uniform(0.01, 0.06), (k, 1)) * np.gradient(self.sky, axis=1)
        own = (r.normal(0.0, scale, (k, 1)) * edge + shift).astype(np.float32)
        neighbours = (r.normal(0.0, scale, (k, 1)) * edge).astype(np.float32)
        self.residual = self.p_own[:, :, None] * own[:, None, :]
        self.residual += (self.p_all - self.p_own)[:, :, None] * neighbours[:, None, :]

    def _masks(self, r: np.random.Generator, k: int) -> np.ndarray:
        """Chip ends, cosmic-ray hits and occasional dead columns, on native pixels."""
        mask = np.zeros((k, ROWS, _NATIVE), dtype=bool)
        mask |= ((self.lam < _CHIP_A[0]) | (self.lam > _CHIP_A[1]))[:, None, :]
        hits = r.poisson(0.4 * k)
        where = r.integers(0, (k, ROWS, _NATIVE), (hits, 3))[:, :, None, None]
        size = r.integers(1, 4, (hits, 2, 1, 1))
        dy, dx = np.arange(3)[:, None], np.arange(3)
        rows, cols = where[:, 1] + dy, where[:, 2] + dx
        keep = (dy < size[:, 0]) & (dx < size[:, 1]) & (rows < ROWS) & (cols < _NATIVE)
        fibers, rows, cols = (
            np.broadcast_to(a, keep.shape)[keep] for a in (where[:, 0], rows, cols)
        )
        mask[fibers, rows, cols] = True
        if r.random() < 0.12:
            on = self.amp == r.integers(self.amp.max() + 1)
            mask[on, :, r.integers(_NATIVE)] = True
        return mask

    def sample(self, spectrum: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """(K, 101) pixel-integrated spectrum on each fiber's native grid, from one evaluation
        on a fine common grid (8 samples per pixel) instead of one per fiber."""
        total = np.concatenate([[0.0], np.cumsum(spectrum(self.fine))])
        return (total[self._start + _FINE] - total[self._start]) / _FINE

    def light(self, ext: float = 0.0) -> np.ndarray:
        """(K,) fraction of a source's flux entering each fiber (Moffat, seeing + extent)."""
        fwhm = np.hypot(self.seeing, ext)
        alpha = fwhm / (2 * np.sqrt(2 ** (1 / self.beta) - 1))
        moffat = (
            (self.beta - 1) / (np.pi * alpha**2) * (1 + (self.radius / alpha) ** 2) ** -self.beta
        )
        return _FIBER_AREA * moffat * self.transmission

    def on_trace(self, spectrum: np.ndarray, light: np.ndarray) -> np.ndarray:
        """(K, 9, 101) counts of a source spectrum (per A, unit flux) through each fiber."""
        return self.p_own[:, :, None] * (light[:, None] * spectrum * self.disp)[:, None, :]

    def snr(self, template: np.ndarray, centre: int | None = None) -> float:
        """Optimal matched-filter S/N of a template, optionally only within +-5 columns."""
        if centre is not None:
            lo = PRODUCT_LINE_COLUMN + centre - 5
            template = template[:, :, max(lo, 0) : lo + 11]
            var = self.var0[:, :, max(lo, 0) : lo + 11]
        else:
            var = self.var0
        return float(np.sqrt((template**2 / var).sum()))

    def add(self, template: np.ndarray, sn: float, centre: int | None = None) -> float:
        """Add a template scaled to the given S/N; return the scale used."""
        scale = sn / max(self.snr(template, centre), 1e-9)
        self.signal += scale * template
        return scale

    def bad_amp(self, n_top: int) -> np.ndarray:
        """Put the top fibers on one amplifier and return its fiber mask."""
        bad = self.amp[self.order[0]]
        self.amp[self.order[:n_top]] = bad
        return self.amp == bad

    def impulses(self, fibers: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """A template of random positive single pixels (noise excursions, cosmic tracks)."""
        template = np.zeros_like(self.signal)
        np.add.at(template, (fibers, rows, cols), self.r.exponential(1.0, len(fibers)) + 0.3)
        return template

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """Noise, gains, resampling and the weighted mean: (im_sum, top-fiber cutouts)."""
        r, k = self.r, self.k
        sigma = np.maximum(self.signal, 0)
        sigma += self.var0
        np.sqrt(sigma, out=sigma)
        sigma *= self.rms.astype(np.float32)[:, None, None]
        native = _GAUSS_TABLE.take(r.integers(0, _GAUSS_TABLE.size, sigma.shape, np.uint16))
        n_tail = r.binomial(native.size, r.uniform(0.003, 0.02))
        native.flat[r.integers(native.size, size=n_tail)] *= r.uniform(2.0, 5.0, n_tail)
        native *= sigma
        native += self.signal
        native += self.residual
        native += self.bias[self.amp].astype(np.float32)[:, None, :]
        if r.random() < 0.2:
            native[r.integers(k), r.integers(ROWS), r.integers(_NATIVE)] += r.uniform(50, 500)
        phase = self.phase.astype(np.float32)[:, None, None]
        out = native[:, :, :-1] + phase * (native[:, :, 1:] - native[:, :, :-1])
        valid = ~(self.mask[:, :, :-1] | self.mask[:, :, 1:])
        if self.twin:
            out[self.order[1]], valid[self.order[1]] = out[self.order[0]], valid[self.order[0]]
        out *= valid * self.gain[self.amp].astype(np.float32)[:, None, None]
        weight = self.weight.astype(np.float32)
        kept = np.tensordot(weight, valid.astype(np.float32), axes=1)
        total = np.tensordot(weight, out, axes=1)
        im_sum = np.where(kept >= 0.5, total / np.maximum(kept, 1e-6), 0.0)
        return im_sum.astype(np.float32), out[self.order[:TOP_FIBERS]]


# --- real lines ------------------------------------------------------------------------------


def _lae(s: _Scene, cls: int, sn: float) -> None:
    """Lya: resonant scattering gives a red wing and sometimes a weak blue peak."""
    r, inst = s.r, s.sigma_inst
    intrinsic, wing = r.uniform(1.0, 5.0), r.uniform(1.0, 2.6)
    comps = [[0.0, np.hypot(intrinsic, inst), np.hypot(wing * intrinsic, inst), 1.0]]
    if r.random() < 0.3:
        bump = r.uniform(0.08, 0.3)
        comps[0][3] = 1 - bump
        comps.append([-r.uniform(4.0, 9.0), np.hypot(0.6 * intrinsic, inst), inst, bump])
    _line(s, np.array(comps), r.uniform(0.0, 0.8), r.lognormal(np.log(120), 0.6), sn, igm=True)


def _oii(s: _Scene, cls: int, sn: float) -> None:
    """[OII]: a doublet 2.8(1+z) A apart, partly resolved at R ~ 800."""
    r = s.r
    sep = 2.79 * s.wave / 3727.4
    ratio = r.uniform(0.9, 1.5)
    sigma = np.hypot(s.wave * r.uniform(25, 110) / _LIGHT_KMS, s.sigma_inst)
    w1, w2 = 1 / (1 + ratio), ratio / (1 + ratio)
    comps = np.array([[-sep * w2, sigma, sigma, w1], [sep * w1, sigma, sigma, w2]])
    _line(s, comps, r.uniform(0.3, 2.0), r.lognormal(np.log(40), 0.7), sn)


def _broad(s: _Scene, cls: int, sn: float) -> None:
    """AGN broad line: sigma 8-14 A with a mild asymmetry, strong blue continuum."""
    r = s.r
    sigma = np.hypot(r.uniform(8.0, 14.0), s.sigma_inst)
    comps = np.array([[0.0, sigma, sigma * r.uniform(0.85, 1.2), 1.0]])
    _line(s, comps, 0.0, r.lognormal(np.log(60), 0.5), sn)


def _oiii(s: _Scene, cls: int, sn: float) -> None:
    """[OIII] 5007 with 4959 at a third of its flux, ~48(1+z) A blueward."""
    r = s.r
    sigma = np.hypot(s.wave * r.uniform(30, 150) / _LIGHT_KMS, s.sigma_inst)
    offset = s.wave * (4958.91 / 5006.84 - 1)
    comps = np.array([[0.0, sigma, sigma, 0.75], [offset, sigma, sigma, 0.25]])
    _line(s, comps, r.uniform(0.5, 2.5), r.lognormal(np.log(80), 0.7), sn)


def _line(
    s: _Scene, comps: np.ndarray, ext: float, ew: float, sn: float, igm: bool = False
) -> None:
    """A line (plus continuum at equivalent width ``ew``) scaled so the line has S/N ``sn``."""
    centre = s.wave + s.r.normal(0.0, 0.4)
    light = s.light(ext)
    line = s.on_trace(s.sample(lambda lam: _split_normal(lam - centre, comps)), light)
    slope, forest = s.r.uniform(-2.0, 0.5), s.r.uniform(0.3, 0.8) if igm else 1.0
    continuum = s.sample(
        lambda lam: (lam / centre) ** slope / ew * np.where(lam < centre, forest, 1.0)
    )
    scale = sn / s.snr(line)
    s.signal += scale * (line + s.on_trace(continuum, light))


# --- fakes -----------------------------------------------------------------------------------


def _noise(s: _Scene, cls: int, sn: float) -> None:
    """A chance excursion: a few incoherent pixels near the trace; more for higher classes."""
    r = s.r
    n = int(r.integers(2 + 2 * cls, 6 + 3 * cls))
    fibers = s.order[r.integers(0, min(s.k, 8), n)]
    rows = np.clip(np.rint(r.normal(TRACE_ROW, 1.5, n)), 0, ROWS - 1).astype(int)
    cols = np.clip(np.rint(r.normal(PRODUCT_LINE_COLUMN, 0.8 + 0.4 * cls, n)), 0, _NATIVE - 1)
    s.add(s.impulses(fibers, rows, cols.astype(int)), sn)


def _cosmic(s: _Scene, cls: int, sn: float) -> None:
    """An escaped cosmic ray: a short straight track in one fiber, not following the profile."""
    r = s.r
    length = int(r.integers(1, 4))
    step = [(0, 1), (1, 0), (1, 1), (1, -1)][r.integers(4)]
    fiber = s.order[min(int(r.geometric(0.5)) - 1, 3)]
    row0 = int(r.integers(0, ROWS)) if r.random() < 0.6 else TRACE_ROW
    rows = np.clip(row0 + step[0] * np.arange(length), 0, ROWS - 1)
    cols = PRODUCT_LINE_COLUMN + int(r.integers(-1, 2)) + step[1] * np.arange(length)
    s.add(s.impulses(np.full(length, fiber), rows, cols), sn)


def _sky_residual(s: _Scene, cls: int, sn: float) -> None:
    """A coherent sky-subtraction error in a fixed window, spread over all rows and fibers."""
    r = s.r
    inst, wide, dip = s.sigma_inst, r.uniform(4.0, 8.0), r.uniform(0.5, 1.0)
    if s.wave < 4000:
        shape = s.sample(lambda lam: _gauss(lam - s.wave, wide))
    elif s.wave < 5300:
        shape = s.sample(
            lambda lam: _gauss(lam - s.wave, inst) - dip * _gauss(lam - s.wave + 2 * inst, 2.0)
        )
    else:
        shape = s.sample(lambda lam: _gauss(lam - s.wave, inst))
    spread = 0.4 + 0.6 * s.p_all
    common = 1 + r.normal(0.0, 0.3, s.k)
    template = spread[:, :, None] * (common[:, None] * s.sky * shape)[:, None, :]
    s.add(template, sn, centre=0)


def _absorbed(lam: np.ndarray, lines: np.ndarray, sigma: float) -> np.ndarray:
    """A continuum with Gaussian absorption lines (centre, depth)."""
    return np.clip(1 - _lines(lam, lines, sigma), 0.05, None)


def _star_peak(s: _Scene, cls: int, sn: float) -> None:
    """A star: the continuum between two absorption lines reads as an emission peak."""
    r = s.r
    lines = np.array(
        [[s.wave - r.uniform(6, 14), r.uniform(0.25, 0.5)], [s.wave + r.uniform(6, 14), 0.4]]
    )
    slope, width = r.uniform(0.5, 3.0), np.hypot(r.uniform(2.5, 5.0), s.sigma_inst)
    spectrum = s.sample(lambda lam: (lam / 4500) ** -slope * _absorbed(lam, lines, width))
    s.add(s.on_trace(spectrum, s.light()), sn * r.uniform(3.0, 10.0))


def _bad_amp(s: _Scene) -> np.ndarray:
    """Common to bad amplifiers: most weight on one amp, its rms raised, false continua."""
    r = s.r
    on = s.bad_amp(int(r.integers(2, 7)))
    s.rms[on] = r.uniform(1.5, 3.0)
    stripes = on & (r.random(s.k) < 0.3)
    level = r.normal(0.0, 2.0, s.k) * np.sqrt(s.var0.max(axis=(1, 2)))
    s.signal[stripes] += s.p_own[stripes, :, None] * level[stripes, None, None]
    return on


def _amp_wiggle(s: _Scene, cls: int, sn: float) -> None:
    """Bad amp with a periodic pattern along wavelength cresting at the line column."""
    r = s.r
    on = _bad_amp(s)
    period = r.uniform(4.0, 24.0)
    wiggle = np.cos(2 * np.pi * (_OFFSET - s.phase[:, None]) / period)
    rows = 1 + r.uniform(-0.3, 0.3) * s.p_own
    template = on[:, None, None] * rows[:, :, None] * wiggle[:, None, :]
    s.add(template, sn, centre=0)


def _amp_pedestal(s: _Scene, cls: int, sn: float) -> None:
    """Bad amp with pedestal jumps and large masked blocks; an excursion triggered it."""
    r = s.r
    on = _bad_amp(s)
    spread = np.sqrt(s.var0.mean(axis=(1, 2)))
    s.signal += (on * r.normal(0.0, 2.0, s.k) * spread)[:, None, None]
    for fiber in r.choice(np.flatnonzero(on), size=min(int(on.sum()), 3), replace=False):
        start = int(r.integers(0, _NATIVE - 15))
        s.mask[fiber, :, start : start + int(r.integers(15, 60))] = True
    _noise(s, 0, sn)


def _amp_twin(s: _Scene, cls: int, sn: float) -> None:
    """Bad amp whose two top fibers carry identical data, with an excursion in the copy."""
    _bad_amp(s)
    s.twin = True
    _noise(s, 0, sn / 1.6)


def _column(s: _Scene, sn: float, template_of: Callable[[np.ndarray], np.ndarray]) -> None:
    """A defect at a fixed CCD column on one amp, sometimes masked at the centre."""
    r = s.r
    on = s.bad_amp(int(r.integers(3, 9)))
    width = int(r.integers(1, 12))
    cols = PRODUCT_LINE_COLUMN - width // 2 + np.arange(width)
    jitter = r.integers(-1, 2, s.k) * (r.random(s.k) < 0.3)
    footprint = np.zeros((s.k, _NATIVE))
    footprint[np.arange(s.k)[:, None], np.clip(cols + jitter[:, None], 0, _NATIVE - 1)] = 1.0
    footprint *= on[:, None]
    s.add(template_of(footprint), sn, centre=0)
    if r.random() < 0.3:
        core = PRODUCT_LINE_COLUMN + np.arange(-1, int(r.integers(1, 3)))
        s.mask[np.ix_(on, np.arange(ROWS), core)] = True


def _hot_column(s: _Scene, cls: int, sn: float) -> None:
    """Hot column: same counts in every row, a little structure from the CCD."""
    rows = 1 + s.r.normal(0.0, 0.15, ROWS)
    _column(s, sn, lambda fp: rows[None, :, None] * fp[:, None, :])


def _flat_blip(s: _Scene, cls: int, sn: float) -> None:
    """Pixel flat too low: dividing by it lifts the sky in those pixels on every fiber."""
    _column(s, sn, lambda fp: s.p_all[:, :, None] * (fp * s.sky)[:, None, :])


def _satellite(s: _Scene, cls: int, sn: float) -> None:
    """A satellite glint: sunlight in the fibers its track crosses during one exposure."""
    r = s.r
    exposure = s.exposure[s.order[0]]
    angle = r.uniform(0, np.pi)
    across = s.xy @ np.array([-np.sin(angle), np.cos(angle)]) - r.normal(0.0, 0.8)
    light = (s.exposure == exposure) * _gauss(across, r.uniform(0.5, 1.2))
    sun = s.sample(lambda lam: 4500 / lam * _absorbed(lam, _SOLAR_LINES_A, s.sigma_inst))
    s.add(s.on_trace(sun, light), sn * r.uniform(3.0, 8.0))


def _crosstalk(s: _Scene, cls: int, sn: float) -> None:
    """A bright line on another amp copied into this one: bipolar, off the trace, sharp."""
    r = s.r
    n = int(r.integers(1, 3))
    fibers = s.order[r.choice(3, n, replace=False)]
    offset = r.choice([-1, 1]) * r.uniform(1.5, 4.0)
    rows = _trace(_ROW_Y - TRACE_ROW - offset)
    dip, lag = r.uniform(0.2, 0.5), r.uniform(2.0, 4.0) * s.disp
    shape = s.sample(
        lambda lam: (
            _gauss(lam - s.wave, 0.9 * s.sigma_inst)
            - dip * _gauss(lam - s.wave - lag, s.sigma_inst)
        )
    )[fibers]
    template = np.zeros_like(s.signal)
    template[fibers] = rows[None, :, None] * shape[:, None, :]
    s.add(template, sn, centre=0)


def _fringe(s: _Scene, cls: int, sn: float) -> None:
    """Fringing: the sky modulated by an interference sinusoid, the same in every fiber."""
    r = s.r
    period = r.uniform(6.0, 14.0)
    wave = np.cos(2 * np.pi * (_OFFSET - s.phase[:, None]) / period) * s.sky
    s.add(s.p_all[:, :, None] * wave[:, None, :], sn, centre=0)


_RENDER: dict[str, Callable[[_Scene, int, float], None]] = {
    "d_lae": _lae,
    "d_oii": _oii,
    "d_broad": _broad,
    "d_oiii": _oiii,
    "d_amp_wiggle": _amp_wiggle,
    "d_amp_pedestal": _amp_pedestal,
    "d_amp_twin": _amp_twin,
    "d_hot_column": _hot_column,
    "d_flat_blip": _flat_blip,
    "d_noise": _noise,
    "d_cosmic": _cosmic,
    "d_sky_residual": _sky_residual,
    "d_star_peak": _star_peak,
    "d_new_satellite": _satellite,
    "d_new_crosstalk": _crosstalk,
    "d_new_fringe": _fringe,
}


def _wave(r: np.random.Generator, family: str) -> float:
    """Observed wavelength of the detection, where each family can occur."""
    if family == "d_oii":
        return 3727.4 + (5500 - 3727.4) * np.sqrt(r.random())
    if family == "d_oiii":
        return r.uniform(5006.84, 5500.0)
    if family == "d_sky_residual":
        lo, hi = SKY_RESIDUAL_WINDOWS_A[r.integers(len(SKY_RESIDUAL_WINDOWS_A))]
        return r.uniform(lo + 2, hi - 2)
    if family == "d_star_peak":
        return r.choice([3780.0, 4508.0]) + r.uniform(-5.0, 5.0)
    if family == "d_new_satellite":
        return r.choice(_SOLAR_GAPS_A) + r.uniform(-3.0, 3.0)
    if family == "d_new_fringe":
        return r.uniform(4700.0, 5500.0)
    return r.uniform(3500.0, 5500.0)


def _catalogue_sn(r: np.random.Generator, family: str, cls: int) -> float:
    """The catalogue S/N: real classes rise with S/N; most fakes sit near the cut."""
    if cls >= 3:
        median = {3: 0.4, 4: 1.4, 5: 3.8}[cls]
        return SN_FLOOR + r.lognormal(np.log(median), 0.7)
    scale = {
        "d_noise": 0.4 + 0.3 * cls,
        "d_cosmic": 3.0,
        "d_amp_wiggle": 2.0,
        "d_amp_pedestal": 2.0,
        "d_amp_twin": 2.0,
        "d_hot_column": 2.5,
        "d_flat_blip": 1.5,
    }.get(family, 1.2)
    return SN_FLOOR + r.exponential(scale)


def _one(
    seed: int, index: int, cls: int
) -> tuple[str, float, float, np.ndarray, np.ndarray, np.ndarray]:
    """Detection ``index``: depends only on (seed, index, class)."""
    r = np.random.default_rng([seed, index, cls + 2, 0xD])
    names = list(_MIX[cls])
    cumulative = np.cumsum(list(_MIX[cls].values()))
    family = names[int(np.searchsorted(cumulative, r.random() * cumulative[-1], side="right"))]
    wave = float(_wave(r, family))
    sn = float(_catalogue_sn(r, family, cls))
    scene = _Scene(r, wave)
    _RENDER[family](scene, cls, sn * r.lognormal(0.0, 0.12))
    im_sum, fibers = scene.render()
    im_wave = wave + scene.disp * (np.arange(PRODUCT_COLUMNS) - PRODUCT_LINE_COLUMN)
    return family, wave, sn, im_wave, im_sum, fibers


def _check(class_counts: dict[int, int], seed: int) -> None:
    """Refuse what would silently produce a different set than asked for."""
    unknown = set(class_counts) - set(VISUAL_CLASSES)
    if unknown:
        raise ValueError(f"unknown visual classes {sorted(unknown)} (allowed {VISUAL_CLASSES})")
    if any(int(n) != n or n < 0 for n in class_counts.values()):
        raise ValueError(f"class counts must be non-negative integers, got {class_counts}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")


def simulate(
    class_counts: dict[int, int],
    seed: int,
    *,
    first_detectid: int = 4_000_500_000,
    with_fibers: bool = False,
    progress: bool = False,
) -> SimulatedSet:
    """Exactly ``class_counts`` detections in a seed-shuffled order, as a SimulatedSet."""
    _check(class_counts, seed)
    labels = np.repeat(
        np.array(list(class_counts), dtype=np.int8), [int(n) for n in class_counts.values()]
    )
    labels = np.random.default_rng([seed, 0xD5]).permutation(labels)
    n = len(labels)
    steps = range(n)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="simulate D", unit="cutout")
    im_sum = np.zeros((n, ROWS, PRODUCT_COLUMNS), np.float32)
    im_array = np.zeros((n, TOP_FIBERS, ROWS, PRODUCT_COLUMNS), np.float32) if with_fibers else None
    im_wave = np.zeros((n, PRODUCT_COLUMNS), np.float32)
    waves, sns, families = np.zeros(n, np.float32), np.zeros(n, np.float32), []
    for i in steps:
        family, waves[i], sns[i], im_wave[i], im_sum[i], fibers = _one(seed, i, int(labels[i]))
        families.append(family)
        if im_array is not None:
            im_array[i] = fibers
    return SimulatedSet(
        detectid=first_detectid + np.arange(n, dtype=np.int64),
        im_wave=im_wave,
        im_sum=im_sum,
        vis_class=labels,
        sn=sns,
        wave=waves,
        family=np.array(families, dtype=str),
        im_array=im_array,
        meta={"simulator": SIMULATOR, "version": VERSION, "seed": seed},
    )
