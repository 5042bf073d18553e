"""Grad-CAM (Selvaraju et al. 2017) on the glance's pathway and trunk feature maps.

The glance sees the whole image, so its feature maps are aligned with it: map cell i sits where
fovea sample i was taken, and the fovea of the glance spans the image edge to edge. For the
predicted class c (multi-label: the top-scoring label) and a map A (B, C, *g):

    weights = mean over positions of d logit_c / dA      (B, C)
    cam     = relu(sum_c weights_c A_c)                   (B, *g), upsampled to the image, scaled to max 1

The gradient runs through everything the glance influences: its own features, and the saliency
keys that choose the saccades. Shown beside the fixations, it tells whether the model looked where
its evidence was.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from ..models.focusnet import FocusNet
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
from .pathways import PATHWAY_NAMES


@contextmanager
def glance_maps(model: FocusNet):
    """Record the first (glance) call's pathway maps and trunk output: yields a dict that fills
    during the forward pass, {pathway: (B, C, *G/2), "trunk": (B, 2C, *G/4)}."""
    store: dict[str, torch.Tensor] = {}
    encoder = model.encoder
    original = encoder.pathway_maps

    def tap(glimpse: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = original(glimpse)
        for k, v in maps.items():
            store.setdefault(k, v)
        return maps

    encoder.pathway_maps = tap  # instance attribute: forward_with_gates calls self.pathway_maps
    hook = model.trunk.register_forward_hook(lambda module, inputs, output: store.setdefault("trunk", output))
    try:
        yield store
    finally:
        hook.remove()
        del encoder.pathway_maps


# Where each glance map's cells sit: cell i is centred on glance sample stride * i + offset.
# 'Same'-padded stride-2 convolutions (P, K) centre it on sample 2i, the M pathway's 2x box pool on
# 2i + 0.5; the trunk's stride-2 convolution doubles the fused map's grid, whose offset is taken as
# the mean of its pathways'. (tests/test_viz.py checks these against the receptive fields.)
PATHWAY_GEOMETRY = {"m": (2, 0.5), "p": (2, 0.0), "k": (2, 0.0)}


def map_geometry(model: FocusNet, name: str) -> tuple[int, float]:
    """(stride, offset) in glance samples of the map `name` (a pathway or "trunk")."""
    if name != "trunk":
        return PATHWAY_GEOMETRY[name]
    fused = sum(PATHWAY_GEOMETRY[p][1] for p in model.encoder.pathways) / len(model.encoder.pathways)
    return 4, fused  # trunk cell i sits on fused cell 2i, centred on glance sample 2 * 2i + fused


def to_image(cam: torch.Tensor, stride: int, offset: float, image_shape, glance_size: int) -> torch.Tensor:
    """cam (B, 1, *g) -> (B, 1, *image_shape), interpolated between cell centres at their true
    place: a plain resize would put cell i at the middle of its 2 (or 4) samples, up to 1.5 glance
    samples (pixels at 28 px) off. The glance spans the image: sample j is centred on pixel
    (j + 0.5) * n / G - 0.5 of a side of n pixels."""
    axes = []
    for n, m in zip(image_shape, cam.shape[2:]):
        samples = (torch.arange(n, dtype=torch.float32, device=cam.device) + 0.5) * glance_size / n - 0.5
        cells = (samples - offset) / stride
        axes.append(cells / max(m - 1, 1) * 2 - 1)  # align_corners=True: -1 and 1 are the first and last cell centres
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], dim=-1)  # last dim (x, y[, z])
    grid = grid.expand(cam.shape[0], *grid.shape).to(cam.dtype)
    return F.grid_sample(cam, grid, mode="bilinear", padding_mode="border", align_corners=True)


def grad_cam(run: RunModel, x: torch.Tensor, targets: np.ndarray) -> dict[str, np.ndarray]:
    """x (B, C, *S), target class per image (B,) -> {map name: cam (B, *S) in [0, 1]}."""
    model = run.require_focusnet("Grad-CAM on pathway maps")
    x = x.to(run.device)
    with torch.enable_grad(), glance_maps(model) as maps:
        logits = model(x)
        score = logits.gather(1, torch.as_tensor(targets, device=run.device)[:, None]).sum()
        names = list(maps)
        grads = torch.autograd.grad(score, [maps[k] for k in names])
    out = {}
    for name, grad in zip(names, grads):
        a = maps[name].detach()
        spatial = tuple(range(2, a.dim()))
        cam = torch.relu((grad.mean(dim=spatial, keepdim=True) * a).sum(dim=1, keepdim=True))  # (B, 1, *g)
        cam = to_image(cam, *map_geometry(model, name), x.shape[2:], model.config.glance_size)[:, 0]
        peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-12).view(-1, *[1] * (cam.dim() - 1))
        out[name] = (cam / peak).float().cpu().numpy()
    return out


def gradcam_figure(run: RunModel, looked: Looked) -> Figure:
    """Rows: images; columns: fixations, then the CAM of each pathway map and of the trunk.
    3D: the axial cut through the first saccade's fixation (the glance's for glance-only models)."""
    cams = grad_cam(run, looked.x, looked.probs.argmax(axis=1))
    names = list(cams)
    view = VIEWS[run.spatial_dims][0]
    step = min(1, looked.fixations.shape[1] - 1)
    fig = new_figure(1.9 * (1 + len(names)) + 0.2, 2.1 * len(looked) + 0.4)
    axes = fig.subplots(len(looked), 1 + len(names), squeeze=False)
    for i in range(len(looked)):
        point = looked.fixations[i, step]
        picture = cut_image(looked.images[i], view, point)
        shape = picture.shape[1:]
        for c, name in enumerate([None, *names]):
            ax = axes[i, c]
            show_image(ax, picture)
            if name is not None:
                heat = cut_image(cams[name][i][None], view, point)[0]
                ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
            draw_lesions(ax, looked, i, view, shape, point)
            draw_fixations(ax, looked, i, view, shape, step if run.spatial_dims == 3 else None)
            ax.set_title(caption(run, looked.labels[i], looked.probs[i]) if name is None else f"Grad-CAM {PATHWAY_NAMES.get(name, name)}", fontsize=7)
    where = "" if run.spatial_dims == 2 else f" (axial cut through fixation {step})"
    fig.suptitle(f"Grad-CAM of the predicted class on the glance's feature maps, with the fixations{where}", fontsize=9)
    return fig
