"""Simulator C: a third, clean-room renderer of HETDEX detection cutouts.

Written from the HETDEX brief alone, so that a model trained on simulators A and B can be tested on
cutouts whose physics was rendered another way, and so that a novelty detector meets artifact kinds
that neither of the others drew (the ``c_new_*`` families).

Noise model (one detection):

* Geometry: a hexagonal fiber lattice (2.5" pitch, 0.75" fiber radius) observed in three dithers;
  the source sits at a random place in a lattice cell. Its light reaches each fiber through a
  Moffat PSF (seeing log-normal around 1.8", beta 2.5-4.5), a per-exposure transparency and a
  per-fiber throughput. The fibers within 3.5" of the source are summed with PSF weights taken from
  a *model* PSF that is slightly wrong (seeing +-15 %, astrometry ~0.25"), as a pipeline's is.
* The four highest-weight fibers are rendered one by one (they are ``im_array``); all the others are
  folded into one pseudo-fiber whose signal is their weighted mean and whose variance is their
  weighted variance, which is exact for a linear sum and keeps the cost independent of fiber count.
* Each fiber cutout (9 x 100): its trace in row 4 (sub-pixel offset) with the profile
  exp(-|dy|^2.5 / (2 * 2.5^2.5)), the wings of both neighbouring fibers 7.8-9.2 px away. Variance =
  read noise^2 (2.5-5 e-) + sky (continuum 8-120 e-/px with a random colour, emission lines at
  3545, 4047, 4358, 5199 and 5461 A) times the fiber and wing profile + the source's own counts.
  Sky and source both pass a blue-poor throughput curve (from the brief's electrons-to-flux
  numbers, tilted per night). Gaussian noise is resampled along wavelength by a random two-tap
  kernel (the rectification), so neighbouring columns are correlated as in a real product.
* Every detection carries a little sky-subtraction error (a fraction of the sky plus a sub-pixel
  wavelength shift, which makes p-Cygni shapes at sky lines), some masked cosmic rays in single
  fibers and, rarely, an unmasked hit away from the line. Columns outside 3470-5540 A are masked.
* ``im_sum`` is the weighted sum of the fibers; masked fiber pixels contribute 0 and pixels masked
  for the whole detection are exactly 0 (the brief: no NaN, masked pixels are 0).
* The S/N of a detection is drawn per visual class (4.8 plus a log-normal excess, largest for
  class 5) and is this simulator's own definition: the expected matched-filter S/N in ``im_sum``
  of a Gaussian of the feature's width times the trace profile, background-limited. Line-like
  features are scaled to reach it; instrument patterns (bad amplifiers, continua) are set relative
  to the noise and carry the drawn S/N as their catalogue value.

The families (``FAMILIES``/``FAMILY_NOTES``) cover the brief's real lines (classes 3-5), bad
amplifiers (-2), bad pixels, columns and charge traps (-1), cosmic rays, sky residuals, continua
and noise (0-2), and four artifacts the brief does not name (``c_new_*``): a meteor trail, a
persistence ghost, a bleeding saturated star and amplifier ringing.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from service.contract import PRODUCT_COLUMNS, PRODUCT_LINE_COLUMN, ROWS, TRACE_ROW
from service.domain import SKY_RESIDUAL_WINDOWS_A, VISUAL_CLASSES
from training.simulators.simulated_set import TOP_FIBERS, SimulatedSet

SIMULATOR = "C"
VERSION = "1"

ANGSTROM_PER_PIXEL = 2.0
SPECTRAL_RANGE_A = (3470.0, 5540.0)
WAVE_RANGE_A = (3500.0, 5500.0)
SN_FLOOR = 4.8
SN_CAP = 100.0

_SALT = 0xC0FFEE  # keeps simulator C's streams apart from any other user of the same seeds
_FIBERS = TOP_FIBERS + 1  # the top fibers plus one pseudo-fiber for all the others
_REST = TOP_FIBERS
_COLS = np.arange(PRODUCT_COLUMNS, dtype=float)
_DY = np.arange(ROWS, dtype=float) - TRACE_ROW
_PROFILE_SCALE = 2 * 2.5**2.5
_PITCH = 2.5
_FIBER_RADIUS = 0.75
_SELECT_RADIUS = 3.5
_EXPOSURES = 3
_SKY_LINES_A = np.array([3545.0, 4046.6, 4358.3, 5199.0, 5460.7])
_THROUGHPUT_TABLE = (  # relative electrons per unit flux, from the brief's conversion factors
    np.array([3470.0, 3500.0, 4040.0, 4700.0, 5540.0]),
    np.array([0.12, 0.164, 0.643, 1.0, 0.95]),
)
_ABSORPTION_WINDOWS_A = ((3775.0, 3785.0), (4503.0, 4513.0))
_METEOR_LINES_A = np.array(  # Fe I, Mg I, Ca II H and K: air wavelengths, never redshifted
    [3734.9, 3749.5, 3820.4, 3832.3, 3838.3, 3859.9, 3933.7, 3968.5, 4045.8, 4271.8, 4307.9,
     4383.5, 5167.3, 5172.7, 5183.6]
)  # fmt: skip
_METEOR_STRENGTH = np.array(
    [0.3, 0.3, 0.4, 0.4, 0.5, 0.5, 1.0, 0.7, 0.3, 0.2, 0.2, 0.25, 0.3, 0.5, 0.6]
)
_OIII_A = (4958.9, 5006.8)


def _hex_lattice() -> tuple[np.ndarray, np.ndarray]:
    """Fiber centres (arcsec) of a 7x7 hexagonal patch in each of three dithers, and exposures."""
    i, j = np.meshgrid(np.arange(-3, 4), np.arange(-3, 4))
    base = np.stack([_PITCH * (i + 0.5 * j), _PITCH * np.sqrt(3) / 2 * j], -1).reshape(-1, 2)
    dithers = np.array([[0, 0], [_PITCH / 2, _PITCH / (2 * np.sqrt(3))], [0, _PITCH / np.sqrt(3)]])
    points = (base[None] + dithers[:, None]).reshape(-1, 2)
    return points, np.repeat(np.arange(_EXPOSURES), len(base))


_LATTICE, _LATTICE_EXPOSURE = _hex_lattice()


def _profile(dy: np.ndarray) -> np.ndarray:
    """Cross-dispersion profile of one fiber on the CCD (peak 1), from the brief."""
    return np.exp(-(np.abs(dy) ** 2.5) / _PROFILE_SCALE)


def _gauss(x: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - centre) / sigma) ** 2)


def _loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


@dataclass
class _Scene:
    """One detection being rendered: geometry, noise budget and the accumulating signal.

    Arrays over fibers have ``_FIBERS`` entries: the four top fibers, then the pseudo-fiber.
    """

    rng: np.random.Generator
    sn: float
    lam: np.ndarray  # (100,) wavelength of each column
    centre: float  # the detection's column (sub-pixel)
    inst: float  # instrumental Gaussian sigma, A
    thr: np.ndarray  # (100,) relative throughput
    sky: np.ndarray  # (F, 100) sky counts per pixel at the trace peak
    weight: np.ndarray  # (F,) im_sum weights, summing to 1
    light: np.ndarray  # (F,) the source's relative light in each (pseudo-)fiber
    exposure: np.ndarray  # (F, 3) each (pseudo-)fiber's share of each exposure
    own: np.ndarray  # (F, 9) the fiber's own profile across rows
    wings: np.ndarray  # (F, 9) own profile plus the neighbours' wings
    var: np.ndarray  # (F, 9, 100) background variance of each (pseudo-)fiber
    shot: np.ndarray  # (F, 1, 1) how a fiber's counts turn into its variance
    signal: np.ndarray = field(default_factory=lambda: np.zeros((_FIBERS, ROWS, PRODUCT_COLUMNS)))
    gain: np.ndarray = field(default_factory=lambda: np.ones((_FIBERS, ROWS, PRODUCT_COLUMNS)))
    fiber_mask: np.ndarray = field(
        default_factory=lambda: np.zeros((_FIBERS, ROWS, PRODUCT_COLUMNS), bool)
    )
    sum_mask: np.ndarray = field(default_factory=lambda: np.zeros((ROWS, PRODUCT_COLUMNS), bool))
    smooth: int = 2  # length of the noise's resampling kernel along wavelength
    twin: bool = False  # a bad amplifier copies top fiber 0 into top fiber 1

    def gauss(self, sigma_px: float, offset: float = 0.0) -> np.ndarray:
        return _gauss(_COLS, self.centre + offset, sigma_px)

    def source(self, spectrum: np.ndarray, light: np.ndarray | None = None) -> np.ndarray:
        """Counts of a sky source with this spectrum (per column) in each fiber, on its trace."""
        light = self.light if light is None else light
        return light[:, None, None] * self.own[:, :, None] * (self.thr * spectrum)[None, None, :]

    def pattern(self, rows: np.ndarray, cols: np.ndarray, fibers: np.ndarray) -> np.ndarray:
        """An instrument pattern: rows (9,) or (F, 9) times columns, in the given fibers."""
        rows = np.broadcast_to(rows, (_FIBERS, ROWS))
        return fibers[:, None, None] * rows[:, :, None] * cols[None, None, :]

    def to_sum(self, cube: np.ndarray) -> np.ndarray:
        return (self.weight @ cube.reshape(_FIBERS, -1)).reshape(ROWS, PRODUCT_COLUMNS)

    def sum_var(self) -> np.ndarray:
        return (self.weight**2 @ (self.var * self.gain**2).reshape(_FIBERS, -1)).reshape(
            ROWS, PRODUCT_COLUMNS
        )

    def noise_level(self) -> float:
        """The background noise of ``im_sum`` at the detection, the unit of instrument patterns."""
        return float(np.sqrt(self.sum_var()[TRACE_ROW, PRODUCT_LINE_COLUMN]))

    def fiber_noise(self) -> np.ndarray:
        """(F,) the background noise of each (pseudo-)fiber at the detection."""
        return np.sqrt(self.var[:, TRACE_ROW, PRODUCT_LINE_COLUMN]) * self.gain[:, TRACE_ROW, 50]

    def add(self, cube: np.ndarray, width_px: float, sn: float | None = None) -> float:
        """Add ``cube`` scaled so its expected matched-filter S/N in im_sum is ``sn``."""
        template = self.own[0][:, None] * self.gauss(width_px)[None, :]
        var = self.sum_var()
        image = self.to_sum(cube)
        matched = float(np.sum(template * image / var) / np.sqrt(np.sum(template**2 / var)))
        # a feature the line filter barely sees is still capped at 4x its own optimal S/N
        itself = float(np.sqrt(np.sum(image**2 / var)))
        amplitude = (self.sn if sn is None else sn) / max(matched, 0.25 * itself)
        self.signal += amplitude * cube
        return amplitude

    def pick(self, count: int) -> np.ndarray:
        """``count`` distinct top fibers, the heavier ones likelier, as a 0/1 vector over fibers."""
        p = self.weight[:TOP_FIBERS] / self.weight[:TOP_FIBERS].sum()
        chosen = self.rng.choice(TOP_FIBERS, size=count, replace=False, p=p)
        vector = np.zeros(_FIBERS)
        vector[chosen] = 1.0
        return vector

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """Noise, masks and the weighted sum: (im_sum (9, 100), top fibers (4, 9, 100))."""
        var = (self.var + np.maximum(self.signal, 0) * self.shot) * self.gain**2
        kernel = self.rng.uniform(0.0, 1.0, (_FIBERS, self.smooth))
        kernel[:, 0] += 1.0 if self.smooth == 2 else 0.0
        kernel /= np.sqrt((kernel**2).sum(1, keepdims=True))
        raw = self.rng.standard_normal((_FIBERS, ROWS, PRODUCT_COLUMNS + self.smooth - 1))
        noise = sum(
            kernel[:, j, None, None] * raw[:, :, j : j + PRODUCT_COLUMNS]
            for j in range(self.smooth)
        )
        fibers = self.signal + np.sqrt(var) * noise
        if self.twin:
            fibers[1] = fibers[0]
        fibers[self.fiber_mask] = 0.0
        fibers[:, self.sum_mask] = 0.0
        im_sum = self.to_sum(fibers)
        im_sum[self.sum_mask] = 0.0
        return im_sum, fibers[:TOP_FIBERS]


def _make_scene(rng: np.random.Generator, sn: float, wave: float, extended: bool) -> _Scene:
    """Draw the night, the geometry and the background of one detection."""
    centre_wave = ANGSTROM_PER_PIXEL * np.round(wave / ANGSTROM_PER_PIXEL)
    lam = centre_wave + ANGSTROM_PER_PIXEL * (_COLS - PRODUCT_LINE_COLUMN)
    centre = PRODUCT_LINE_COLUMN + (wave - centre_wave) / ANGSTROM_PER_PIXEL
    thr = np.interp(lam, *_THROUGHPUT_TABLE) * (1 + rng.uniform(-0.1, 0.1) * (lam - 4500) / 1000)

    seeing = float(np.clip(np.exp(rng.normal(np.log(1.8), 0.22)), 1.1, 3.3))
    beta = rng.uniform(2.5, 4.5)
    position = rng.uniform([0.0, 0.0], [_PITCH, _PITCH * np.sqrt(3) / 2])
    model_r = np.hypot(*(_LATTICE - position - rng.normal(0.0, 0.25, 2)).T)
    chosen = np.flatnonzero(model_r < _SELECT_RADIUS)
    model_alpha = seeing * rng.uniform(0.85, 1.15) / (2 * np.sqrt(2 ** (1 / 3.5) - 1))
    model = (1 + (model_r[chosen] / model_alpha) ** 2) ** -3.5
    order = np.argsort(-model)
    chosen, w = chosen[order], model[order] / model.sum()
    exposures = _LATTICE_EXPOSURE[chosen]

    dither_error = rng.normal(0.0, 0.15, (_EXPOSURES, 2))[exposures]
    true_r = np.hypot(*(_LATTICE[chosen] + dither_error - position).T)
    source_seeing = np.hypot(seeing, rng.uniform(0.6, 1.6)) if extended else seeing
    alpha = source_seeing / (2 * np.sqrt(2 ** (1 / beta) - 1))
    throughput = rng.normal(1.0, rng.uniform(0.03, 0.1), len(chosen))
    light = (beta - 1) * (_FIBER_RADIUS / alpha) ** 2 * (1 + (true_r / alpha) ** 2) ** -beta
    light *= rng.uniform(0.7, 1.0, _EXPOSURES)[exposures] * throughput  # transparency

    weight = np.empty(_FIBERS)
    weight[:TOP_FIBERS] = w[:TOP_FIBERS]
    weight[_REST] = w[TOP_FIBERS:].sum()
    share = w[TOP_FIBERS:] / weight[_REST]
    exposure = np.zeros((_FIBERS, _EXPOSURES))
    exposure[np.arange(TOP_FIBERS), exposures[:TOP_FIBERS]] = 1.0
    exposure[_REST] = np.bincount(exposures[TOP_FIBERS:], share, _EXPOSURES)
    rest_var = float(share @ share)  # variance of the weighted mean of unit-variance fibers

    offset = np.zeros(_FIBERS)
    offset[:TOP_FIBERS] = rng.uniform(-0.3, 0.3, TOP_FIBERS)
    gaps = rng.uniform(7.8, 9.2, (_FIBERS, 2))
    own = _profile(_DY[None] - offset[:, None])
    wings = own + _profile(_DY[None] - gaps[:, :1]) + _profile(_DY[None] + gaps[:, 1:])

    strength = rng.uniform([0.5, 0.0, 0.0, 0.5, 0.0], [3, 6, 12, 4, 12])
    sky_lines = strength @ np.exp(-0.5 * ((lam[None] - _SKY_LINES_A[:, None]) / 2.4) ** 2)
    sky_spectrum = (lam / 4500) ** rng.uniform(-1.0, 2.0) + sky_lines
    fiber_sky = (_loguniform(rng, 8.0, 120.0) * rng.uniform(0.9, 1.1, _EXPOSURES))[exposures]
    fiber_sky *= throughput
    sky = np.empty((_FIBERS, PRODUCT_COLUMNS))
    sky[:] = thr * sky_spectrum
    sky[:TOP_FIBERS] *= fiber_sky[:TOP_FIBERS, None]
    sky[_REST] *= share @ fiber_sky[TOP_FIBERS:]
    read = rng.uniform(2.5, 5.0)
    var = read**2 + sky[:, None, :] * wings[:, :, None]
    var[_REST] *= rest_var
    shot = np.ones((_FIBERS, 1, 1))
    shot[_REST] = rest_var
    fiber_light = np.empty(_FIBERS)
    fiber_light[:TOP_FIBERS] = light[:TOP_FIBERS]
    fiber_light[_REST] = share @ light[TOP_FIBERS:]
    scene = _Scene(
        rng, sn, lam, centre, rng.uniform(2.1, 2.8), thr, sky, weight, fiber_light, exposure,
        own, wings, var, shot,
    )  # fmt: skip
    averaging = np.ones(_FIBERS)
    averaging[_REST] = np.sqrt(rest_var)
    _nuisances(scene, averaging)
    return scene


def _nuisances(s: _Scene, averaging: np.ndarray) -> None:
    """What every detection carries: sky-subtraction error, masked and stray cosmic rays, edges.

    ``averaging`` shrinks the pseudo-fiber's share, an average of many independent fibers.
    """
    rng = s.rng
    scale = rng.normal(0.0, _loguniform(rng, 0.002, 0.012), _FIBERS) * averaging
    shift = rng.normal(0.0, 0.03, _FIBERS) * averaging  # pixels of wavelength-solution error
    slope = np.zeros_like(s.sky)
    slope[:, 1:-1] = (s.sky[:, 2:] - s.sky[:, :-2]) / 2
    residual = scale[:, None] * s.sky + shift[:, None] * slope
    s.signal += residual[:, None, :] * s.wings[:, :, None]
    for fiber in np.flatnonzero(rng.random(TOP_FIBERS) < 0.25):
        for _ in range(rng.integers(1, 3)):
            row, col, length = rng.integers(0, ROWS), rng.integers(0, 98), rng.integers(1, 4)
            s.fiber_mask[fiber, row, col : col + length] = True
    if rng.random() < 0.15:
        col = (PRODUCT_LINE_COLUMN + rng.choice([-1, 1]) * rng.integers(7, 45)) % PRODUCT_COLUMNS
        fiber = rng.integers(0, TOP_FIBERS)
        s.signal[fiber, rng.integers(0, ROWS), col] += rng.uniform(5, 30) * s.fiber_noise()[fiber]
    s.sum_mask[:, (s.lam < SPECTRAL_RANGE_A[0]) | (s.lam > SPECTRAL_RANGE_A[1])] = True


# --- real lines -------------------------------------------------------------------------------


def _width(s: _Scene, intrinsic_a: float) -> float:
    """Observed Gaussian sigma in pixels of a line of this intrinsic sigma (A)."""
    return float(np.hypot(s.inst, intrinsic_a) / ANGSTROM_PER_PIXEL)


def _continuum(s: _Scene, line_amplitude: float, width_px: float, ew_a: float, drop: float) -> None:
    """A source continuum at observed equivalent width ``ew_a``; ``drop`` dims the blue side."""
    level = line_amplitude * np.sqrt(2 * np.pi) * width_px * ANGSTROM_PER_PIXEL / ew_a
    spectrum = (s.lam / s.lam[PRODUCT_LINE_COLUMN]) ** s.rng.uniform(-2, 2)
    spectrum = np.where(s.centre > _COLS, spectrum * drop, spectrum)
    s.signal += level * s.source(spectrum)


def _narrow_line(s: _Scene, continuum_chance: float = 0.25) -> tuple[float, float]:
    width = _width(s, s.rng.uniform(0.0, 3.0))
    amplitude = s.add(s.source(s.gauss(width)), width)
    if s.rng.random() < continuum_chance:
        _continuum(s, amplitude, width, _loguniform(s.rng, 40, 600), 1.0)
    return amplitude, width


def _asymmetric_line(s: _Scene, continuum_chance: float = 0.25) -> None:
    """Lyman-alpha: a sharp blue edge, a red tail, sometimes a weak blue peak, IGM-dimmed blue."""
    blue = _width(s, s.rng.uniform(0.0, 1.5))
    red = blue + s.rng.uniform(0.8, 3.0)
    x = _COLS - s.centre
    shape = np.exp(-0.5 * (x / np.where(x < 0, blue, red)) ** 2)
    if s.rng.random() < 0.25:
        shape += s.rng.uniform(0.1, 0.4) * s.gauss(blue, -s.rng.uniform(1.5, 3.5))
    amplitude = s.add(s.source(shape), (blue + red) / 2)
    if s.rng.random() < continuum_chance:
        ew = _loguniform(s.rng, 60, 800)
        _continuum(s, amplitude, (blue + red) / 2, ew, s.rng.uniform(0.2, 0.7))


def _broad_line(s: _Scene) -> None:
    width = _width(s, _loguniform(s.rng, 6.0, 14.0))
    amplitude = s.add(s.source(s.gauss(width)), width)
    if s.rng.random() < 0.3:
        _continuum(s, amplitude, width, _loguniform(s.rng, 30, 300), 1.0)


def _line_on_continuum(s: _Scene) -> None:
    """[OII] or a bright LAE: a clear continuum stripe along the trace under the line."""
    amplitude, width = _narrow_line(s, continuum_chance=0.0)
    _continuum(s, amplitude, width, _loguniform(s.rng, 6, 120), 1.0)


def _masked_line(s: _Scene) -> None:
    """A real line with part of it masked: for the whole detection, or in a few top fibers."""
    if s.rng.random() < 0.6:
        _narrow_line(s)
    else:
        _asymmetric_line(s)
    start = round(s.centre + s.rng.uniform(-9, 3))
    block = slice(start, start + s.rng.integers(2, 11))
    if s.rng.random() < 0.5:
        s.sum_mask[:, block] = True
    else:
        fibers = s.pick(s.rng.integers(1, 4)).astype(bool)
        rows = slice(s.rng.integers(0, 4), s.rng.integers(5, ROWS + 1))
        s.fiber_mask[fibers, rows, block] = True


def _line_near_sky(s: _Scene) -> None:
    """A real line beside a sky line whose imperfect subtraction leaves a residual in all rows."""
    _narrow_line(s)
    nearest = _SKY_LINES_A[np.argmin(np.abs(_SKY_LINES_A - s.lam[PRODUCT_LINE_COLUMN]))]
    column = PRODUCT_LINE_COLUMN + (nearest - s.lam[PRODUCT_LINE_COLUMN]) / ANGSTROM_PER_PIXEL
    beside = column + s.rng.choice([-2, 2])
    shape = _gauss(_COLS, column, 1.3) - s.rng.uniform(0, 1) * _gauss(_COLS, beside, 1.3)
    rows = s.rng.uniform(0.4, 1.0) + s.rng.uniform(0, 0.6) * s.wings
    level = s.rng.uniform(1, 5) * s.noise_level() * s.rng.choice([-1, 1], p=[0.3, 0.7])
    s.signal += level * s.pattern(rows, shape, np.ones(_FIBERS))


def _faint_line(s: _Scene) -> None:
    """A faint, possibly extended source in the hard S/N 4.8-5.6 regime."""
    if s.rng.random() < 0.7:
        _narrow_line(s, 0.1)
    else:
        _asymmetric_line(s, 0.1)


def _line_pair(s: _Scene) -> None:
    """[OIII] 5007 with 4959 a third as strong 24 columns bluer (or detected on 4959)."""
    on_strong = s.lam[PRODUCT_LINE_COLUMN] >= _OIII_A[1] and s.rng.random() < 0.7
    detected, other = (_OIII_A[1], _OIII_A[0]) if on_strong else _OIII_A
    ratio = 1 / 2.98 if on_strong else 2.98
    offset = (other - detected) * (s.lam[PRODUCT_LINE_COLUMN] / detected) / ANGSTROM_PER_PIXEL
    width = _width(s, s.rng.uniform(0.0, 2.5))
    shape = s.gauss(width) + ratio * s.gauss(width, offset)
    amplitude = s.add(s.source(shape), width)
    if s.rng.random() < 0.5:
        _continuum(s, amplitude, width, _loguniform(s.rng, 20, 300), 1.0)


# --- bad amplifiers (-2) --------------------------------------------------------------------


def _bad_amp(s: _Scene) -> np.ndarray:
    """Which (pseudo-)fibers sit on the bad amplifier, with their noise raised 1.5-3x."""
    amp = np.append(np.ones(TOP_FIBERS), s.rng.uniform(0.4, 1.0))
    if s.rng.random() < 0.3:
        amp[:TOP_FIBERS] = s.pick(s.rng.integers(2, TOP_FIBERS))[:TOP_FIBERS]
    s.gain *= (1 + amp * (s.rng.uniform(1.5, 3.0) - 1))[:, None, None]
    _excursion(s, s.sn * s.rng.uniform(0.3, 0.9))
    return amp


def _wiggles(s: _Scene, amp: np.ndarray) -> None:
    period = _loguniform(s.rng, 5, 40)
    phase = 2 * np.pi * (_COLS - s.centre - s.rng.normal(0, 1)) / period
    envelope = 1 + 0.5 * np.sin(2 * np.pi * _COLS / _loguniform(s.rng, 60, 300))
    flat = s.rng.uniform(0, 1)
    rows = flat + (1 - flat) * s.wings
    level = s.rng.uniform(0.8, 3) * s.noise_level() / max(s.weight @ amp, 0.2)
    s.signal += level * s.pattern(rows, envelope * np.cos(phase), amp * s.rng.uniform(0.7, 1.3, 5))


def _pedestals(s: _Scene, amp: np.ndarray) -> None:
    level = s.rng.normal(0, s.rng.uniform(0.5, 2.5), _FIBERS) * s.fiber_noise() * amp
    step = np.where(s.rng.uniform(0, PRODUCT_COLUMNS) < _COLS, s.rng.normal(0, 1), 0.0)
    s.signal += level[:, None, None] * (1 + step)[None, None, :]


def _dead_blocks(s: _Scene, amp: np.ndarray) -> None:
    for _ in range(s.rng.integers(1, 4)):
        start, stop = _block_beside(s, s.rng.integers(10, 61))
        block = slice(start, stop)
        if s.rng.random() < 0.6:
            s.sum_mask[:, block] = True
        else:
            s.fiber_mask[amp > 0.5, :, block] = True
    if s.rng.random() < 0.4:
        rows = slice(0, s.rng.integers(1, 4)) if s.rng.random() < 0.5 else slice(6, ROWS)
        s.fiber_mask[amp > 0.5, rows, :] = True


def _block_beside(s: _Scene, length: int) -> tuple[int, int]:
    """Columns of a zeroed block that leaves the detection itself (what was detected) unmasked."""
    centre = round(s.centre)
    if s.rng.random() < 0.5:
        stop = centre - 2 - s.rng.integers(0, 20)
        return max(stop - length, 0), max(stop, 0)
    start = centre + 3 + s.rng.integers(0, 20)
    return start, start + length


def _false_continua(s: _Scene, amp: np.ndarray) -> None:
    for _ in range(s.rng.integers(1, 5)):
        row = s.rng.integers(0, ROWS)
        rows = _gauss(np.arange(ROWS, dtype=float), row, s.rng.uniform(0.4, 1.2))
        start, stop = sorted(s.rng.integers(0, PRODUCT_COLUMNS, 2))
        cols = np.where((start <= _COLS) & (stop + 30 >= _COLS), 1.0, 0.0)
        level = s.rng.choice([-1, 1]) * s.rng.uniform(0.5, 3) * s.fiber_noise()
        s.signal += s.pattern(rows, cols, level * amp)
    s.twin = s.rng.random() < 0.6


_AMP_EFFECTS = (_wiggles, _dead_blocks, _false_continua)


def _amp_family(main: Callable[[_Scene, np.ndarray], None]) -> Callable[[_Scene], None]:
    """A bad amplifier showing ``main`` plus, often, the other symptoms and a pedestal."""

    def render(s: _Scene) -> None:
        amp = _bad_amp(s)
        main(s, amp)
        for effect in _AMP_EFFECTS:
            if effect is not main and s.rng.random() < 0.3:
                effect(s, amp)
        if s.rng.random() < 0.5:
            _pedestals(s, amp)

    return render


# --- bad pixels, columns, traps (-1) ----------------------------------------------------------


def _column_rows(s: _Scene) -> np.ndarray:
    """A defect's row pattern: all rows, not the fiber profile, with some row-to-row scatter."""
    return np.abs(s.rng.normal(1.0, s.rng.uniform(0.05, 0.4), ROWS))


def _hot_column(s: _Scene) -> None:
    width = int(min(11, np.floor(_loguniform(s.rng, 1, 12))))
    left = s.centre - width / 2 + s.rng.uniform(-1, 1)
    cols = np.clip(np.minimum(_COLS + 1 - left, left + width - _COLS), 0, 1)
    s.add(s.pattern(_column_rows(s), cols, s.pick(s.rng.integers(1, 3))), max(width / 2, 0.8))


def _flat_blip(s: _Scene) -> None:
    """An over-corrected pixel-flat dip: a narrow positive blip with negative flanks."""
    width = s.rng.uniform(0.4, 1.2)
    cols = s.gauss(width) - s.rng.uniform(0, 0.5) * (
        s.gauss(width, -2 * width - 0.5) + s.gauss(width, 2 * width + 0.5)
    )
    rows = s.rng.normal(1.0, 0.6, ROWS)
    s.add(s.pattern(rows, cols, s.pick(s.rng.integers(1, 4))), max(width, 0.8))


def _charge_trap(s: _Scene) -> None:
    """A trap: charge lost on one side of a pixel and released as a trail on the other."""
    direction = s.rng.choice([-1, 1])
    start = TRACE_ROW - direction * s.rng.uniform(0.3, 1.5)  # the trail crosses the trace
    distance = (_DY + TRACE_ROW - start) * direction
    rows = np.where(distance > 0, np.exp(-distance / s.rng.uniform(1.5, 5)), -s.rng.uniform(0, 0.5))
    cols = s.gauss(s.rng.uniform(0.4, 1.0), s.rng.uniform(-0.7, 0.7))
    s.add(s.pattern(rows, cols, s.pick(s.rng.integers(1, 4))), 0.8)


def _masked_centre(s: _Scene) -> None:
    """Zeros at the line centre for the whole detection with positive shoulders beside them."""
    half = s.rng.integers(0, 3)
    left, right = round(s.centre) - half, round(s.centre) + half + 1
    s.sum_mask[:, left:right] = True
    gap = half + s.rng.uniform(0.5, 1.5)
    cols = s.gauss(0.7, -gap) + s.rng.uniform(0.3, 1) * s.gauss(0.7, gap)
    rows = s.rng.uniform(0.3, 1.0) + s.wings
    s.add(s.pattern(rows, cols, np.ones(_FIBERS)), gap + 0.5)


# --- cosmic rays, sky residuals, continua, noise (0-2) ---------------------------------------


def _cosmic_ray(s: _Scene) -> None:
    """A 1-3 px spike or short track in one fiber of one exposure, blind to the fiber profile."""
    fiber = s.pick(1) if s.rng.random() < 0.75 else np.eye(_FIBERS)[_REST]
    cube = np.zeros((_FIBERS, ROWS, PRODUCT_COLUMNS))
    row, col = int(np.clip(s.rng.normal(TRACE_ROW, 1.5), 0, 8)), round(s.centre)
    step = s.rng.integers(-1, 2, 2)
    for _ in range(s.rng.integers(1, 4)):
        cube[fiber > 0, row % ROWS, col % PRODUCT_COLUMNS] = s.rng.uniform(0.3, 1.0)
        row, col = row + step[0], col + step[1]
    s.add(cube, 0.8)


def _sky_residual(s: _Scene) -> None:
    """A residual at a fixed sky wavelength that fills all rows; p-Cygni in the 5200 A window."""
    width = s.rng.uniform(0.9, 2.5)
    cols = s.gauss(width)
    if abs(s.lam[PRODUCT_LINE_COLUMN] - 5199.5) < 10:
        cols -= s.rng.uniform(0.5, 1.0) * s.gauss(width, s.rng.choice([-1, 1]) * 2 * width)
    elif s.rng.random() < 0.4:
        cols -= s.rng.uniform(0.1, 0.4) * (s.gauss(width, -2 * width) + s.gauss(width, 2 * width))
    rows = s.rng.uniform(0.6, 1.0) + s.rng.uniform(0, 0.4) * s.wings
    fibers = np.clip(s.rng.normal(1, 0.25, _FIBERS), 0.2, None) * s.sky[:, PRODUCT_LINE_COLUMN]
    s.add(s.pattern(rows, cols, fibers), width)


def _star_continuum(s: _Scene, level_range: tuple[float, float], spectrum: np.ndarray) -> None:
    """A continuum point source whose im_sum trace is ``level_range`` noise units per pixel."""
    cube = s.source(spectrum * (s.lam / s.lam[PRODUCT_LINE_COLUMN]) ** s.rng.uniform(-3, 2))
    level = s.rng.uniform(*level_range) * s.noise_level()
    s.signal += level / s.to_sum(cube)[TRACE_ROW, PRODUCT_LINE_COLUMN] * cube


def _absorption_peak(s: _Scene) -> None:
    """A star whose two absorption lines leave a false peak between them at the detection."""
    spectrum = np.ones(PRODUCT_COLUMNS)
    for side in (-1, 1):
        where = side * s.rng.uniform(2.5, 8)
        spectrum -= s.rng.uniform(0.3, 0.7) * s.gauss(s.rng.uniform(1.2, 2.5), where)
    _star_continuum(s, (1, 8), spectrum)


def _continuum_bump(s: _Scene) -> None:
    """A continuum with a broad gentle hump at the detection: the 'continuum like' cluster."""
    spectrum = 1 + s.rng.uniform(0.1, 0.5) * s.gauss(s.rng.uniform(3, 10))
    _star_continuum(s, (0.5, 4), spectrum)


def _lumps(s: _Scene, fibers: np.ndarray) -> np.ndarray:
    """Scattered pixels around the detection, each in a fiber drawn with odds ``fibers``.

    A noise peak of a 1D extraction: 6-30 pixels of a few sigma each near the line column, lit at
    random across the rows, so there is a peak in wavelength but no coherent 2D shape.
    """
    lit = s.rng.integers(6, 31)
    rows = np.clip(np.round(s.rng.normal(TRACE_ROW, 1.8, lit)), 0, ROWS - 1).astype(int)
    cols = np.round(s.centre + s.rng.normal(0, 1.5, lit)).astype(int)
    owner = s.rng.choice(_FIBERS, lit, p=fibers)
    cube = np.zeros((_FIBERS, ROWS, PRODUCT_COLUMNS))
    np.add.at(cube, (owner, rows, cols), s.rng.uniform(0.2, 1.0, lit))
    return cube / s.weight[:, None, None]


def _excursion(s: _Scene, sn: float | None = None) -> None:
    """A noise excursion: scattered pixels near the detection, spread over the fibers."""
    s.add(_lumps(s, s.weight), 1.2, sn)


def _noisy_fiber(s: _Scene) -> None:
    """One top fiber far noisier than the rest, its excursion making the detection."""
    fiber = s.pick(1)
    s.gain[fiber.astype(bool)] *= s.rng.uniform(2, 5)
    s.add(_lumps(s, fiber), 1.2)


def _correlated_noise(s: _Scene) -> None:
    """Noise correlated over several columns, with a shapeless blob of it at the detection."""
    s.smooth = int(s.rng.integers(3, 7))
    cube = np.zeros((_FIBERS, ROWS, PRODUCT_COLUMNS))
    rows = np.arange(ROWS, dtype=float)
    for fiber in s.rng.choice(_FIBERS, s.rng.integers(2, 5), p=s.weight):
        blob = _gauss(rows, TRACE_ROW + s.rng.normal(0, 1.5), s.rng.uniform(0.6, 1.5))[:, None]
        blob = blob * s.gauss(s.rng.uniform(0.8, 2.0), s.rng.uniform(-3, 3))[None, :]
        cube[fiber] += s.rng.uniform(0.3, 1.0) * blob / s.weight[fiber]
    s.add(cube, 1.5)


def _off_trace(s: _Scene) -> None:
    """A smooth blob that is not a fiber's line: off the trace, or narrower than the instrument."""
    if s.rng.random() < 0.6:
        rows = _profile(_DY - s.rng.choice([-1, 1]) * s.rng.uniform(1.5, 3.0))
        width = _width(s, s.rng.uniform(0, 3))
    else:
        rows, width = s.own, s.rng.uniform(0.35, 0.8)
    s.add(s.pattern(rows, s.gauss(width), s.light / s.light.max()), width)


# --- artifacts the brief does not name (c_new_*) ----------------------------------------------


def _meteor_trail(s: _Scene) -> None:
    """A meteor crossing one exposure: its atmospheric emission lines, unshifted, in every fiber
    of that exposure at a level that ignores the source's PSF, on a faint continuum."""
    exposure = s.exposure[:, s.rng.integers(0, _EXPOSURES)] * s.rng.uniform(0.8, 1.2, _FIBERS)
    offsets = (_METEOR_LINES_A - s.lam[PRODUCT_LINE_COLUMN]) / ANGSTROM_PER_PIXEL
    width = s.inst / ANGSTROM_PER_PIXEL
    spectrum = sum(
        strength * _gauss(_COLS, PRODUCT_LINE_COLUMN + offset, width)
        for offset, strength in zip(offsets, _METEOR_STRENGTH, strict=True)
        if abs(offset) < 60
    )
    here = spectrum[PRODUCT_LINE_COLUMN] + 0.05
    cols = spectrum / here + s.rng.uniform(0, 0.1)
    s.add(s.pattern(s.own, cols, exposure), width)


def _persistence(s: _Scene) -> None:
    """The ghost of an earlier saturated exposure: a flat-topped blob off the fiber's profile, in
    one exposure only and at the same level in each of its fibers."""
    exposure = s.exposure[:, s.rng.integers(0, _EXPOSURES)]
    half = s.rng.uniform(0.8, 2.5)
    rows = 1 / (1 + np.exp((np.abs(_DY - s.rng.uniform(-2, 2)) - half) / 0.35))
    width = s.rng.uniform(1.5, 4.0)
    s.add(s.pattern(rows, s.gauss(width), exposure), width)


def _saturation_bleed(s: _Scene) -> None:
    """A saturated star on a neighbouring fiber: its stripe at the cutout's edge, charge bleeding
    across the rows at one wavelength, and the saturated core masked."""
    fibers = s.pick(s.rng.integers(1, 3))
    side = s.rng.choice([-1, 1])
    stripe = _profile(_DY - side * s.rng.uniform(7.5, 9.0))
    level = s.rng.uniform(5, 30) * s.fiber_noise()[:, None, None]
    s.signal += level * s.pattern(stripe, np.ones(PRODUCT_COLUMNS), fibers)
    width = s.rng.uniform(0.6, 1.8)
    ramp = np.exp(-(TRACE_ROW - side * _DY) / s.rng.uniform(2, 6))
    s.add(s.pattern(ramp, s.gauss(width), fibers), width)
    edge = slice(0, s.rng.integers(1, 3)) if side < 0 else slice(s.rng.integers(7, 9), ROWS)
    core = slice(round(s.centre - width), round(s.centre + width) + 1)
    s.fiber_mask[fibers.astype(bool), edge, core] = True


def _ringing(s: _Scene) -> None:
    """Amplifier ringing after a saturated pixel: a decaying oscillation along the readout, the
    same in every row and every fiber of the amplifier."""
    period = s.rng.uniform(3, 8)
    start = s.centre - period * s.rng.integers(1, 4)
    x = _COLS - start
    cols = np.where(x >= 0, np.exp(-x / s.rng.uniform(5, 25)) * np.cos(2 * np.pi * x / period), 0)
    amp = np.append(np.ones(TOP_FIBERS), s.rng.uniform(0.5, 1.0))
    s.add(s.pattern(np.ones(ROWS), cols, amp), period / 4)
    spike = s.pick(1).astype(bool)
    level = s.rng.uniform(10, 40) * s.fiber_noise()[spike, None]
    s.signal[spike, TRACE_ROW - 1 : TRACE_ROW + 2, round(start)] += level


# --- families ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Family:
    note: str
    render: Callable[[_Scene], None]
    wave: str = "any"  # how the detection's wavelength is drawn, see _draw_wave
    extended: bool = False
    faint: bool = False  # S/N in the hard 4.8-5.6 regime whatever the class


# fmt: off
_FAMILY_SPECS: dict[str, _Family] = {
    "c_line_narrow": _Family("narrow real line (intrinsic sigma 0-3 A), sometimes faint continuum",
                             _narrow_line, "real"),
    "c_line_lae_asym": _Family("asymmetric Ly-alpha: sharp blue edge, red tail, blue bump, IGM "
                               "dimmed continuum", _asymmetric_line, "real"),
    "c_line_broad": _Family("broad AGN-like line, intrinsic sigma 6-14 A", _broad_line, "real"),
    "c_line_continuum": _Family("line on a clear continuum stripe ([OII]/bright LAE), EW 6-120 A",
                                _line_on_continuum, "real"),
    "c_line_masked": _Family("real line partly masked: whole detection columns or a few fibers",
                             _masked_line, "real"),
    "c_line_near_sky": _Family("real line beside a sky line with its all-row residual",
                               _line_near_sky, "near_sky"),
    "c_line_faint": _Family("faint, possibly extended line at S/N 4.8-5.6", _faint_line, "real",
                            extended=True, faint=True),
    "c_line_oiii_pair": _Family("[OIII] 5007/4959 pair at low redshift, both in the window",
                                _line_pair, "oiii"),
    "c_badamp_wave": _Family("bad amplifier: periodic wiggles along wavelength, rms 1.5-3x",
                             _amp_family(_wiggles)),
    "c_badamp_dead": _Family("bad amplifier: large zeroed areas, pedestals and steps",
                             _amp_family(_dead_blocks)),
    "c_badamp_stripes": _Family("bad amplifier: false continua in random rows, twin top fibers",
                                _amp_family(_false_continua)),
    "c_hot_column": _Family("hot/bad CCD column 1-11 px wide across all rows in 1-2 fibers",
                            _hot_column),
    "c_flat_blip": _Family("over-corrected pixel-flat dip: narrow positive blip, negative flanks",
                           _flat_blip),
    "c_charge_trap": _Family("charge trap: deficit on one side, decaying trail across rows",
                             _charge_trap),
    "c_masked_centre": _Family("zeros at the line centre with positive shoulders", _masked_centre),
    "c_cosmic_ray": _Family("unmasked 1-3 px cosmic ray in one fiber, not the fiber profile",
                            _cosmic_ray),
    "c_sky_residual": _Family("sky-subtraction residual at 3534-3556, 5194-5205 (p-Cygni) or "
                              "5456-5466 A filling all rows", _sky_residual, "sky"),
    "c_absorption_peak": _Family("stellar continuum with a false peak between two absorptions",
                                 _absorption_peak, "absorption"),
    "c_continuum_bump": _Family("continuum stripe with a broad gentle hump", _continuum_bump),
    "c_noise_excursion": _Family("noise excursion: 6-30 scattered pixels, no 2D shape",
                                 _excursion),
    "c_noisy_fiber": _Family("one top fiber 2-5x noisier than the rest", _noisy_fiber),
    "c_correlated_noise": _Family("noise correlated along wavelength with a shapeless blob",
                                  _correlated_noise),
    "c_blue_edge": _Family("excursion below 3540 A where the throughput is poorest", _excursion,
                           "blue"),
    "c_off_trace": _Family("smooth blob off the trace or narrower than the instrument", _off_trace),
    "c_new_meteor_trail": _Family("meteor in one exposure: unshifted atmospheric lines at a "
                                  "PSF-blind level", _meteor_trail, "meteor"),
    "c_new_persistence": _Family("persistence ghost: flat-topped off-profile blob in one exposure",
                                 _persistence),
    "c_new_saturation_bleed": _Family("saturated neighbour star: edge stripe, bleed across rows, "
                                      "masked core", _saturation_bleed),
    "c_new_ringing": _Family("amplifier ringing: decaying oscillation in all rows after a spike",
                             _ringing),
}
# fmt: on

# fmt: off
FAMILY_SHARES: dict[int, dict[str, float]] = {
    -2: {"c_badamp_wave": 0.36, "c_badamp_dead": 0.30, "c_badamp_stripes": 0.31,
         "c_new_ringing": 0.03},
    -1: {"c_hot_column": 0.30, "c_flat_blip": 0.18, "c_charge_trap": 0.15, "c_masked_centre": 0.15,
         "c_new_persistence": 0.10, "c_new_saturation_bleed": 0.12},
    0: {"c_noise_excursion": 0.22, "c_noisy_fiber": 0.12, "c_correlated_noise": 0.12,
        "c_cosmic_ray": 0.16, "c_sky_residual": 0.12, "c_absorption_peak": 0.08,
        "c_continuum_bump": 0.08, "c_blue_edge": 0.06, "c_new_meteor_trail": 0.04},
    1: {"c_noise_excursion": 0.20, "c_noisy_fiber": 0.10, "c_correlated_noise": 0.10,
        "c_cosmic_ray": 0.12, "c_sky_residual": 0.14, "c_absorption_peak": 0.10,
        "c_continuum_bump": 0.10, "c_blue_edge": 0.04, "c_off_trace": 0.10},
    2: {"c_noise_excursion": 0.20, "c_correlated_noise": 0.06, "c_cosmic_ray": 0.06,
        "c_sky_residual": 0.16, "c_absorption_peak": 0.14, "c_continuum_bump": 0.16,
        "c_off_trace": 0.22},
    3: {"c_line_narrow": 0.20, "c_line_lae_asym": 0.12, "c_line_broad": 0.10,
        "c_line_continuum": 0.08, "c_line_masked": 0.12, "c_line_near_sky": 0.12,
        "c_line_faint": 0.26},
    4: {"c_line_narrow": 0.28, "c_line_lae_asym": 0.20, "c_line_broad": 0.08,
        "c_line_continuum": 0.12, "c_line_masked": 0.08, "c_line_near_sky": 0.08,
        "c_line_faint": 0.12, "c_line_oiii_pair": 0.04},
    5: {"c_line_narrow": 0.32, "c_line_lae_asym": 0.26, "c_line_broad": 0.08,
        "c_line_continuum": 0.17, "c_line_masked": 0.06, "c_line_near_sky": 0.06,
        "c_line_oiii_pair": 0.05},
}
# fmt: on
"""Family shares within each visual class."""

FAMILIES: dict[str, tuple[int, ...]] = {
    name: tuple(c for c in VISUAL_CLASSES if name in FAMILY_SHARES[c]) for name in _FAMILY_SPECS
}
FAMILY_NOTES: dict[str, str] = {name: spec.note for name, spec in _FAMILY_SPECS.items()}

# fmt: off
_SN_EXCESS: dict[int, tuple[float, float]] = {
    -2: (0.9, 1.0), -1: (1.5, 0.9), 0: (0.4, 0.9), 1: (0.45, 0.8), 2: (0.6, 0.8),
    3: (0.55, 0.7), 4: (1.8, 0.7), 5: (4.0, 0.75),
}
# fmt: on
"""Per class, the median and log-sigma of S/N - 4.8: class 3 and the fakes crowd the hard
4.8-5.5 regime, class 5 is mostly well above it."""

_MIX_NAMES = {c: tuple(mix) for c, mix in FAMILY_SHARES.items()}
_MIX_CUMULATIVE = {
    c: np.cumsum(list(mix.values())) / sum(mix.values()) for c, mix in FAMILY_SHARES.items()
}


def _draw_wave(rng: np.random.Generator, kind: str) -> float:
    """The detection's observed wavelength for a family's kind of source."""
    if kind == "real":
        if rng.random() < 0.4:
            return float(np.clip(rng.normal(4000, 300), 3540, WAVE_RANGE_A[1]))
        return rng.uniform(3540, WAVE_RANGE_A[1])
    if kind == "near_sky":
        line = rng.choice(_SKY_LINES_A)
        return float(np.clip(line + rng.choice([-1, 1]) * rng.uniform(8, 60), 3540, 5500))
    if kind == "sky":
        windows = np.array(SKY_RESIDUAL_WINDOWS_A)
        low, high = windows[rng.choice(len(windows), p=[0.45, 0.3, 0.25])]
        return rng.uniform(low, high)
    if kind == "absorption" and rng.random() < 0.8:
        return rng.uniform(*_ABSORPTION_WINDOWS_A[rng.integers(0, 2)])
    if kind == "oiii":
        return rng.uniform(_OIII_A[0], 5480)
    if kind == "blue":
        return rng.uniform(WAVE_RANGE_A[0], 3540)
    if kind == "meteor":
        usable = _METEOR_LINES_A[WAVE_RANGE_A[0] < _METEOR_LINES_A]
        return float(rng.choice(usable) + rng.normal(0, 0.3))
    return rng.uniform(*WAVE_RANGE_A)


def _draw_sn(rng: np.random.Generator, vis_class: int, faint: bool) -> float:
    if faint:
        return rng.uniform(SN_FLOOR, 5.6)
    median, spread = _SN_EXCESS[vis_class]
    return float(min(SN_FLOOR + median * np.exp(rng.normal(0, spread)), SN_CAP))


@dataclass(frozen=True)
class Detection:
    """One rendered detection (the fields of one row of a :class:`SimulatedSet`)."""

    family: str
    sn: float
    wave: float
    im_wave: np.ndarray
    im_sum: np.ndarray
    im_array: np.ndarray


def render_detection(seed: int, index: int, vis_class: int) -> Detection:
    """Detection ``index`` of a set drawn with ``seed``: a function of these three only."""
    rng = np.random.default_rng([_SALT, seed, index, vis_class + 2])
    names = _MIX_NAMES[vis_class]
    pick = np.searchsorted(_MIX_CUMULATIVE[vis_class], rng.random(), side="right")
    name = names[min(int(pick), len(names) - 1)]
    spec = _FAMILY_SPECS[name]
    sn = _draw_sn(rng, vis_class, spec.faint)
    wave = _draw_wave(rng, spec.wave)
    scene = _make_scene(rng, sn, wave, spec.extended)
    spec.render(scene)
    im_sum, fibers = scene.render()
    return Detection(
        name,
        sn,
        wave,
        scene.lam.astype(np.float32),
        im_sum.astype(np.float32),
        fibers.astype(np.float32),
    )


def _check(class_counts: dict[int, int], seed: int) -> None:
    unknown = set(class_counts) - set(VISUAL_CLASSES)
    if unknown:
        raise ValueError(f"unknown visual classes {sorted(unknown)} (allowed {VISUAL_CLASSES})")
    negative = {c: n for c, n in class_counts.items() if n < 0}
    if negative:
        raise ValueError(f"class counts must not be negative, got {negative}")
    if seed < 0:
        raise ValueError(f"seed must not be negative, got {seed}")


def simulate(
    class_counts: dict[int, int],
    seed: int,
    *,
    first_detectid: int = 3_000_500_000,
    with_fibers: bool = False,
    progress: bool = False,
) -> SimulatedSet:
    """Exactly ``class_counts`` detections in an order shuffled by ``seed``."""
    _check(class_counts, seed)
    classes = np.repeat(
        np.array(sorted(class_counts), dtype=np.int8),
        [class_counts[c] for c in sorted(class_counts)],
    )
    classes = np.random.default_rng([_SALT, seed]).permutation(classes)
    n = len(classes)
    im_wave = np.empty((n, PRODUCT_COLUMNS), np.float32)
    im_sum = np.empty((n, ROWS, PRODUCT_COLUMNS), np.float32)
    im_array = np.empty((n, TOP_FIBERS, ROWS, PRODUCT_COLUMNS), np.float32) if with_fibers else None
    sn, wave = np.empty(n, np.float32), np.empty(n, np.float32)
    family = np.empty(n, dtype=f"<U{max(map(len, _FAMILY_SPECS))}")
    indices = range(n)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="simulating (C)", unit="cutout")
    for i in indices:
        d = render_detection(seed, i, int(classes[i]))
        im_wave[i], im_sum[i], sn[i], wave[i], family[i] = (
            d.im_wave,
            d.im_sum,
            d.sn,
            d.wave,
            d.family,
        )
        if im_array is not None:
            im_array[i] = d.im_array
    return SimulatedSet(
        detectid=first_detectid + np.arange(n, dtype=np.int64),
        im_wave=im_wave,
        im_sum=im_sum,
        vis_class=classes,
        sn=sn,
        wave=wave,
        family=family,
        im_array=im_array,
        meta={"simulator": SIMULATOR, "version": VERSION, "seed": seed},
    )
