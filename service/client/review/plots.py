"""The pictures of the review: the night's summary plots and one detection's cutouts.

Only matplotlib's object API (a fresh Figure on an Agg canvas per picture, never pyplot's global
state), so pictures can be drawn from any request thread. The summary plots and the map depend
on the night and the model alone: the app draws each once, on its first request, and keeps it.
"""

import io
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.image import imsave

from service.client.review.model import ModelReference
from service.client.review.night import Catalogue
from service.contract import COLUMNS, CROP_START
from service.domain import SKY_RESIDUAL_WINDOWS_A, TRUSTED_WAVE_RANGE_A
from service.flags import NOVEL

DPI = 100  # fixed margins below, but for the flags' long names: a constrained layout costs
# more than a night's summary can spare (a quarter of a second over the five plots)
REAL, FAKE, BAND = "#c8553d", "#2d6a9f", "#f2d49b"
MAP_PAD = 0.5  # map units around the training sample
CUTOUT_MAP = colormaps["gray"].with_extremes(bad="#d62728")  # masked pixels in red


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def decisions(catalogue: Catalogue) -> bytes:
    """How many detections each stage decided real or fake (and how many the server refused)."""
    figure = Figure(figsize=(5.2, 3.2), dpi=DPI)
    axes = figure.add_subplot()
    figure.subplots_adjust(left=0.14, right=0.98, bottom=0.1, top=0.9)
    labels = ["CNN alone", "SVM (stage 2)"]
    for offset, (decision, colour) in enumerate((("real", REAL), ("fake", FAKE))):
        counts = [
            int(np.sum((catalogue.stage == stage) & (catalogue.decision == decision)))
            for stage in ("cnn", "svm")
        ]
        bars = axes.bar(np.arange(2) + 0.38 * offset, counts, 0.36, color=colour, label=decision)
        axes.bar_label(bars, fontsize=8)
    axes.set_xticks(np.arange(2) + 0.19, labels)
    axes.set_ylabel("detections")
    axes.set_title(f"{len(catalogue)} scored, {catalogue.errors} refused by the server", fontsize=9)
    axes.legend(frameon=False)
    axes.margins(y=0.15)
    return png(figure)


def scores(catalogue: Catalogue, model: ModelReference) -> bytes:
    """Tonight's CNN scores against the model's held-out ones, and the share in each band."""
    figure = Figure(figsize=(9, 3.2), dpi=DPI)
    left, right = figure.subplots(1, 2, width_ratios=(2.2, 1))
    figure.subplots_adjust(left=0.07, right=0.99, bottom=0.15, top=0.97, wspace=0.22)
    left.axvspan(model.low, model.high, color=BAND, alpha=0.6, label="ambiguous band")
    left.hist(
        catalogue.cnn_score, bins=50, range=(0, 1), density=True, color="#777", label="tonight"
    )
    if len(model.reference_edges):
        left.stairs(
            model.reference_density,
            model.reference_edges,
            color="k",
            linewidth=1.5,
            label=model.reference_label,
        )
    left.set_yscale("log")
    left.set_xlabel("CNN score")
    left.set_ylabel("density")
    left.legend(frameon=False, fontsize=8)
    bands = {
        "discard": catalogue.cnn_score < model.low,
        "ambiguous": (catalogue.cnn_score >= model.low) & (catalogue.cnn_score < model.high),
        "keep": catalogue.cnn_score >= model.high,
    }
    place = np.arange(3)
    tonight = [float(mask.mean()) for mask in bands.values()]
    held = [model.heldout_bands.get(band, 0.0) for band in bands]
    right.bar(place - 0.2, tonight, 0.4, color="#777", label="tonight")
    right.bar(place + 0.2, held, 0.4, color="k", label="held-out")
    right.set_xticks(place, list(bands))
    right.set_ylabel("share")
    right.legend(frameon=False, fontsize=8)
    return png(figure)


def umap_density(catalogue: Catalogue, model: ModelReference) -> bytes:
    """Where tonight's detections fall on the model's map, as a density over its training sample."""
    figure = Figure(figsize=(6, 5), dpi=DPI)
    axes = figure.add_subplot()
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.06, top=0.94)
    axes.scatter(*model.map_coords.T, s=1, c="#bbb", linewidths=0, label="training sample")
    extent = map_extent(model)
    cells = axes.hexbin(
        *catalogue.umap.T,
        gridsize=60,
        extent=extent,
        mincnt=1,
        norm=LogNorm(),
        cmap="magma_r",
        alpha=0.85,
    )
    figure.colorbar(cells, ax=axes, label="tonight's detections per cell")
    axes.set_xlim(extent[:2])
    axes.set_ylim(extent[2:])
    axes.set_title("tonight on the model's UMAP map (grey: training sample)", fontsize=9)
    return png(figure)


def flag_shares(catalogue: Catalogue) -> bytes:
    """Share of the night flagged, by flag; `novel` should stay near 1% on familiar data."""
    figure = Figure(figsize=(6, 2.6), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    names = list(catalogue.flag_names) or ["(no flags tonight)"]
    shares = catalogue.flags.mean(axis=0) if catalogue.flag_names else np.zeros(1)
    colours = [REAL if name == NOVEL else "#777" for name in names]
    bars = axes.barh(names, shares, color=colours)
    axes.bar_label(bars, labels=[f"{share:.1%}" for share in shares], fontsize=8, padding=2)
    axes.axvline(0.01, color="k", linestyle=":", linewidth=1, label="1% (novel on familiar data)")
    axes.set_xlabel("share of scored detections")
    axes.set_xlim(0, max(0.05, float(np.max(shares)) * 1.3))
    axes.legend(frameon=False, fontsize=8, loc="lower right")
    return png(figure)


def wavelength(catalogue: Catalogue, wave: np.ndarray) -> bytes:
    """Decisions against the line wavelength: sky-residual windows show up as spikes."""
    figure = Figure(figsize=(9, 3), dpi=DPI)
    axes = figure.add_subplot()
    figure.subplots_adjust(left=0.07, right=0.99, bottom=0.16, top=0.97)
    known = np.isfinite(wave)
    if not known.any():
        axes.text(0.5, 0.5, "the file has no im_wave", ha="center", transform=axes.transAxes)
        return png(figure)
    low, high = float(np.min(wave[known])), float(np.max(wave[known]))
    bins = np.arange(np.floor(low / 4) * 4, high + 8, 4.0)  # 4 A: two pixels
    for start, end in SKY_RESIDUAL_WINDOWS_A:
        axes.axvspan(start, end, color=BAND, alpha=0.8, linewidth=0)
    # stacked steps as two filled collections: a stepfilled hist is a patch whose limits are
    # found segment by segment, a tenth of a second on a night's 500 bins
    fake = np.histogram(wave[known & (catalogue.decision == "fake")], bins)[0]
    both = fake + np.histogram(wave[known & (catalogue.decision == "real")], bins)[0]
    floor = np.zeros_like(fake)
    for bottom, top, colour, label in ((floor, fake, FAKE, "fake"), (fake, both, REAL, "real")):
        axes.fill_between(
            bins, steps(bottom), steps(top), step="post", color=colour, label=label, linewidth=0
        )
    for edge in TRUSTED_WAVE_RANGE_A:
        axes.axvline(edge, color="k", linestyle=":", linewidth=1)
    axes.set_xlabel("line wavelength (A); shaded: sky-residual windows; dotted: trusted range")
    axes.set_ylabel("detections per 4 A")
    axes.set_ylim(bottom=0)
    axes.legend(frameon=False, fontsize=8)
    return png(figure)


def steps(counts: np.ndarray) -> np.ndarray:
    """Counts per bin as values at every edge, for ``fill_between(step="post")``."""
    return np.append(counts, counts[-1])


def map_extent(model: ModelReference) -> tuple[float, float, float, float]:
    low = model.map_coords.min(axis=0) - MAP_PAD
    high = model.map_coords.max(axis=0) + MAP_PAD
    return float(low[0]), float(high[0]), float(low[1]), float(high[1])


@dataclass(frozen=True)
class MapBackdrop:
    """Where the edges of the map picture (``map_backdrop``) are, so a page can place a
    detection on it in percent."""

    extent: tuple[float, float, float, float]

    def percent(self, x: float, y: float) -> tuple[float, float]:
        """(left, top) of a map place, in percent of the picture."""
        x0, x1, y0, y1 = self.extent
        left = float(np.clip((x - x0) / (x1 - x0), 0, 1)) * 100
        top = float(np.clip((y1 - y) / (y1 - y0), 0, 1)) * 100
        return left, top


def map_backdrop(model: ModelReference) -> bytes:
    """The training sample on the map, drawn edge to edge over ``map_extent``."""
    figure = Figure(figsize=(3, 3), dpi=DPI)
    axes = figure.add_axes((0, 0, 1, 1))
    real = model.map_classes >= 3
    for chosen, colour in ((~real, FAKE), (real, REAL)):
        axes.scatter(*model.map_coords[chosen].T, s=1, c=colour, alpha=0.35, linewidths=0)
    extent = map_extent(model)
    axes.set_xlim(extent[:2])
    axes.set_ylim(extent[2:])
    axes.set_axis_off()
    return png(figure)


def cutout(image: np.ndarray, width: int | None = None) -> bytes:
    """One cutout as a small PNG in robust noise units (grey), masked pixels red.

    ``width`` = 32 shows the CNN's window (columns 34..65) of a 100-column image. The browser
    scales it up without smoothing.
    """
    if width == COLUMNS:
        image = image[:, CROP_START : CROP_START + COLUMNS]
    values = image.astype(np.float64)
    masked = values == 0
    live = values[~masked]
    centre = float(np.median(live)) if live.size else 0.0
    spread = float(np.median(np.abs(live - centre))) * 1.4826 if live.size else 1.0
    units = (values - centre) / (spread or 1.0)
    units[masked] = np.nan
    buffer = io.BytesIO()
    imsave(buffer, units, cmap=CUTOUT_MAP, vmin=-3, vmax=8, format="png", origin="lower")
    return buffer.getvalue()
