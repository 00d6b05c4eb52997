"""ROC plots as PNG files (matplotlib with the Agg backend, imported only when a plot is drawn)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edgeface.errors import UserError
from edgeface.fileio import atomic_output


@dataclass
class RocCurve:
    """One curve: a label for the legend and the ROC points from :func:`edgeface.evaluate.protocols.roc_curve`."""

    label: str
    far: np.ndarray
    tar: np.ndarray
    n_impostor: int


def check_png_path(path: str | os.PathLike) -> Path:
    """A writable .png path, checked before any long work starts."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UserError(f"the ROC plot is written as PNG: give a .png file name, not {path.name}")
    if not path.parent.is_dir():
        raise UserError(f"folder for the ROC plot does not exist: {path.parent}")
    return path


def plot_roc(curves: Sequence[RocCurve], path: str | os.PathLike, title: str = "ROC",
             mark_far: Optional[float] = 1e-3) -> Path:
    """Write a ROC plot (TAR against FAR on a log axis) of one or more models to ``path`` (PNG).

    FAR = 0 cannot sit on a log axis: each curve starts at its resolution, one
    impostor pair (1 / number of impostor pairs).  The file is written to a
    temporary name and renamed, so a failed plot never leaves half a PNG.
    """
    path = check_png_path(path)
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display on a server or board; harmless if already Agg
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
    lowest = 1.0
    for c in curves:
        floor = 1.0 / max(c.n_impostor, 1)
        lowest = min(lowest, floor)
        far = np.maximum(np.asarray(c.far, float), floor)
        ax.step(far, c.tar, where="post", label=c.label, linewidth=1.5)
    chance = np.logspace(np.log10(lowest), 0, 50)
    ax.plot(chance, chance, color="lightgrey", linestyle="--", linewidth=1, label="chance")
    if mark_far and mark_far >= lowest:
        ax.axvline(mark_far, color="grey", linestyle=":", linewidth=1, label=f"FAR = {mark_far:g}")
    ax.set_xscale("log")
    ax.set_xlim(lowest, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate (FAR)")
    ax.set_ylabel("true accept rate (TAR)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    try:
        with atomic_output(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path
