"""Predictions to files: CSV, JSON, and overlays of the fixations on each image.

CSV columns: file, class (multi-label: the positive labels joined by '; '), prob_<class> per
class, then per step t (0 = the glance at the centre, 1.. = saccades) fix<t>_x, fix<t>_y
[, fix<t>_z] in pixels of the original image (x = column, y = row, z = slice; NIfTI: voxel
i, j, k; pixel centres at whole numbers) and the same as fix<t>_x_norm ... in [-1, 1].
JSON holds the same per image plus the checkpoint, task, class names and the failed inputs.
Overlays are PNGs: a 2D image with its fixations, numbered by step and joined in order, and the
foveal box of each; a volume as three slices (axial, coronal, sagittal) through the first
saccade's fixation, every fixation projected onto each.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from ..errors import FocusNetError
from ..fileio import atomic_path, check_writable_parent, ensure_dir, write_text
from .predictor import Failure, Prediction, Predictor, load
from .preprocess import to_grey_levels
from .readers import find_inputs, read_image

FORMATS = ("csv", "json")
STEP_COLOURS = ((255, 255, 255), (255, 59, 48), (255, 204, 0), (52, 199, 89), (10, 132, 255), (191, 90, 242), (255, 159, 10), (100, 210, 255))
OVERLAY_SIDE = 384  # overlays are scaled up (nearest) to at least this many pixels high


# ----------------------------------------------------------------------------- tables


def format_csv(predictions: list[Prediction], class_names: list[str]) -> str:
    steps, dims = _trace_shape(predictions)
    axes = "xyz"[:dims]
    header = ["file", "class", *[f"prob_{n}" for n in class_names]]
    header += [f"fix{t}_{a}" for t in range(steps) for a in axes] + [f"fix{t}_{a}_norm" for t in range(steps) for a in axes]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for p in predictions:
        row = [p.source, p.class_name, *[f"{p.probabilities[n]:.8g}" for n in class_names]]
        if steps:
            row += [f"{v:.2f}" for v in p.fixations_px.reshape(-1)] + [f"{v:.5f}" for v in p.fixations.reshape(-1)]
        writer.writerow(row)
    return buf.getvalue()


def format_json(predictions: list[Prediction], failures: list[Failure], predictor: Predictor) -> str:
    value = {
        "checkpoint": predictor.checkpoint.path,
        "task": predictor.task,
        "classes": predictor.class_names,
        "predictions": [p.to_dict() for p in predictions],
        "failures": [{"file": f.source, "error": f.message} for f in failures],
    }
    return json.dumps(value, indent=2) + "\n"


def _trace_shape(predictions: list[Prediction]) -> tuple[int, int]:
    first = next((p.fixations for p in predictions if p.fixations is not None), None)
    return (0, 0) if first is None else first.shape


# ----------------------------------------------------------------------------- overlays


def render_overlay(image: np.ndarray, prediction: Prediction):
    """image (*S, C) as read, any dtype -> PIL RGB image with the fixations drawn."""
    from PIL import Image

    grey = to_grey_levels(image, prediction.source)  # over the whole image or volume, as predict converts it
    fix, hw = prediction.fixations_px, prediction.half_widths
    if grey.ndim == 3:
        return _panel(_to_rgb(grey), fix, hw, prediction.shape, (0, 1), None)
    d, h, w = prediction.shape
    point = fix[1 if len(fix) > 1 else 0]
    x, y, z = (int(np.clip(np.rint(v), 0, n - 1)) for v, n in zip(point, (w, h, d)))
    panels = [  # only the three slices become RGB: a whole CT in RGB floats took gigabytes
        _panel(_to_rgb(grey[z]), fix, hw, prediction.shape, (0, 1), f"axial z={z}"),
        _panel(_to_rgb(grey[:, y]), fix, hw, prediction.shape, (0, 2), f"coronal y={y}"),
        _panel(_to_rgb(grey[:, :, x]), fix, hw, prediction.shape, (1, 2), f"sagittal x={x}"),
    ]
    gap = 6
    out = Image.new("RGB", (sum(p.width for p in panels) + gap * 2, max(p.height for p in panels)))
    left = 0
    for p in panels:
        out.paste(p, (left, 0))
        left += p.width + gap
    return out


def _to_rgb(grey: np.ndarray) -> np.ndarray:
    """float (rows, cols, C) grey levels -> uint8 (rows, cols, 3)."""
    rgb = grey[..., :3] if grey.shape[-1] >= 3 else np.repeat(grey[..., :1], 3, axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _panel(rgb: np.ndarray, fix: np.ndarray, hw: np.ndarray, shape: tuple[int, ...], axes: tuple[int, int], title: str | None):
    """rgb (rows, cols, 3); fixation coordinates `axes` (0 = x, 1 = y, 2 = z) are the picture's
    horizontal and vertical axes."""
    from PIL import Image, ImageDraw

    rows, cols = rgb.shape[:2]
    scale = max(1, math.ceil(OVERLAY_SIDE / rows))
    im = Image.fromarray(rgb).resize((cols * scale, rows * scale), Image.NEAREST)
    draw = ImageDraw.Draw(im)
    sides = shape[::-1]  # (W, H[, D]) in coordinate order

    def at(t: int) -> tuple[float, float]:  # pixel centre p -> (p + 0.5) * scale in the scaled picture
        return ((fix[t, axes[0]] + 0.5) * scale, (fix[t, axes[1]] + 0.5) * scale)

    r = max(3, scale * min(rows, cols) // 40)
    font = _font(max(11, 3 * r))
    points = [at(t) for t in range(len(fix))]
    draw.line(points, fill=(255, 255, 255), width=max(1, r // 3))
    for t, (px, py) in enumerate(points):
        colour = STEP_COLOURS[t % len(STEP_COLOURS)]
        if hw is not None:  # foveal box: half-width hw in normalised units = hw * n / 2 pixels
            bx, by = (hw[t] * sides[a] / 2 * scale for a in axes)
            draw.rectangle([px - bx, py - by, px + bx, py + by], outline=colour, width=max(1, r // 3))
        draw.ellipse([px - r, py - r, px + r, py + r], fill=colour, outline=(0, 0, 0))
        draw.text((px + r + 1, py - 3 * r), str(t), fill=colour, font=font, stroke_width=1, stroke_fill=(0, 0, 0))
    if title:
        draw.text((4, 4), title, fill=(255, 255, 0), font=font, stroke_width=1, stroke_fill=(0, 0, 0))
    return im


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable since Pillow 10.1
    except TypeError:
        return ImageFont.load_default()


def write_overlay(image: np.ndarray, prediction: Prediction, path: str) -> str:
    im = render_overlay(image, prediction)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
    return path


def overlay_name(source: str, used: set[str]) -> str:
    """`folder/scan.nii.gz` -> `scan_fixations.png`, numbered when two inputs share a stem."""
    base = os.path.basename(os.path.normpath(source)) or "image"
    base = base[: -len(".nii.gz")] if base.lower().endswith(".nii.gz") else os.path.splitext(base)[0] or base
    base = "".join(c if c.isalnum() or c in "-_." else "_" for c in base) or "image"
    name, k = f"{base}_fixations.png", 2
    while name in used:
        name, k = f"{base}_{k}_fixations.png", k + 1
    used.add(name)
    return name


# ----------------------------------------------------------------------------- the whole run


@dataclass
class PredictRun:
    predictions: list[Prediction]
    failures: list[Failure] = field(default_factory=list)
    text: str = ""  # the CSV or JSON
    overlays: list[str] = field(default_factory=list)


def predict_files(checkpoint: str, inputs: list, fmt: str = "csv", output: str | None = None, overlay: str | None = None, batch_size: int = 32, device: str = "auto", progress: bool | None = None, on_failure=None) -> PredictRun:
    """What `focusnet predict` does: every input (files, folders, arrays) through the model.

    A bad input becomes a Failure (reported through on_failure, one line each) and the rest go
    on; when the only input fails, its message is the FocusNetError raised. The CSV/JSON is
    written to `output` at the end, atomically, when anything succeeded."""
    if fmt not in FORMATS:
        raise FocusNetError(f"unknown format {fmt!r}; use csv or json")
    if output:
        check_writable_parent(output)
    predictor = load(checkpoint, device)
    if overlay and not predictor.has_fixations:
        raise FocusNetError(f"--overlay draws fixations, but {predictor.checkpoint.path} holds a {predictor.checkpoint.model_config['name']} model, which makes none; leave --overlay out")
    sources = find_inputs(list(inputs), predictor.spatial_dims)
    if not sources:
        raise FocusNetError(f"no images found in {', '.join(map(str, inputs)) or 'the inputs'}")
    if overlay:
        ensure_dir(overlay)
    failures: list[Failure] = []
    run = PredictRun([], failures)
    by_name = {s.name: s for s in sources}
    used: set[str] = set()
    progress = sys.stderr.isatty() if progress is None else progress
    lone = len(sources) == 1  # its failures are reported at the end: unpredicted, the failure is the error itself

    def failed(f: Failure) -> None:
        failures.append(f)
        if on_failure is not None and not lone:
            on_failure(f)

    with tqdm(total=len(sources), unit="image", disable=not progress, dynamic_ncols=True) as bar:
        for p in predictor.predict_iter(sources, batch_size):
            bar.update(1)
            if isinstance(p, Failure):
                failed(p)
                continue
            run.predictions.append(p)
            if overlay:  # read again rather than keep every (possibly large) image of a batch
                try:
                    image = read_image(by_name[p.source], predictor.spatial_dims)
                except FocusNetError as e:  # the file changed since it was predicted
                    failed(Failure(p.source, str(e)))
                    continue
                run.overlays.append(write_overlay(image, p, os.path.join(overlay, overlay_name(p.source, used))))
    if not run.predictions:
        raise FocusNetError(failures[0].message if lone else f"none of the {len(sources)} inputs could be predicted")
    if lone and on_failure is not None:  # predicted, but e.g. its overlay failed
        for f in failures:
            on_failure(f)
    run.text = format_csv(run.predictions, predictor.class_names) if fmt == "csv" else format_json(run.predictions, failures, predictor)
    if output:
        write_text(output, run.text)
    return run


__all__ = ["FORMATS", "PredictRun", "format_csv", "format_json", "overlay_name", "predict_files", "render_overlay", "write_overlay"]
