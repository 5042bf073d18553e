"""Shared pieces of the figures: a loaded run, the images chosen, what the model did, and drawing.

Coordinates: FocusNet reports fixations and boxes in grid_sample coordinates (-1..1, x first,
align_corners=False). Pixel i of a side of n pixels has its centre at u = (2i + 1)/n - 1, so
`to_pixel(u, n) = ((u + 1) n - 1) / 2` puts them on matplotlib's imshow grid (pixel centres at
integers). 2D and 3D share one path: a 2D image has a single view; a volume has three orthogonal
views (axial, coronal, sagittal), each a 2D cut through a chosen point.

Figures use matplotlib's object API (`matplotlib.figure.Figure`, Agg), never pyplot, so nothing
global changes and nothing needs a display.
"""

from __future__ import annotations

import base64
import io
import json
import os
from dataclasses import dataclass, replace

import numpy as np
import torch
from matplotlib import patheffects
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn

from ..data import load_run_data
from ..engine.checkpoint import load_checkpoint
from ..engine.distributed import pick_device
from ..errors import FocusNetError
from ..metrics import probabilities
from ..models.focusnet import FocusNet
from ..tasks import BINARY, MULTI_LABEL

STEP_COLOURS = ("#ffffff", "#ff3b30", "#ffcc00", "#34c759", "#0a84ff", "#bf5af2", "#ff9f0a", "#64d2ff")
LESION_COLOUR = "#00e5ff"
OUTLINE = [patheffects.withStroke(linewidth=2, foreground="black")]


# ----------------------------------------------------------------------------- the run


@dataclass
class RunModel:
    """A trained model with the description of the data it was trained on."""

    model: nn.Module
    data: dict  # checkpoint data description: flag, task, label_names, spatial_dims, mean, std, ...
    device: torch.device
    path: str

    @property
    def task(self) -> str:
        return self.data["task"]

    @property
    def spatial_dims(self) -> int:
        return int(self.data["spatial_dims"])

    @property
    def is_focusnet(self) -> bool:
        return isinstance(self.model, FocusNet)

    def class_name(self, k: int, width: int = 22) -> str:
        name = self.data.get("label_names", {}).get(str(k), str(k))
        return name if len(name) <= width else name[: width - 1] + "."

    def require_focusnet(self, what: str) -> FocusNet:
        if not self.is_focusnet:
            raise FocusNetError(f"{what} needs a FocusNet model; {self.path} holds a {type(self.model).__name__}")
        return self.model

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, *S) -> float32 model input (x/255 - mean)/std on the model's device."""
        x = images.to(self.device, torch.float32) / 255.0
        return (x - self.data["mean"]) / self.data["std"]

    def display(self, x: torch.Tensor) -> np.ndarray:
        """Model input (B, C, *S) -> float32 numpy in [0, 1] for imshow."""
        return (x.detach().float().cpu() * self.data["std"] + self.data["mean"]).clamp(0, 1).numpy()


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto", "cpu", "cuda" (checked: a clear error without a GPU), "cuda:1" or a torch.device."""
    return pick_device(device) if device in ("auto", "cpu", "cuda") else torch.device(device)


def load_run_model(model_path: str, device: str | torch.device = "cpu") -> RunModel:
    """device: "auto", "cpu", "cuda", "cuda:1" or a torch.device."""
    ck = load_checkpoint(model_path)
    device = resolve_device(device)
    return RunModel(ck.build(device), ck.data, device, ck.path)


def run_config(model_path: str) -> dict:
    """The run folder's config.json beside a checkpoint ({} when there is none)."""
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def load_split(run: RunModel, split: str = "test", data_dir: str | None = None, dataset: str | None = None):
    """The split of the data the model was trained on (`dataset` must name the same flag)."""
    d = run.data
    if dataset and dataset != d["flag"]:
        raise FocusNetError(f"{run.path} was trained on {d['flag']}, not {dataset}; pass --dataset {d['flag']} or leave it out")
    if split not in ("train", "val", "test"):
        raise FocusNetError(f"unknown split {split!r}; use train, val or test")
    return load_run_data(d, data_dir, run_config(run.path).get("train", {})).splits[split]


# ----------------------------------------------------------------------------- what the model did


@dataclass
class Looked:
    """Images and what the model did with them. N images, T saccades, K outputs, L label columns,
    d spatial dims, R rings, P pathways. Trace fields are None for models without fixations."""

    index: np.ndarray  # (N,) positions in the split
    x: torch.Tensor  # (N, C, *S) normalised model input (CPU)
    images: np.ndarray  # float32 (N, C, *S) in [0, 1] for display
    labels: np.ndarray  # int64 (N, L)
    probs: np.ndarray  # (N, K) probabilities
    correct: np.ndarray  # bool (N,) every label right
    fixations: np.ndarray | None = None  # (N, T+1, d); step 0 is the glance
    half_widths: np.ndarray | None = None  # (N, T+1)
    boxes: np.ndarray | None = None  # (N, T+1, R, 2d) [lo..., hi...]
    gates: np.ndarray | None = None  # (N, T+1, P)
    lesions: np.ndarray | None = None  # synthetic data: (N, 2d), or (N, K, 2d) with NaN rows

    def __len__(self) -> int:
        return len(self.index)

    def subset(self, rows: np.ndarray) -> Looked:
        def pick(v):
            return None if v is None else v[torch.as_tensor(rows)] if isinstance(v, torch.Tensor) else v[rows]

        return replace(self, **{k: pick(getattr(self, k)) for k in self.__dataclass_fields__})


def predicted_labels(probs: np.ndarray, task: str) -> np.ndarray:
    """(N, K) probabilities -> (N, L) predicted labels, decided as the official ACC decides them."""
    if task == MULTI_LABEL:
        return (probs > 0.5).astype(np.int64)
    if task == BINARY:
        return (probs[:, -1:] > 0.5).astype(np.int64)
    return probs.argmax(axis=1)[:, None]


@torch.no_grad()
def look(run: RunModel, split, index: np.ndarray, batch_size: int = 64) -> Looked:
    """Run the model on split images `index` (N,): probabilities, and the trace for FocusNet."""
    index = np.asarray(index, dtype=np.int64)
    xs, probs, traces = [], [], []
    for start in range(0, len(index), batch_size):
        rows = torch.as_tensor(index[start : start + batch_size])
        x = run.normalise(split.images[rows])
        if run.is_focusnet:
            trace = run.model.forward_trace(x)
            traces.append([t.float().cpu().numpy() for t in (trace.fixations, trace.half_widths, trace.boxes, trace.gates)])
            logits = trace.logits
        else:
            logits = run.model(x)
        probs.append(probabilities(logits.float(), run.task).cpu().numpy())
        xs.append(x.cpu())
    x, p = torch.cat(xs), np.concatenate(probs)
    labels = split.labels[torch.as_tensor(index)].numpy()
    fields = [np.concatenate(parts) for parts in zip(*traces)] if traces else [None] * 4
    lesions = split.boxes[torch.as_tensor(index)].numpy() if getattr(split, "boxes", None) is not None else None
    correct = (predicted_labels(p, run.task) == labels).all(axis=1)
    return Looked(index, x, run.display(x), labels, p, correct, *fields, lesions=lesions)


def random_pool(n_total: int, n: int, seed: int) -> np.ndarray:
    """n distinct random positions of 0..n_total-1, sorted (all of them when n >= n_total)."""
    if n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, n, replace=False))


def balanced_examples(looked: Looked, n: int, seed: int = 0) -> np.ndarray:
    """Rows of `looked`: up to n/2 correct and n/2 wrong predictions (filled from the other kind)."""
    rng = np.random.default_rng(seed)
    right, wrong = (rng.permutation(np.flatnonzero(looked.correct == c)) for c in (True, False))
    n_wrong = min(len(wrong), n // 2)
    n_right = min(len(right), n - n_wrong)
    n_wrong = min(len(wrong), n - n_right)
    return np.concatenate([right[:n_right], wrong[:n_wrong]])


def caption(run: RunModel, labels: np.ndarray, probs: np.ndarray) -> str:
    """Two lines: true class(es), predicted class(es) with probability. labels (L,), probs (K,)."""
    if run.task == MULTI_LABEL:
        true = ", ".join(run.class_name(k, 12) for k in np.flatnonzero(labels)) or "none"
        pred = ", ".join(f"{run.class_name(k, 12)} {probs[k]:.2f}" for k in np.flatnonzero(probs > 0.5)) or "none"
        return f"true: {true}\npred: {pred}"
    if run.task == BINARY:
        k = int(probs[-1] > 0.5)
        return f"true: {run.class_name(int(labels[0]))}\npred: {run.class_name(k)} ({probs[-1]:.2f})"
    k = int(probs.argmax())
    return f"true: {run.class_name(int(labels[0]))}\npred: {run.class_name(k)} ({probs[k]:.2f})"


# ----------------------------------------------------------------------------- views and cuts


@dataclass(frozen=True)
class View:
    """A 2D picture of a d-dimensional image: `cut` is the coordinate held fixed (None in 2D);
    the picture's horizontal and vertical axes are coordinates `h` and `v` (0 = x, 1 = y, 2 = z)."""

    name: str
    cut: int | None
    h: int
    v: int


VIEWS = {2: (View("", None, 0, 1),), 3: (View("axial", 2, 0, 1), View("coronal", 1, 0, 2), View("sagittal", 0, 1, 2))}


def to_pixel(u: np.ndarray | float, n: int) -> np.ndarray | float:
    """Normalised coordinate (align_corners=False) -> imshow position on a side of n pixels."""
    return ((np.asarray(u) + 1) * n - 1) / 2


def cut_image(image: np.ndarray, view: View, point: np.ndarray) -> np.ndarray:
    """image (C, *S) -> (C, rows, cols) of `view` through `point` (d,) in normalised coordinates.
    Coordinate k is tensor axis 1 + (d - 1 - k): S is (H, W) or (D, H, W), coordinates are x-first."""
    if view.cut is None:
        return image
    d = image.ndim - 1
    axis = 1 + (d - 1 - view.cut)
    n = image.shape[axis]
    return np.take(image, int(np.clip(np.rint(to_pixel(point[view.cut], n)), 0, n - 1)), axis=axis)


def in_slice(box: np.ndarray, view: View, point: np.ndarray) -> bool:
    """Does a box [lo..., hi...] (2d,) meet the cut of `view` through `point`?"""
    if view.cut is None:
        return True
    d = len(box) // 2
    return bool(box[view.cut] <= point[view.cut] <= box[d + view.cut])


def show_image(ax, image: np.ndarray, cmap: str = "gray") -> None:
    """image (C, rows, cols) in [0, 1]: grey for C != 3, RGB for C == 3."""
    picture = image.transpose(1, 2, 0) if image.shape[0] == 3 else image.mean(axis=0)
    ax.imshow(picture, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xlim(-0.5, image.shape[2] - 0.5)
    ax.set_ylim(image.shape[1] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_box(ax, box: np.ndarray, view: View, shape: tuple[int, int], **style) -> None:
    """Rectangle of box [lo..., hi...] (2d,) on a picture of shape (rows, cols)."""
    d = len(box) // 2
    rows, cols = shape
    # lo and hi are edges, not pixel centres: edge u sits at (u + 1) n / 2 - 0.5 on the imshow grid.
    x0, x1 = (box[view.h] + 1) * cols / 2 - 0.5, (box[d + view.h] + 1) * cols / 2 - 0.5
    y0, y1 = (box[view.v] + 1) * rows / 2 - 0.5, (box[d + view.v] + 1) * rows / 2 - 0.5
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, **style))


def draw_fixations(ax, looked: Looked, i: int, view: View, shape: tuple[int, int], focus: int | None = None) -> None:
    """Fixations of image i: numbered points (0 = glance), trajectory, and the footprint of every
    ring of every glimpse (only of step `focus` when given: in a 3D cut through that fixation)."""
    fix, boxes = looked.fixations[i], looked.boxes[i]  # (T+1, d), (T+1, R, 2d)
    rows, cols = shape
    px, py = to_pixel(fix[:, view.h], cols), to_pixel(fix[:, view.v], rows)
    ax.plot(px, py, "-", color="white", lw=1.0, alpha=0.8, path_effects=OUTLINE)
    for t in range(len(fix)):
        colour = STEP_COLOURS[t % len(STEP_COLOURS)]
        faded = focus is not None and t != focus
        if not faded:
            for r, box in enumerate(boxes[t]):
                draw_box(ax, box, view, shape, edgecolor=colour, lw=1.4 if r == 0 else 0.8, ls="-" if r == 0 else "--", alpha=0.9 / (1 + r))
        ax.plot(px[t], py[t], "o", ms=4, color=colour, mec="black", mew=0.6, alpha=0.35 if faded else 1.0)
        ax.text(px[t] + 0.6, py[t] - 0.6, str(t), color=colour, fontsize=8, fontweight="bold", path_effects=OUTLINE, alpha=0.5 if faded else 1.0)


def draw_lesions(ax, looked: Looked, i: int, view: View, shape: tuple[int, int], point: np.ndarray) -> None:
    """Ground-truth lesion box(es) of image i (synthetic data), dotted, where the cut meets them."""
    if looked.lesions is None:
        return
    for box in np.asarray(looked.lesions[i]).reshape(-1, looked.lesions.shape[-1]):
        if not np.isnan(box).any() and in_slice(box, view, point):
            draw_box(ax, box, view, shape, edgecolor=LESION_COLOUR, lw=1.0, ls=":")


# ----------------------------------------------------------------------------- output


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def png_base64(fig: Figure, dpi: int = 100) -> str:
    return base64.b64encode(png_bytes(fig, dpi)).decode("ascii")


def centre_slice(volume: np.ndarray) -> np.ndarray:
    """(..., *G) map of 2 or 3 spatial dims -> its central 2D slice (for 3D, along the first axis)."""
    return volume[volume.shape[0] // 2] if volume.ndim == 3 else volume
