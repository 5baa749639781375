"""Simulator of labelled HETDEX ``im_sum`` cutouts for the eight DR1 visual classes.

Each detection is drawn from the physics in the HETDEX brief: 15-30 fibers with PSF weights that
sum to 1, each with its own trace offset and cross-dispersion profile exp(-|dy|^p / (2 w^p)),
neighbouring-fiber wings 8-9 px away, sky Poisson plus read noise scaled by the blue-end
throughput, and a line that is the fiber profile times a Gaussian of instrumental plus intrinsic
width. The four highest-weight fibers are drawn pixel by pixel (the optional ``im_array``); the
rest are summed analytically. Fakes are the artifact families of the brief. The detected
component of every cutout is scaled to a drawn catalogue S/N (matched-filter S/N in the weighted
sum, columns 40..60), so "S/N" means the same thing for real lines and for artifacts.

Every nuisance parameter is drawn broadly per detection, and every detection has its own random
stream (seed, index), so a set is reproducible and any subset can be regenerated.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.contract import PRODUCT_COLUMNS, PRODUCT_LINE_COLUMN, ROWS, TRACE_ROW
from service.domain import (
    SKY_RESIDUAL_WINDOWS_A,
    TRUSTED_WAVE_RANGE_A,
    is_real_class,
)
from training.simulators.simulated_set import TOP_FIBERS, SimulatedSet

ANGSTROM_PER_PIXEL = 2.0
SNR_COLUMNS = slice(PRODUCT_LINE_COLUMN - 10, PRODUCT_LINE_COLUMN + 11)
COLS = np.arange(PRODUCT_COLUMNS, dtype=np.float64)
ROW_OFFSETS = np.arange(ROWS, dtype=np.float64) - TRACE_ROW

# Erg/s/cm2 per electron at a few wavelengths (HETDEX brief); throughput is its inverse.
_FLUX_PER_COUNT = (
    (3470.0, 1.3e-18),
    (3500.0, 1.1e-18),
    (4040.0, 2.8e-19),
    (4700.0, 1.8e-19),
    (5400.0, 1.8e-19),
    (5540.0, 1.9e-19),
)
STAR_DIP_WINDOWS_A = ((3775.0, 3785.0), (4503.0, 4513.0))


def throughput(wave: np.ndarray) -> np.ndarray:
    """Relative counts per unit flux (1 in the red): blue lines carry fewer counts."""
    waves, flux = np.array(_FLUX_PER_COUNT).T
    return flux.min() / np.exp(np.interp(wave, waves, np.log(flux)))


def gaussian(x: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - centre) / sigma) ** 2)


@dataclass
class FiberSignal:
    """A signal as the four top fibers' images plus the already weighted sum of the others."""

    top: np.ndarray  # (4, 9, 100), in each fiber's own counts
    rest: np.ndarray  # (9, 100), already multiplied by the other fibers' weights

    @classmethod
    def zeros(cls) -> "FiberSignal":
        return cls(np.zeros((TOP_FIBERS, ROWS, PRODUCT_COLUMNS)), np.zeros((ROWS, PRODUCT_COLUMNS)))

    def __add__(self, other: "FiberSignal") -> "FiberSignal":
        return FiberSignal(self.top + other.top, self.rest + other.rest)

    def __mul__(self, factor: float) -> "FiberSignal":
        return FiberSignal(self.top * factor, self.rest * factor)


class Scene:
    """Observing conditions of one detection: fibers, traces, throughput, sky and noise."""

    def __init__(self, rng: np.random.Generator, wave0: float) -> None:
        self.rng = rng
        self.wave0 = wave0
        dispersion = rng.uniform(1.96, 2.04)
        self.wave = wave0 + dispersion * (COLS - PRODUCT_LINE_COLUMN)
        n_fibers = int(rng.integers(15, 31))
        seeing_sigma = rng.uniform(1.1, 3.2) / 2.355
        radius = 3.6 * np.sqrt(rng.uniform(0.0, 1.0, n_fibers))
        radius[0] = rng.uniform(0.0, 0.7)  # some fiber always sits near the source
        psf_fraction = np.sort(np.exp(-0.5 * (radius / seeing_sigma) ** 2))[::-1]
        self.fraction = psf_fraction / psf_fraction[0]
        self.weight = psf_fraction / psf_fraction.sum()
        self.exponent = rng.uniform(2.1, 2.9)
        self.width = rng.uniform(2.1, 2.9)
        trace_shift = rng.uniform(-0.5, 0.5)
        self.offsets = trace_shift + rng.uniform(-0.45, 0.45, n_fibers)
        neighbour_gaps = rng.uniform(7.8, 9.4, size=2)
        own = self.profile(ROW_OFFSETS[None, :] - self.offsets[:, None])
        wings = sum(
            self.profile(ROW_OFFSETS[None, :] - self.offsets[:, None] - sign * gap)
            for sign, gap in zip((-1, 1), neighbour_gaps, strict=True)
        )
        self.own_profile = own  # (F, 9)
        self.sky_profile = own + wings  # sky falls into every fiber's trace, neighbours included
        self.neighbour_wings = wings
        sky_level = np.exp(rng.uniform(np.log(12.0), np.log(300.0)))
        sky_spectrum = 1.0 + rng.uniform(0.0, 0.15) * np.sin(COLS / rng.uniform(15, 60))
        for low, high in SKY_RESIDUAL_WINDOWS_A:
            inside = (self.wave >= low - 4) & (self.wave <= high + 4)
            sky_spectrum = sky_spectrum + inside * rng.uniform(1.0, 4.0)
        sky = sky_level * throughput(self.wave) * sky_spectrum  # (100,) counts per trace pixel
        fiber_sky = sky[None, :] * rng.uniform(0.85, 1.15, n_fibers)[:, None]
        read_noise = rng.uniform(2.5, 4.5)
        subtraction_excess = rng.uniform(1.0, 1.25)
        self.variance = (
            read_noise**2 + fiber_sky[:, None, :] * self.sky_profile[:, :, None]
        ) * subtraction_excess  # (F, 9, 100)
        self.noise_boost = np.ones(TOP_FIBERS)
        self.correlation = rng.uniform(0.0, 0.35)  # neighbouring columns share noise (resampling)

    def profile(self, dy: np.ndarray) -> np.ndarray:
        return np.exp(-(np.abs(dy) ** self.exponent) / (2.0 * self.width**self.exponent))

    @property
    def top_weight(self) -> np.ndarray:
        return self.weight[:TOP_FIBERS]

    def sum_sigma(self) -> np.ndarray:
        """Noise standard deviation of every im_sum pixel (9, 100)."""
        top = (self.top_weight**2 * self.noise_boost**2)[:, None, None] * self.variance[:TOP_FIBERS]
        rest = (self.weight[TOP_FIBERS:] ** 2)[:, None, None] * self.variance[TOP_FIBERS:]
        return np.sqrt(top.sum(axis=0) + rest.sum(axis=0))

    def fiber_sigma(self) -> np.ndarray:
        """Noise standard deviation of each top fiber's own image (4, 9, 100)."""
        return np.sqrt(self.variance[:TOP_FIBERS]) * self.noise_boost[:, None, None]

    def source(self, spectrum: np.ndarray, rows: np.ndarray | None = None) -> FiberSignal:
        """Light of the detected source: each fiber sees its PSF share on its own trace."""
        profile = self.own_profile if rows is None else rows
        per_fiber = self.fraction[:, None] * profile  # (F, 9)
        rest = (self.weight[TOP_FIBERS:, None] * per_fiber[TOP_FIBERS:]).sum(axis=0)
        return FiberSignal(
            per_fiber[:TOP_FIBERS, :, None] * spectrum[None, None, :],
            rest[:, None] * spectrum[None, :],
        )

    def everywhere(self, spectrum: np.ndarray, scatter: float, smooth: float = 0.0) -> FiberSignal:
        """A signal in every fiber and its neighbours (sky residuals): it fills all rows.

        ``smooth`` is the share that is flat across rows (residuals of the 2D sky model between
        the traces); the rest follows each fiber's trace and its neighbours' wings.
        """
        amplitude = 1.0 + scatter * self.rng.standard_normal(len(self.weight))
        rows = (1.0 - smooth) * self.sky_profile + smooth * self.sky_profile.max()
        per_fiber = amplitude[:, None] * rows
        rest = (self.weight[TOP_FIBERS:, None] * per_fiber[TOP_FIBERS:]).sum(axis=0)
        return FiberSignal(
            per_fiber[:TOP_FIBERS, :, None] * spectrum[None, None, :],
            rest[:, None] * spectrum[None, :],
        )

    def on_ccd(self, image: np.ndarray, fibers: np.ndarray, rest_share: float) -> FiberSignal:
        """A detector feature in the listed top fibers (and a share of the others) on one amp."""
        signal = FiberSignal.zeros()
        signal.top[fibers] = image
        signal.rest = image * rest_share * self.weight[TOP_FIBERS:].sum()
        return signal

    def combine(self, signal: FiberSignal) -> np.ndarray:
        return np.tensordot(self.top_weight, signal.top, axes=1) + signal.rest

    def snr(self, signal: FiberSignal) -> float:
        """Matched-filter S/N of a signal in the weighted sum, near the detection."""
        ratio = self.combine(signal)[:, SNR_COLUMNS] / self.sum_sigma()[:, SNR_COLUMNS]
        return float(np.sqrt(np.sum(ratio**2)))

    def noise(self) -> FiberSignal:
        """One noise draw for the top fibers and the sum of the others, correlated along columns."""
        sigma_rest = np.sqrt(
            ((self.weight[TOP_FIBERS:] ** 2)[:, None, None] * self.variance[TOP_FIBERS:]).sum(0)
        )
        white = self.rng.standard_normal((TOP_FIBERS + 1, ROWS, PRODUCT_COLUMNS))
        a = self.correlation
        smooth = white.copy()
        smooth[..., 1:] += a * white[..., :-1]
        smooth[..., :-1] += a * white[..., 1:]
        smooth /= np.sqrt(1.0 + 2.0 * a * a)
        return FiberSignal(
            smooth[:TOP_FIBERS] * self.fiber_sigma(), smooth[TOP_FIBERS] * sigma_rest
        )


@dataclass
class Draft:
    """What a family generator returns: a detected component and what scales with it."""

    family: str
    detected: FiberSignal
    attached: FiberSignal | None = None
    extra: FiberSignal | None = None  # already in counts, not rescaled (e.g. bad-amp patterns)
    mask: np.ndarray | None = None  # (9, 100) bool, pixels zeroed in im_sum and the top fibers
    identical_fibers: bool = False


@dataclass
class Detection:
    vis_class: int
    family: str
    sn: float
    wave: float
    im_wave: np.ndarray
    im_sum: np.ndarray
    im_array: np.ndarray


# ---- wavelength and S/N draws -------------------------------------------------------------


def trusted_wave(rng: np.random.Generator) -> float:
    return float(rng.uniform(*TRUSTED_WAVE_RANGE_A))


def any_wave(rng: np.random.Generator) -> float:
    return float(rng.uniform(3480.0, 5540.0))


def low_snr(rng: np.random.Generator) -> float:
    """Noise excursions: almost all just above the 4.8 catalogue cut."""
    return float(rng.uniform(4.8, 5.5) if rng.random() < 0.85 else rng.uniform(5.5, 7.0))


def log_uniform_snr(rng: np.random.Generator, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(4.8), np.log(high))))


def real_snr(rng: np.random.Generator, vis_class: int) -> float:
    """Confident classes reach high S/N; 'possibly real' lines sit near the cut."""
    if vis_class == 5:
        if rng.random() < 0.15:
            return float(rng.uniform(4.8, 5.5))
        tail = 1.0 - (5.5 / 30.0) ** 1.3  # truncated Pareto, index 1.3, on 5.5..30
        return float(5.5 * (1.0 - rng.uniform() * tail) ** (-1 / 1.3))
    if vis_class == 4:
        return float(4.8 + 3.2 * rng.uniform() ** 2)
    return float(rng.uniform(4.8, 6.2))


# ---- spectral shapes ----------------------------------------------------------------------


def line_spectrum(rng: np.random.Generator, sigma_a: float, centre: float) -> np.ndarray:
    """A Gaussian line, sometimes with the red wing of a Lyman-alpha emitter."""
    sigma = sigma_a / ANGSTROM_PER_PIXEL
    if rng.random() < 0.4:
        skew = rng.uniform(0.0, 0.5)
        sides = np.where(centre > COLS, sigma * (1 - skew / 2), sigma * (1 + skew))
        return np.exp(-0.5 * ((COLS - centre) / sides) ** 2)
    return gaussian(COLS, centre, sigma)


def line_width_a(rng: np.random.Generator, broad: bool = False) -> float:
    instrumental = rng.uniform(2.1, 2.8)
    draw = rng.random()
    if broad or draw < 0.08:
        intrinsic = rng.uniform(6.0, 14.0)
    elif draw < 0.45:
        intrinsic = rng.uniform(3.0, 6.0)
    else:
        intrinsic = rng.uniform(0.0, 3.0)
    return float(np.hypot(instrumental, intrinsic))


def line_centre(rng: np.random.Generator) -> float:
    return PRODUCT_LINE_COLUMN + float(rng.uniform(-0.6, 0.6))


def spike_image(rng: np.random.Generator, row: int, col: int) -> np.ndarray:
    """A 1-3 px cosmic-ray hit: sharp, ignoring the fiber profile."""
    image = np.zeros((ROWS, PRODUCT_COLUMNS))
    image[row, col] = 1.0
    for _ in range(int(rng.integers(0, 3))):
        dr, dc = rng.integers(-1, 2, size=2)
        r, c = np.clip(row + dr, 0, ROWS - 1), np.clip(col + dc, 0, PRODUCT_COLUMNS - 1)
        image[r, c] = max(image[r, c], rng.uniform(0.2, 1.0))
    return image


# ---- family generators --------------------------------------------------------------------


def real_line(scene: Scene, rng: np.random.Generator, variant: str) -> Draft:
    centre = line_centre(rng)
    line = scene.source(line_spectrum(rng, line_width_a(rng, broad=variant == "broad"), centre))
    draft = Draft(f"line_{variant}" if variant != "plain" else "line", line)
    if variant == "continuum" or rng.random() < 0.1:
        level = rng.uniform(0.03, 0.35)
        slope = rng.uniform(-0.5, 0.5)
        draft.attached = scene.source(level * (1 + slope * (COLS - 50) / 50))
    if variant == "masked":
        draft.mask = random_mask(rng, avoid_centre=True)
    if variant == "cosmic":
        col = int(rng.choice([rng.integers(20, 44), rng.integers(57, 80)]))
        draft.extra = cosmic_in_counts(scene, rng, int(rng.integers(0, ROWS)), col)
    if variant == "sky":
        draft.extra = sky_feature_in_counts(scene, rng)
    add_neighbour_light(scene, rng, draft)
    return draft


def random_mask(rng: np.random.Generator, avoid_centre: bool) -> np.ndarray:
    """Masked columns or pixels, the way cosmic-ray and bad-pixel masks look in im_sum."""
    mask = np.zeros((ROWS, PRODUCT_COLUMNS), dtype=bool)
    for _ in range(int(rng.integers(1, 3))):
        width = int(rng.integers(1, 4))
        offset = int(rng.integers(3, 13)) * (1 if rng.random() < 0.5 else -1)
        start = PRODUCT_LINE_COLUMN + offset if avoid_centre else PRODUCT_LINE_COLUMN - 1
        rows = slice(0, ROWS) if rng.random() < 0.6 else slice(*sorted(rng.integers(0, 10, 2)))
        mask[rows, start : start + width] = True
    return mask


def cosmic_in_counts(scene: Scene, rng: np.random.Generator, row: int, col: int) -> FiberSignal:
    fiber = int(rng.integers(0, TOP_FIBERS))
    level = rng.uniform(6.0, 40.0) * scene.fiber_sigma()[fiber].mean()
    return scene.on_ccd(spike_image(rng, row, col) * level, np.array([fiber]), 0.0)


def sky_feature_in_counts(scene: Scene, rng: np.random.Generator) -> FiberSignal:
    col = float(rng.uniform(20, 80))
    spectrum = gaussian(COLS, col, rng.uniform(0.9, 1.6)) * rng.uniform(1.0, 3.0)
    return scene.everywhere(spectrum * scene.sum_sigma().mean(), scatter=0.3)


def add_neighbour_light(scene: Scene, rng: np.random.Generator, draft: Draft) -> None:
    """Sometimes a neighbouring fiber carries a continuum source whose wing reaches the edge."""
    if rng.random() < 0.15:
        level = rng.uniform(0.5, 4.0) * scene.sum_sigma().mean()
        spectrum = np.full(PRODUCT_COLUMNS, level)
        wing = scene.source(spectrum, rows=scene.neighbour_wings * rng.uniform(0.5, 3.0))
        draft.extra = wing if draft.extra is None else draft.extra + wing


def noise_peak(scene: Scene, rng: np.random.Generator, coherence: float) -> Draft:
    """A noise excursion: a few pixels with no coherent shape, partly line-like but wrong."""
    scattered = np.zeros((ROWS, PRODUCT_COLUMNS))
    for _ in range(int(rng.integers(2, 8))):
        row, col = rng.integers(0, ROWS), PRODUCT_LINE_COLUMN + int(rng.integers(-2, 3))
        scattered[row, col] += rng.exponential(1.0)
    wrong = rng.choice(["off_trace", "narrow", "one_row", "flat_rows"])
    centre = line_centre(rng)
    if wrong == "narrow":
        shape = scene.own_profile[0][:, None] * gaussian(COLS, centre, rng.uniform(0.3, 0.7))
    elif wrong == "off_trace":
        shift = rng.uniform(1.8, 3.5) * (1 if rng.random() < 0.5 else -1)
        rows = scene.profile(ROW_OFFSETS - shift)
        shape = rows[:, None] * gaussian(COLS, centre, rng.uniform(0.8, 2.0))
    elif wrong == "one_row":
        shape = np.zeros((ROWS, PRODUCT_COLUMNS))
        shape[rng.integers(0, ROWS)] = gaussian(COLS, centre, rng.uniform(0.6, 2.0))
    else:
        shape = np.ones((ROWS, 1)) * gaussian(COLS, centre, rng.uniform(0.6, 1.8))
    unit_scattered = scene.on_ccd(scattered, np.arange(TOP_FIBERS), 1.0)
    unit_shape = scene.on_ccd(shape, np.arange(TOP_FIBERS), 1.0)
    detected = unit_scattered * ((1 - coherence) / scene.snr(unit_scattered)) + unit_shape * (
        coherence / scene.snr(unit_shape)
    )
    return Draft(f"noise_{wrong}", detected)


def cosmic_ray(scene: Scene, rng: np.random.Generator) -> Draft:
    fiber = int(rng.integers(0, TOP_FIBERS))
    row, col = int(rng.integers(0, ROWS)), PRODUCT_LINE_COLUMN + int(rng.integers(-1, 2))
    image = spike_image(rng, row, col)
    draft = Draft("cosmic_ray", scene.on_ccd(image, np.array([fiber]), 0.0))
    if rng.random() < 0.3:  # the pipeline's mask caught the pixels beside the hit, not the hit
        draft.mask = np.zeros((ROWS, PRODUCT_COLUMNS), dtype=bool)
        for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            r, c = row + dr, col + dc
            if 0 <= r < ROWS and image[r, c] == 0 and rng.random() < 0.5:
                draft.mask[r, c] = True
    return draft


def sky_residual(scene: Scene, rng: np.random.Generator, window: int) -> Draft:
    centre = line_centre(rng)
    sigma = rng.uniform(0.9, 1.8)
    spectrum = gaussian(COLS, centre, sigma)
    if window == 1 or rng.random() < 0.2:  # the p-Cygni-like residual near 5200 A
        side = 1 if rng.random() < 0.5 else -1
        spectrum = spectrum - rng.uniform(0.4, 1.0) * gaussian(
            COLS, centre + side * rng.uniform(1.5, 3.0), sigma
        )
    residual = scene.everywhere(
        spectrum, scatter=rng.uniform(0.1, 0.6), smooth=rng.uniform(0.3, 0.9)
    )
    return Draft("sky_residual", residual)


def continuum_dips(scene: Scene, rng: np.random.Generator) -> Draft:
    """A star: a continuum stripe whose false peak sits between two absorption lines."""
    depths = rng.uniform(0.2, 0.7, 2)
    left, right = rng.uniform(2.5, 6.0, 2)
    widths = rng.uniform(0.9, 2.5, 2)
    spectrum = (
        1.0
        + rng.uniform(-0.3, 0.3) * (COLS - 50) / 50
        - depths[0] * gaussian(COLS, PRODUCT_LINE_COLUMN - left, widths[0])
        - depths[1] * gaussian(COLS, PRODUCT_LINE_COLUMN + right, widths[1])
    )
    peak = scene.source(depths.mean() * gaussian(COLS, line_centre(rng), 1.5))
    return Draft("continuum_dips", peak, attached=scene.source(spectrum) + peak * -1.0)


def bad_pixel(scene: Scene, rng: np.random.Generator) -> Draft:
    """Hot or over-corrected columns and charge traps: narrow, across all rows, fixed wavelength."""
    kind = rng.choice(["hot_column", "charge_trap", "flat_blip", "masked_centre"])
    width = {
        "hot_column": rng.integers(1, 4),
        "charge_trap": rng.integers(2, 12),
        "flat_blip": rng.integers(1, 3),
        "masked_centre": rng.integers(1, 4),
    }[kind]
    start = PRODUCT_LINE_COLUMN - int(width) // 2 + int(rng.integers(-1, 2))
    columns = np.zeros(PRODUCT_COLUMNS)
    columns[start : start + int(width)] = 1.0
    if kind == "charge_trap":  # a trail that fades along rows
        rows = np.linspace(1.0, rng.uniform(0.2, 1.0), ROWS)[:: 1 if rng.random() < 0.5 else -1]
    else:
        rows = 1.0 + rng.uniform(0.0, 0.25) * rng.standard_normal(ROWS)
    mask = None
    if kind == "flat_blip":
        columns = columns - 0.4 * (np.roll(columns, 2) + np.roll(columns, -2))
    if kind == "masked_centre":  # zeros at the line centre, edges left bright by interpolation
        mask = np.zeros((ROWS, PRODUCT_COLUMNS), dtype=bool)
        mask[:, start : start + int(width)] = True
        columns = np.roll(columns, int(width)) + np.roll(columns, -int(width))
    n_fibers = int(rng.integers(1, TOP_FIBERS + 1))
    fibers = rng.choice(TOP_FIBERS, n_fibers, replace=False)
    image = rows[:, None] * columns[None, :]
    return Draft(f"bad_pixel_{kind}", scene.on_ccd(image, fibers, rng.uniform(0.0, 0.5)), mask=mask)


def bad_amp(scene: Scene, rng: np.random.Generator) -> Draft:
    """A misbehaving amplifier: raised rms, wiggles, zeroed areas, pedestals, false continua."""
    fibers = np.unique(np.r_[0, rng.choice(TOP_FIBERS, int(rng.integers(1, 4)), replace=False)])
    # Visual class -2 means a person saw the amp misbehave: at least one visible signature.
    visible = ["wiggles", "zeros", "pedestal", "continua"]
    effects = {str(rng.choice(visible))} | set(
        rng.choice([*visible, "rms", "identical"], size=int(rng.integers(1, 4)), replace=False)
    )
    if "rms" in effects:
        scene.noise_boost[fibers] = rng.uniform(1.5, 3.0)
    # Pattern levels are in units of the im_sum noise once weighted into the sum.
    sigma = scene.sum_sigma().mean() / scene.top_weight[fibers].sum()
    pattern = np.zeros((ROWS, PRODUCT_COLUMNS))
    mask = np.zeros((ROWS, PRODUCT_COLUMNS), dtype=bool)
    if "wiggles" in effects:
        period = rng.uniform(3.0, 16.0)
        phase = 2 * np.pi * (COLS - PRODUCT_LINE_COLUMN) / period
        pattern += rng.uniform(1.0, 3.0) * sigma * np.cos(phase)[None, :]
    if "pedestal" in effects:
        start = int(rng.integers(20, 60))  # the step falls inside or near the model's crop
        rows = slice(0, ROWS) if rng.random() < 0.5 else slice(0, int(rng.integers(2, 8)))
        pattern[rows, start:] += rng.choice([-1, 1]) * rng.uniform(1.0, 4.0) * sigma
    if "continua" in effects:
        for row in rng.choice(ROWS, int(rng.integers(2, 6)), replace=False):
            pattern[row] += rng.uniform(1.0, 4.0) * sigma
    if "zeros" in effects:
        for _ in range(int(rng.integers(1, 3))):
            r0, c0 = int(rng.integers(0, 5)), int(rng.integers(20, 60))  # reaches the crop
            mask[r0 : r0 + int(rng.integers(3, 10)), c0 : c0 + int(rng.integers(15, 60))] = True
    blob_rows = 1.0 + 0.5 * rng.standard_normal(ROWS)
    blob = blob_rows[:, None] * gaussian(COLS, line_centre(rng), rng.uniform(0.7, 3.0))[None, :]
    return Draft(
        "bad_amp",
        scene.on_ccd(blob, fibers, rng.uniform(0.0, 0.3)),
        extra=scene.on_ccd(pattern, fibers, 0.0),
        mask=mask,
        identical_fibers="identical" in effects,
    )


# ---- classes ------------------------------------------------------------------------------


def _choose(rng: np.random.Generator, options: dict[str, float]) -> str:
    names = list(options)
    return str(rng.choice(names, p=np.array(list(options.values())) / sum(options.values())))


REAL_VARIANTS = {
    5: {"plain": 0.70, "continuum": 0.25, "masked": 0.05},
    4: {"plain": 0.55, "continuum": 0.15, "masked": 0.10, "cosmic": 0.10, "sky": 0.10},
    3: {"plain": 0.35, "masked": 0.20, "cosmic": 0.15, "sky": 0.15, "broad": 0.15},
}
SPURIOUS_FAMILIES = {
    0: {"noise": 0.40, "cosmic_ray": 0.25, "sky_residual": 0.20, "continuum_dips": 0.15},
    1: {"noise": 0.45, "cosmic_ray": 0.20, "sky_residual": 0.15, "continuum_dips": 0.20},
    2: {"noise": 0.55, "cosmic_ray": 0.10, "sky_residual": 0.10, "continuum_dips": 0.25},
}
NOISE_COHERENCE = {0: (0.0, 0.3), 1: (0.2, 0.5), 2: (0.4, 0.7)}


def plan(rng: np.random.Generator, vis_class: int) -> tuple[float, float, Callable[[Scene], Draft]]:
    """Pick the wavelength, S/N and generator of one detection of a visual class."""
    if is_real_class(vis_class):
        variant = _choose(rng, REAL_VARIANTS[vis_class])
        return trusted_wave(rng), real_snr(rng, vis_class), lambda s: real_line(s, rng, variant)
    if vis_class == -2:
        return any_wave(rng), log_uniform_snr(rng, 20.0), lambda s: bad_amp(s, rng)
    if vis_class == -1:
        return any_wave(rng), log_uniform_snr(rng, 30.0), lambda s: bad_pixel(s, rng)
    family = _choose(rng, SPURIOUS_FAMILIES[vis_class])
    if family == "noise":
        coherence = rng.uniform(*NOISE_COHERENCE[vis_class])
        return any_wave(rng), low_snr(rng), lambda s: noise_peak(s, rng, coherence)
    if family == "cosmic_ray":
        return any_wave(rng), log_uniform_snr(rng, 30.0), lambda s: cosmic_ray(s, rng)
    if family == "sky_residual":
        window = int(rng.integers(0, len(SKY_RESIDUAL_WINDOWS_A)))
        wave = float(rng.uniform(*SKY_RESIDUAL_WINDOWS_A[window]))
        return wave, log_uniform_snr(rng, 15.0), lambda s: sky_residual(s, rng, window)
    star_windows = [*STAR_DIP_WINDOWS_A, TRUSTED_WAVE_RANGE_A]
    wave = float(rng.uniform(*star_windows[int(rng.choice(3, p=[0.5, 0.3, 0.2]))]))
    return wave, log_uniform_snr(rng, 12.0), lambda s: continuum_dips(s, rng)


def simulate_one(vis_class: int, rng: np.random.Generator) -> Detection:
    wave, sn, generate = plan(rng, vis_class)
    scene = Scene(rng, wave)
    draft = generate(scene)
    scale = sn / scene.snr(draft.detected)
    signal = draft.detected * scale
    if draft.attached is not None:
        signal = signal + draft.attached * scale
    if draft.extra is not None:
        signal = signal + draft.extra
    fibers = signal + scene.noise()
    if draft.identical_fibers:
        fibers.top[1] = fibers.top[0]
    im_sum = scene.combine(fibers)
    im_array = fibers.top
    if draft.mask is not None:
        im_sum[draft.mask] = 0.0
        im_array[:, draft.mask] = 0.0
    return Detection(
        vis_class=vis_class,
        family=draft.family,
        sn=sn,
        wave=wave,
        im_wave=scene.wave.astype(np.float32),
        im_sum=im_sum.astype(np.float32),
        im_array=im_array.astype(np.float32),
    )


# ---- sets ----


def simulate(
    class_counts: dict[int, int],
    seed: int,
    *,
    first_detectid: int = 1_000_500_000,
    with_fibers: bool = False,
    progress: bool = False,
) -> SimulatedSet:
    """Simulate a shuffled labelled set; detection i depends only on (seed, i) and its class."""
    classes = np.repeat(list(class_counts), list(class_counts.values()))
    np.random.default_rng(seed).shuffle(classes)
    indices = range(len(classes))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"simulate seed={seed}", unit="cutout")
    detections = [simulate_one(int(classes[i]), np.random.default_rng([seed, i])) for i in indices]
    return SimulatedSet(
        detectid=first_detectid + np.arange(len(classes), dtype=np.int64),
        im_wave=np.stack([d.im_wave for d in detections]),
        im_sum=np.stack([d.im_sum for d in detections]),
        vis_class=classes.astype(np.int8),
        sn=np.array([d.sn for d in detections], dtype=np.float32),
        wave=np.array([d.wave for d in detections], dtype=np.float32),
        family=np.array([d.family for d in detections]),
        im_array=np.stack([d.im_array for d in detections]) if with_fibers else None,
        meta={"simulator_seed": seed, "class_counts": {str(k): v for k, v in class_counts.items()}},
    )
