"""A PNG of one scored detection, for an astronomer whose decision surprised them.

Left: the cutout as the CNN sees it (normalised, masked pixels in black). Right: its place on the
UMAP map of the training sample, with the SVM boundary that decides ambiguous CNN scores.

matplotlib is imported on the first render only, so scoring-only workers never pay its memory
or import time, and only its object API draws (a fresh Figure on an Agg canvas per call, never
pyplot's global state), so renders are safe in threads. The map background depends on the bundle
alone and is computed once per loaded bundle.
"""

import io
import math
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from service.bundle import ModelBundle
from service.contract import LINE_COLUMN, TRACE_ROW
from service.domain import VISUAL_CLASS_NAMES, VISUAL_CLASSES
from service.flags import NOVEL
from service.preprocess import prepare

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes

PNG = "image/png"
WIDTH, HEIGHT, DPI = 1300, 560, 100  # pixels of every PNG
# Fixed panel places (left, bottom, width, height in pixels): constrained layout would cost half
# of a warm render, and the layout never changes.
CUTOUT_BOX = (60, 215, 540, 152)  # 32 x 9 pixels at equal aspect
COLORBAR_BOX = (110, 120, 440, 14)
MAP_BOX = (680, 55, 420, 420)
GRID = 200  # SVM decisions per side of the map grid
PAD = 1.0  # map units around the training sample
GRID_CHUNK = 4096  # grid points per SVM evaluation: bounded memory
REAL_SIDE, FAKE_SIDE = "#fbe3d6", "#dde8f3"  # pale versions of the class colours' two ends


@dataclass(frozen=True)
class MapBackground:
    """What the map shows whatever the detection: training places and the SVM on a grid."""

    coords: np.ndarray  # (N, 2) training sample places
    vis_class: np.ndarray  # (N,) their visual classes
    xs: np.ndarray  # (GRID,) grid abscissae
    ys: np.ndarray  # (GRID,) grid ordinates
    decision: np.ndarray  # (GRID, GRID) SVM signed distance at (ys[i], xs[j]); > 0 means real

    @classmethod
    def compute(cls, bundle: ModelBundle) -> "MapBackground":
        coords = np.asarray(bundle.umap_map["coords"], dtype=np.float64)
        low, high = coords.min(axis=0) - PAD, coords.max(axis=0) + PAD
        xs, ys = np.linspace(low[0], high[0], GRID), np.linspace(low[1], high[1], GRID)
        return cls(
            coords=coords,
            vis_class=np.asarray(bundle.umap_map["vis_class"]),
            xs=xs,
            ys=ys,
            decision=decision_grid(bundle.svm_decision, xs, ys),
        )


def decision_grid(
    decide: Callable[[np.ndarray], np.ndarray], xs: np.ndarray, ys: np.ndarray
) -> np.ndarray:
    """``decide`` on every (x, y) of the grid, shaped (len(ys), len(xs)), in bounded chunks."""
    gx, gy = np.meshgrid(xs, ys)
    points = np.column_stack([gx.ravel(), gy.ravel()])
    values = [decide(points[i : i + GRID_CHUNK]) for i in range(0, len(points), GRID_CHUNK)]
    return np.concatenate(values).reshape(gx.shape)


_backgrounds: dict[int, MapBackground] = {}
_backgrounds_lock = threading.Lock()


def background(bundle: ModelBundle) -> MapBackground:
    """The bundle's map background, computed on its first render only.

    Bundles are unhashable dataclasses, so the cache is keyed by ``id`` and a finalizer drops
    the entry when the bundle is collected, before its id can be reused.
    """
    key = id(bundle)
    with _backgrounds_lock:
        if key not in _backgrounds:
            _backgrounds[key] = MapBackground.compute(bundle)
            weakref.finalize(bundle, _backgrounds.pop, key, None)
        return _backgrounds[key]


def render_png(bundle: ModelBundle, cutout: np.ndarray, result: dict[str, Any]) -> bytes:
    """The PNG (``WIDTH`` x ``HEIGHT``) of one canonical (9, 32) cutout and its data-plane result
    (detectid, cnn_score, umap, svm_score, decision, stage, novelty, flags)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    canvas = FigureCanvasAgg(figure)
    cutout_axes, colorbar_axes, map_axes = (
        figure.add_axes(fraction(box)) for box in (CUTOUT_BOX, COLORBAR_BOX, MAP_BOX)
    )
    model_input = prepare(cutout[None], bundle.normalization)[0]
    draw_cutout(cutout_axes, colorbar_axes, model_input, result)
    draw_map(map_axes, background(bundle), bundle, result)
    figure.text(
        1.0,
        0.0,
        f"linescore model {bundle.version}",
        ha="right",
        va="bottom",
        size=7,
        parse_math=False,
    )
    buffer = io.BytesIO()
    canvas.print_png(buffer, metadata={"Software": None})
    return buffer.getvalue()


def fraction(box: tuple[int, int, int, int]) -> tuple[float, ...]:
    left, bottom, width, height = box
    return left / WIDTH, bottom / HEIGHT, width / WIDTH, height / HEIGHT


def draw_cutout(
    axes: "Axes", colorbar_axes: "Axes", model_input: np.ndarray, result: dict[str, Any]
) -> None:
    """Channel 0 on a symmetric diverging scale (white is the cutout's median), channel 1 (the
    mask) as black pixels: what the CNN was given, not the raw counts."""
    from matplotlib import colormaps

    pixels, masked = model_input[0], model_input[1] > 0
    limit = max(3.0, float(np.abs(pixels).max()))
    image = axes.imshow(
        np.ma.masked_array(pixels, masked),
        cmap=colormaps["RdBu_r"].with_extremes(bad="black"),
        vmin=-limit,
        vmax=limit,
        origin="lower",
        interpolation="nearest",
    )
    axes.set_xticks([0, 8, LINE_COLUMN, 24, pixels.shape[1] - 1])
    axes.set_yticks([0, TRACE_ROW, pixels.shape[0] - 1])
    axes.set(
        xlabel=f"wavelength column (~2 A/px, line at {LINE_COLUMN})",
        ylabel=f"row (trace {TRACE_ROW})",
    )
    flags = ", ".join(result["flags"]) or "none"
    axes.set_title(
        f"detectid {result['detectid']}\n"
        f"CNN score {result['cnn_score']:.3f}: {result['decision'].upper()}, "
        f"decided by {result['stage']}\n{novelty_phrase(result)}; flags: {flags}",
        loc="left",
        size=11,
        parse_math=False,  # a detectid such as "$x$" is text, not TeX
    )
    colorbar = axes.figure.colorbar(image, cax=colorbar_axes, orientation="horizontal")
    colorbar.set_label(f"normalised counts (robust noise units); black: masked ({masked.sum()} px)")


def novelty_phrase(result: dict[str, Any]) -> str:
    """'novelty 0.97', with '(novel)' when the result is flagged so. Two decimals rounded down
    (float32 slack aside), so a novelty short of a threshold of 1 never reads as 1.00."""
    shown = math.floor(result["novelty"] * 100 + 1e-4) / 100
    novel = " (novel)" if NOVEL in result["flags"] else ""
    return f"novelty {shown:.2f}{novel}"


def draw_map(
    axes: "Axes", map_: MapBackground, bundle: ModelBundle, result: dict[str, Any]
) -> None:
    """Training points by visual class over the SVM's sides and boundary, and the detection."""
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    handles, boundary = draw_svm(axes, map_)
    colours = colormaps["coolwarm"].resampled(len(VISUAL_CLASSES))
    for i, vis_class in enumerate(VISUAL_CLASSES):
        label = f"{vis_class} {VISUAL_CLASS_NAMES[vis_class]}"
        inside = map_.vis_class == vis_class
        axes.scatter(*map_.coords[inside].T, s=2, color=colours(i), alpha=0.5, linewidths=0)
        handles.append(Line2D([], [], ls="", marker="o", color=colours(i), label=label))
    x, y = result["umap"]
    axes.scatter(x, y, marker="*", s=420, color="gold", edgecolors="k", linewidths=1.3, zorder=5)
    axes.annotate(
        "this detection",
        (x, y),
        xytext=(12, 12),
        textcoords="offset points",
        size=9,
        weight="bold",
        bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8},
        zorder=6,
    )
    handles.append(
        Line2D([], [], ls="", marker="*", ms=14, mfc="gold", mec="k", label="this detection")
    )
    low, high = bundle.thresholds
    consulted = "the SVM decided" if result["stage"] == "svm" else "the CNN decided alone"
    axes.set_title(
        f"UMAP map ({bundle.umap_source}) of the training sample; {boundary}\n"
        f"The SVM decides when {low:g} <= CNN score < {high:g}: here {consulted}.\n"
        f"This detection: ({x:.2f}, {y:.2f}), SVM score {result['svm_score']:+.2f}",
        loc="left",
        size=10,
        parse_math=False,
    )
    axes.set(xlabel="UMAP 1", ylabel="UMAP 2")
    axes.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)


def draw_svm(axes: "Axes", map_: MapBackground) -> tuple[list["Artist"], str]:
    """Shade the SVM's real and fake sides and draw its zero contour; return the legend handles
    and a phrase for the title (an SVM may call the whole map one class: say so)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    real_side = map_.decision > 0
    axes.pcolormesh(
        map_.xs,
        map_.ys,
        real_side,
        cmap=ListedColormap([FAKE_SIDE, REAL_SIDE]),
        vmin=0,
        vmax=1,
        shading="nearest",
    )
    if real_side.all() or not real_side.any():
        side = "real" if real_side.all() else "fake"
        colour = REAL_SIDE if real_side.all() else FAKE_SIDE
        return [Patch(color=colour, label=f"SVM: {side}")], f"the SVM says {side} everywhere"
    axes.contour(map_.xs, map_.ys, map_.decision, levels=[0.0], colors="k", linewidths=1.2)
    handles = [
        Patch(color=REAL_SIDE, label="SVM: real side"),
        Patch(color=FAKE_SIDE, label="SVM: fake side"),
        Line2D([], [], color="k", label="SVM boundary"),
    ]
    return handles, "SVM boundary in black"
