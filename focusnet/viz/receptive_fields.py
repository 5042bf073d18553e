"""Gradient-based effective receptive fields (Luo et al. 2016) and their frequency response.

For each pathway: the gradient of its centre unit (summed over channels) with respect to the fovea
of real glimpses (the first saccade's; the glance for glance-only models). The same for the whole
glimpse encoder (gated M/P/K + trunk), and, in image space, for the whole model: the gradient of
the predicted class's logit with respect to the image.

    ERF      = mean over images of |gradient|                      (*G), shown scaled to max 1
    spectrum = mean over images of |FFT(gradient)|^2, radially averaged over frequency
    centroid = power-weighted mean radial frequency (cycles per sample; per pixel in image space)

A unit's linearised response to a sinusoid of frequency f is its gradient's Fourier coefficient at
f, so the spectrum is the unit's frequency response. "M is low-pass, P is high-pass" is then
measured, not assumed: M's centroid should lie below P's.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from ..models.focusnet import FocusNet
from .common import Looked, RunModel, centre_slice, new_figure
from .pathways import PATHWAY_NAMES, glimpse_at

HIGH_BAND = 0.25  # cycles per sample: half the Nyquist frequency


@dataclass
class FieldStats:
    name: str
    space: str  # "glimpse" (cycles per glimpse sample) or "image" (cycles per pixel)
    erf: np.ndarray  # (*G) mean |gradient| over images, scaled to max 1
    freqs: np.ndarray  # (F,) radial frequency of each bin
    power: np.ndarray  # (F,) radially averaged power, scaled to sum 1
    centroid: float  # power-weighted mean radial frequency
    high: float  # share of the power above HIGH_BAND


def radial_spectrum(grads: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """grads (B, *G) signed -> (freqs (F,), power (F,) sum 1, centroid, share above HIGH_BAND).
    Bins of width 1/max(G) up to the Nyquist frequency 0.5; the centroid uses every frequency."""
    axes = tuple(range(1, grads.ndim))
    power = (np.abs(np.fft.fftn(grads, axes=axes)) ** 2).mean(axis=0)  # (*G)
    r = np.sqrt(sum(f**2 for f in np.meshgrid(*[np.fft.fftfreq(n) for n in grads.shape[1:]], indexing="ij")))
    total = power.sum()
    if total <= 0:
        return np.zeros(1), np.zeros(1), float("nan"), float("nan")
    step = 1.0 / max(grads.shape[1:])
    keep = r <= 0.5 + 1e-9
    bins = np.rint(r[keep] / step).astype(np.int64)
    sums, counts = np.bincount(bins, power[keep]), np.bincount(bins)
    profile = sums / np.maximum(counts, 1)
    have = counts > 0
    freqs, profile = (np.arange(len(sums)) * step)[have], profile[have]
    return freqs, profile / profile.sum(), float((power * r).sum() / total), float(power[r > HIGH_BAND].sum() / total)


def field_stats(name: str, space: str, grads: torch.Tensor) -> FieldStats:
    g = grads.detach().float().cpu().numpy()  # (B, *G)
    erf = np.abs(g).mean(axis=0)
    freqs, power, centroid, high = radial_spectrum(g)
    return FieldStats(name, space, erf / (erf.max() + 1e-12), freqs, power, centroid, high)


def _centre_unit(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, C, *g) -> () the centre position summed over channels and images."""
    centre = tuple(n // 2 for n in feature_map.shape[2:])
    return feature_map[(slice(None), slice(None), *centre)].sum()


def glimpse_gradients(model: FocusNet, looked: Looked, device: torch.device) -> dict[str, torch.Tensor]:
    """{pathway or "encoder": (B, *G) gradient of its centre unit w.r.t. the fovea (summed over colour)}."""
    step = 1 if model.config.num_saccades else 0
    fix, hw = (torch.as_tensor(a, device=device) for a in (looked.fixations, looked.half_widths))
    with torch.no_grad():
        glimpse = glimpse_at(model, looked.x.to(device), fix, hw, step)
    glimpse.requires_grad_(True)
    c = model.config.in_channels
    targets = {p: _centre_unit(m) for p, m in model.encoder.pathway_maps(glimpse).items()}
    targets["encoder"] = _centre_unit(model.trunk(model.encoder(glimpse)))
    out = {}
    for name, target in targets.items():
        (grad,) = torch.autograd.grad(target, glimpse, retain_graph=True)
        out[name] = grad[:, :c].sum(dim=1)
    return out


def image_gradients(run: RunModel, looked: Looked) -> torch.Tensor:
    """(B, *S) gradient of each image's top-scoring logit w.r.t. the image (summed over colour)."""
    x = looked.x.to(run.device).requires_grad_(True)
    logits = run.model(x)
    top = logits.gather(1, torch.as_tensor(looked.probs.argmax(axis=1), device=run.device)[:, None]).sum()
    (grad,) = torch.autograd.grad(top, x)
    return grad.sum(dim=1)


def receptive_fields(run: RunModel, looked: Looked) -> list[FieldStats]:
    """Stats of each pathway, of the glimpse encoder and of the whole model (image space)."""
    model = run.require_focusnet("pathway receptive fields")
    grads = glimpse_gradients(model, looked, run.device)
    stats = [field_stats(PATHWAY_NAMES.get(k, "glimpse encoder (M/P/K + trunk)"), "glimpse", g) for k, g in grads.items()]
    stats.append(field_stats("whole model (image)", "image", image_gradients(run, looked)))
    return stats


def verdict(stats: list[FieldStats]) -> str:
    """One line: is M low-pass and P high-pass, as measured?"""
    by = {s.name: s for s in stats}
    m, p = by.get(PATHWAY_NAMES["m"]), by.get(PATHWAY_NAMES["p"])
    if m is None or p is None:
        return "M/P comparison not possible: the model lacks the M or the P pathway."
    measured = f"spectral centroid M {m.centroid:.3f} vs P {p.centroid:.3f} cycles/sample; power above {HIGH_BAND} M {m.high:.0%}, P {p.high:.0%}"
    if not np.isfinite([m.centroid, p.centroid]).all():
        return f"Not measurable (a pathway's centre unit is silent on these images): {measured}."
    lower, less_high = m.centroid < p.centroid, m.high < p.high
    if lower and less_high:
        return f"As designed, M is low-pass and P high-pass relative to each other: {measured}."
    if not lower and not less_high:
        return f"Not as designed, M is not lower-pass than P: {measured}."
    return f"Mixed, the two measures disagree on whether M is lower-pass than P: {measured}."


def receptive_field_figure(run: RunModel, looked: Looked) -> tuple[Figure, str]:
    """Top: ERF of each field (3D: central slice); bottom: radial spectra. -> (figure, verdict)."""
    stats = receptive_fields(run, looked)
    line = verdict(stats)
    fig = new_figure(2.1 * len(stats) + 0.4, 5.2)
    grid = fig.add_gridspec(2, len(stats), height_ratios=[1, 1.1])
    for j, s in enumerate(stats):
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(centre_slice(s.erf), cmap="viridis", vmin=0, interpolation="nearest")
        ax.set_title(f"{s.name}\n{s.space} space, centroid {s.centroid:.3f}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(grid[1, :])
    for s in stats:
        ax.semilogy(s.freqs, np.maximum(s.power, 1e-8), marker="o", ms=3, lw=1.2, label=s.name, ls="--" if s.space == "image" else "-")
    ax.axvline(HIGH_BAND, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("radial frequency (cycles per glimpse sample; per pixel for the image-space field)", fontsize=8)
    ax.set_ylabel("share of power", fontsize=8)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(textwrap.fill(line, 110), fontsize=8)
    fig.suptitle(f"effective receptive fields over {len(looked)} images", fontsize=9)
    return fig, line

