"""M/P/K pathway maps and gate weights.

`pathway_figure`: per image, for the glance and the first saccade, the glimpse the encoder saw
(fovea) and each pathway's response (channel-mean of its rectified, cross-normalised map; 3D: the
central slice), titled with that step's gate weight. `gate_class_figure`: the mean gate of each
pathway per true class, for the glance and for the saccades.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from ..models.focusnet import FocusNet
from ..tasks import MULTI_LABEL
from .common import Looked, RunModel, centre_slice, new_figure, show_image

PATHWAY_NAMES = {"m": "M (magno)", "p": "P (parvo)", "k": "K (konio)"}


def glimpse_at(model: FocusNet, x: torch.Tensor, fixations: torch.Tensor, half_widths: torch.Tensor, step: int) -> torch.Tensor:
    """The glimpse of `step` as the model took it (the glance sensor at step 0, the fovea for this
    image size after): x (B, C, *S), fixations (B, T+1, d), half_widths (B, T+1) -> (B, R*C, *G),
    fovea channels first. Also selects the step's norm view."""
    return model.glimpse_at(x, fixations[:, step], half_widths[:, step], step)


@torch.no_grad()
def step_maps(run: RunModel, looked: Looked, step: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """-> fovea of the glimpse (B, C, *G) in [0, 1], {pathway: channel-mean map (B, *G/2)}."""
    model = run.require_focusnet("pathway maps")
    fix, hw = (torch.as_tensor(a, device=run.device) for a in (looked.fixations, looked.half_widths))
    glimpse = glimpse_at(model, looked.x.to(run.device), fix, hw, step)
    maps = model.encoder.pathway_maps(glimpse)
    fovea = run.display(glimpse[:, : model.config.in_channels])
    return fovea, {p: m.mean(dim=1).float().cpu().numpy() for p, m in maps.items()}


def pathway_figure(run: RunModel, looked: Looked) -> Figure:
    """Rows: each image at the glance and the first saccade; columns: glimpse, then M, P, K."""
    model = run.require_focusnet("pathway maps")
    steps = [0] + ([1] if model.config.num_saccades else [])
    names = model.encoder.pathways
    per_step = {t: step_maps(run, looked, t) for t in steps}
    rows = [(i, t) for i in range(len(looked)) for t in steps]
    fig = new_figure(1.7 * (1 + len(names)) + 0.2, 1.8 * len(rows) + 0.3)
    axes = fig.subplots(len(rows), 1 + len(names), squeeze=False)
    for r, (i, t) in enumerate(rows):
        fovea, maps = per_step[t]
        show_image(axes[r, 0], centre_slice_image(fovea[i]))
        axes[r, 0].set_title(f"image {looked.index[i]}: " + ("glance" if t == 0 else f"fixation {t}"), fontsize=7)
        for c, p in enumerate(names, start=1):
            m = centre_slice(maps[p][i])
            axes[r, c].imshow(m / (m.max() + 1e-12), cmap="magma", vmin=0, vmax=1, interpolation="nearest")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            axes[r, c].set_title(f"{PATHWAY_NAMES[p]}  gate {looked.gates[i, t, c - 1]:.2f}", fontsize=7)
    fig.suptitle("pathway responses (channel mean, each scaled to its maximum) and gate weights", fontsize=9)
    return fig


def centre_slice_image(image: np.ndarray) -> np.ndarray:
    """(C, *G) -> (C, rows, cols): the central depth slice of a volume, a 2D image unchanged."""
    return image[:, image.shape[1] // 2] if image.ndim == 4 else image


def mean_gates_per_class(run: RunModel, looked: Looked) -> tuple[list[str], np.ndarray]:
    """-> class names (K',), mean gates (K', T+1, P) over the images of each true class (multi-label:
    images carrying that label, and "(no label)" for those carrying none, as most ChestMNIST
    images). Classes without images are left out."""
    names, means = [], []
    groups = [(run.class_name(c, 16), looked.labels[:, c] == 1 if run.task == MULTI_LABEL else looked.labels[:, 0] == c) for c in range(looked.probs.shape[1])]
    if run.task == MULTI_LABEL:
        groups.append(("(no label)", looked.labels.sum(axis=1) == 0))
    for name, rows in groups:
        if rows.any():
            names.append(name)
            means.append(looked.gates[rows].mean(axis=0))
    return names, np.stack(means)


def gate_class_figure(run: RunModel, looked: Looked) -> Figure:
    """Grouped bars: mean gate weight of each pathway per class, glance and saccades apart."""
    model = run.require_focusnet("gate weights")
    names, means = mean_gates_per_class(run, looked)  # (K', T+1, P)
    parts = [("glance", means[:, 0])] + ([("saccades (mean)", means[:, 1:].mean(axis=1))] if means.shape[1] > 1 else [])
    fig = new_figure(max(4.0, 0.55 * len(names) * len(parts) + 2.0), 3.2)
    axes = fig.subplots(1, len(parts), squeeze=False, sharey=True)[0]
    paths = model.encoder.pathways
    width = 0.8 / len(paths)
    for ax, (title, values) in zip(axes, parts):
        pos = np.arange(len(names))
        for j, p in enumerate(paths):
            ax.bar(pos + (j - (len(paths) - 1) / 2) * width, values[:, j], width, label=PATHWAY_NAMES[p])
        ax.axhline(1 / len(paths), color="grey", lw=0.8, ls=":")
        ax.set_xticks(pos, names, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{title}: mean gate per class (n={len(looked)})", fontsize=8)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("gate weight")
    axes[-1].legend(fontsize=7)
    return fig
