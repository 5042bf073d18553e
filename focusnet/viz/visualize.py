"""`focusnet visualize`: every figure of a trained model, written as PNG files.

    paths = visualize("results/synth-lesion_latest/best_model.pth", out="figs", n=8)
    -> {"fixations": "figs/fixations.png", "pathways": ..., "gates_per_class": ...,
        "receptive_fields": ..., "gradcam": ..., "hit_rate": "figs/hit_rate.json" (synthetic only)}

Images: a random pool of the split (`pool`) is run through the model; the gallery takes n of them,
half correct and half wrong where possible (or exactly `indices`). The mean gate per class uses the
whole pool; receptive fields use up to 32 pool images; pathway maps and Grad-CAM the first 4 of
the gallery. The hit rate (synthetic data) uses up to 1000 images of the split.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from ..errors import FocusNetError
from ..fileio import atomic_path, ensure_dir, write_json
from .common import (
    Looked,
    RunModel,
    balanced_examples,
    load_run_model,
    load_split,
    look,
    png_bytes,
    random_pool,
)
from .fixations import fixation_figure
from .gradcam import gradcam_figure
from .hit_rate import hit_rate
from .pathways import gate_class_figure, pathway_figure
from .receptive_fields import receptive_field_figure

FIGURES = ("fixations", "pathways", "gates_per_class", "receptive_fields", "gradcam")
DETAIL_IMAGES = 4  # images in the pathway and Grad-CAM figures
ERF_IMAGES = 32
HIT_RATE_IMAGES = 1000


@dataclass
class Rendered:
    name: str  # one of FIGURES
    title: str
    figure: Figure
    note: str = ""  # one line under the figure (e.g. the receptive-field verdict)


def select(run: RunModel, part, n: int = 8, seed: int = 0, pool: int = 256, indices: list[int] | None = None) -> tuple[Looked, Looked]:
    """-> (pool of random split images, gallery of n of them: half correct, half wrong), both looked at."""
    if indices:
        bad = [i for i in indices if not 0 <= i < len(part)]
        if bad:
            raise FocusNetError(f"image indices {bad} are outside the split (0..{len(part) - 1})")
        rows = np.unique(np.concatenate([random_pool(len(part), pool, seed), indices]))
        looked = look(run, part, rows)
        return looked, looked.subset(np.searchsorted(rows, indices))
    looked = look(run, part, random_pool(len(part), pool, seed))
    return looked, looked.subset(balanced_examples(looked, n, seed))


def model_figures(run: RunModel, pool: Looked, gallery: Looked) -> Iterator[Rendered]:
    """The FocusNet figures one at a time (so each can be saved and dropped)."""
    detail = gallery.subset(np.arange(min(DETAIL_IMAGES, len(gallery))))
    yield Rendered("fixations", "Fixation gallery", fixation_figure(run, gallery))
    yield Rendered("pathways", "M/P/K pathway maps and gate weights", pathway_figure(run, detail))
    yield Rendered("gates_per_class", "Mean pathway gate per class", gate_class_figure(run, pool))
    fig, verdict = receptive_field_figure(run, pool.subset(np.arange(min(ERF_IMAGES, len(pool)))))
    yield Rendered("receptive_fields", "Effective receptive fields and frequency response", fig, verdict)
    yield Rendered("gradcam", "Grad-CAM on the glance's pathway maps, beside the fixations", gradcam_figure(run, detail))


def split_hit_rate(run: RunModel, part, seed: int = 0) -> dict | None:
    """Hit rate on up to HIT_RATE_IMAGES images of a split with lesion boxes (else None)."""
    if part.boxes is None or not run.is_focusnet or not run.model.config.num_saccades:
        return None
    looked = look(run, part, random_pool(len(part), HIT_RATE_IMAGES, seed))
    return hit_rate(looked.fixations, looked.lesions, seed=seed)


def visualize(model_path: str, dataset: str | None = None, out: str | None = None, n: int = 8, data_dir: str | None = None, split: str = "test", seed: int = 0, device: str = "cpu", pool: int = 256, indices: list[int] | None = None) -> dict[str, str]:
    """Write every figure as PNG into `out` (default: <run folder>/viz); returns {name: path}."""
    if n < 1 or pool < 1:
        raise FocusNetError("--n and the pool size must be at least 1")
    run = load_run_model(model_path, device)
    run.require_focusnet("visualize (fixations, pathway maps)")
    part = load_split(run, split, data_dir, dataset)
    out = ensure_dir(out or os.path.join(os.path.dirname(os.path.abspath(run.path)), "viz"))
    pool_looked, gallery = select(run, part, n, seed, max(pool, n), indices)
    paths = {}
    for r in model_figures(run, pool_looked, gallery):
        paths[r.name] = os.path.join(out, f"{r.name}.png")
        with atomic_path(paths[r.name]) as tmp, open(tmp, "wb") as f:
            f.write(png_bytes(r.figure, dpi=120))
        if r.note:
            print(f"{r.name}: {r.note}")
    rate = split_hit_rate(run, part, seed)
    if rate is not None:
        paths["hit_rate"] = os.path.join(out, "hit_rate.json")
        write_json(paths["hit_rate"], {"dataset": run.data["flag"], "split": split, **rate})
    return paths
