"""A gallery PNG of simulated cutouts per visual class, so a person can see that they look right."""

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from service.contract import to_canonical
from service.domain import VISUAL_CLASS_NAMES, VISUAL_CLASSES
from training.simulators.a import simulate


def write_gallery(path: Path, *, per_class: int = 8, seed: int = 7) -> Path:
    """Simulate ``per_class`` examples of every class and draw their (9, 32) model crops."""
    examples = simulate({c: per_class for c in VISUAL_CLASSES}, seed=seed)
    crops = to_canonical(examples.im_sum)
    fig = Figure(figsize=(2.0 * per_class, 1.25 * len(VISUAL_CLASSES)), layout="tight")
    axes = fig.subplots(len(VISUAL_CLASSES), per_class, squeeze=False)
    for row, vis_class in enumerate(VISUAL_CLASSES):
        chosen = np.flatnonzero(examples.vis_class == vis_class)[:per_class]
        for col, index in enumerate(chosen):
            ax = axes[row, col]
            crop = crops[index]
            limit = np.percentile(np.abs(crop), 99) or 1.0
            ax.imshow(crop, cmap="gray", vmin=-limit, vmax=limit, aspect="auto")
            ax.set_title(f"{examples.family[index]} S/N {examples.sn[index]:.1f}", fontsize=6)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(f"{vis_class}: {VISUAL_CLASS_NAMES[vis_class]}", fontsize=7)
    fig.suptitle("Simulated im_sum cutouts (9 x 32, line at column 16, trace at row 4)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
