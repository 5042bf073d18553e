"""Fixation gallery: where FocusNet looked, correct and wrong predictions side by side.

2D: one panel per image: numbered fixations (0 = the glance at the centre), the trajectory, and
the footprint of every ring of every glimpse (solid = fovea, dashed = wider rings; the glance
covers the whole image). Lesion boxes of the synthetic data are dotted cyan.
3D: one row per volume, three orthogonal cuts (axial, coronal, sagittal) through each saccade's
fixation in turn (the glance, always at the centre, only for glance-only models), the current
fixation's footprints drawn, the others faded.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from .common import (
    VIEWS,
    Looked,
    RunModel,
    caption,
    cut_image,
    draw_fixations,
    draw_lesions,
    new_figure,
    show_image,
)


def fixation_figure(run: RunModel, looked: Looked) -> Figure:
    """Gallery of every image in `looked` (choose them with common.balanced_examples)."""
    run.require_focusnet("a fixation gallery")
    groups = [("correct", np.flatnonzero(looked.correct)), ("wrong", np.flatnonzero(~looked.correct))]
    groups = [(name, rows) for name, rows in groups if len(rows)]
    if run.spatial_dims == 2:
        return _gallery_2d(run, looked, groups)
    return _gallery_3d(run, looked, groups)


def _gallery_2d(run: RunModel, looked: Looked, groups: list[tuple[str, np.ndarray]]) -> Figure:
    cols = min(4, math.ceil(math.sqrt(max(len(rows) for _, rows in groups))))
    n_rows = max(math.ceil(len(rows) / cols) for _, rows in groups)
    fig = new_figure(2.3 * cols * len(groups) + 0.3, 2.6 * n_rows + 0.5)
    subfigs = np.atleast_1d(fig.subfigures(1, len(groups), wspace=0.04))
    for sub, (name, rows) in zip(subfigs, groups):
        sub.suptitle(f"{name} ({len(rows)})", fontsize=11, fontweight="bold")
        axes = np.atleast_1d(sub.subplots(n_rows, cols, squeeze=False)).ravel()
        for ax, i in zip(axes, rows):
            _panel(ax, run, looked, i, VIEWS[2][0], None)
            ax.set_title(f"#{looked.index[i]}  {caption(run, looked.labels[i], looked.probs[i])}", fontsize=7)  # the split index, as --indices takes
        for ax in axes[len(rows) :]:
            ax.set_axis_off()
    _legend(fig, looked)
    return fig


def _gallery_3d(run: RunModel, looked: Looked, groups: list[tuple[str, np.ndarray]]) -> Figure:
    total = looked.fixations.shape[1]
    steps = list(range(1, total)) if total > 1 else [0]  # the glance is always the centre: skip it
    cols = 3 * len(steps)
    n_rows = sum(len(rows) for _, rows in groups)
    fig = new_figure(1.55 * cols + 0.3, 1.9 * n_rows + 0.4 * len(groups) + 0.4)
    subfigs = np.atleast_1d(fig.subfigures(len(groups), 1, height_ratios=[len(rows) for _, rows in groups], hspace=0.02))
    for sub, (name, rows) in zip(subfigs, groups):
        sub.suptitle(f"{name} ({len(rows)})", fontsize=11, fontweight="bold")
        axes = sub.subplots(len(rows), cols, squeeze=False)
        for r, i in enumerate(rows):
            for j, t in enumerate(steps):
                for v, view in enumerate(VIEWS[3]):
                    ax = axes[r, 3 * j + v]
                    _panel(ax, run, looked, i, view, t)
                    ax.set_title(f"fixation {t} {view.name}", fontsize=6)
            axes[r, 0].set_ylabel(f"#{looked.index[i]}  {caption(run, looked.labels[i], looked.probs[i])}", fontsize=6)
    _legend(fig, looked)
    return fig


def _panel(ax, run: RunModel, looked: Looked, i: int, view, focus: int | None) -> None:
    """Image i (a cut through fixation `focus` in 3D) with its fixations and lesion boxes."""
    point = looked.fixations[i, focus if focus is not None else 0]
    picture = cut_image(looked.images[i], view, point)
    shape = picture.shape[1:]
    show_image(ax, picture)
    draw_lesions(ax, looked, i, view, shape, point)
    draw_fixations(ax, looked, i, view, shape, focus)


def _legend(fig: Figure, looked: Looked) -> None:
    rings = looked.boxes.shape[2]
    text = "numbers: fixation order (0 = glance at the whole image); solid box: fovea"
    text += f"; dashed: {rings - 1} wider ring(s)" if rings > 1 else ""
    text += "; dotted cyan: lesion" if looked.lesions is not None else ""
    fig.supxlabel(text, fontsize=7)
