"""M/P/K pathways: the encoder that every glimpse passes through.

Input  (B, S*C, *G): a glimpse of `S` scales (fovea first, then wider rings) of a `C`-channel image,
                     G = (g, g) in 2D or (g, g, g) in 3D.
Output (B, out_channels, *G/2) fused features, plus the per-image gate weights (B, n_pathways).

- M (magnocellular): achromatic luminance of every scale, low-pass (box-pooled) before a large
  kernel: coarse, large receptive field, few channels.
- P (parvocellular): luminance plus red-green opponency of the foveal scale, small 3-kernels at
  full glimpse resolution: fine detail, more channels.
- K (koniocellular): blue-yellow opponency plus luminance of every scale through Gabor-initialised
  oriented filters.
Streams are divisively cross-normalised (`CrossNormalization`) and mixed by a content-dependent gate.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import (
    ViewBatchNorm,
    avg_pool,
    check_spatial_dims,
    conv,
    conv_norm_act,
    global_avg_pool,
)

PATHWAYS = ("m", "p", "k")


def colour_opponents(x: torch.Tensor, channels: int) -> dict[str, torch.Tensor]:
    """Split (B, S*C, *G) into retinal signals, each (B, S, *G): luminance, red-green, blue-yellow.

    For grey input (C != 3) the opponent signals are the luminance itself, so every pathway still
    sees the image.
    """
    b, sc = x.shape[:2]
    x = x.view(b, sc // channels, channels, *x.shape[2:])
    if channels != 3:
        lum = x.mean(dim=2)
        return {"lum": lum, "rg": lum, "by": lum}
    r, g, bl = x.unbind(dim=2)
    return {"lum": (r + g + bl) / 3, "rg": r - g, "by": bl - (r + g) / 2}


def gabor_bank(out_channels: int, in_channels: int, kernel: int, spatial_dims: int) -> torch.Tensor:
    """Oriented Gabor filters (out, in, k, ..., k): orientations spread over the half circle (2D)
    or the half sphere (3D), two phases, frequencies of 1/4 and 1/2.5 cycles per sample."""
    axis = torch.arange(kernel, dtype=torch.float32) - (kernel - 1) / 2
    coords = torch.stack(torch.meshgrid(*[axis] * spatial_dims, indexing="ij"), dim=-1)  # (k,..,k, d)
    sigma = kernel / 4
    envelope = torch.exp(-(coords**2).sum(-1) / (2 * sigma**2))
    filters = []
    for o in range(out_channels):
        direction = _orientation(o, out_channels, spatial_dims)
        freq = 1 / 4 if (o // 2) % 2 == 0 else 1 / 2.5
        phase = 0.0 if o % 2 == 0 else math.pi / 2
        f = envelope * torch.cos(2 * math.pi * freq * (coords @ direction) + phase)
        f = f - f.mean()
        filters.append(f / (f.norm() + 1e-6))
    return torch.stack(filters)[:, None].repeat(1, in_channels, *[1] * spatial_dims) / math.sqrt(in_channels)


def _orientation(i: int, n: int, spatial_dims: int) -> torch.Tensor:
    """Unit vector i of n, evenly spread (half circle in 2D, Fibonacci half sphere in 3D)."""
    if spatial_dims == 2:
        a = math.pi * (i // 2) / max(1, n // 2)
        return torch.tensor([math.cos(a), math.sin(a)])
    k = i // 2 + 0.5
    z = 1 - k / max(1, n // 2)
    r = math.sqrt(max(0.0, 1 - z * z))
    a = math.pi * (1 + 5**0.5) * k
    return torch.tensor([z, r * math.cos(a), r * math.sin(a)])


class CrossNormalization(nn.Module):
    """Divisive normalisation between streams with learned coupling.

    Each stream i (B, C, *S) is divided by sqrt(1 + sum_j a_ij * E_j), where E_j is the mean energy
    of stream j in the same image and a_ij = softplus(learned) >= 0. Per image, so a sample's output
    never depends on the rest of the batch.
    """

    def __init__(self, num_streams: int, init_coupling: float = 0.5):
        super().__init__()
        raw = math.log(math.expm1(init_coupling))  # inverse softplus
        self.coupling = nn.Parameter(torch.full((num_streams, num_streams), raw))

    def forward(self, streams: list[torch.Tensor]) -> list[torch.Tensor]:
        energy = torch.stack([s.pow(2).flatten(1).mean(1) for s in streams], dim=1)  # (B, n)
        denom = (1 + energy @ nn.functional.softplus(self.coupling).T).sqrt()  # (B, n)
        view = (-1,) + (1,) * (streams[0].dim() - 1)
        return [s / denom[:, i].view(view) for i, s in enumerate(streams)]


class MPKBlock(nn.Module):
    """The three pathways, cross-normalised and gated. See the module docstring for shapes."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 64,
        spatial_dims: int = 2,
        num_scales: int = 1,
        width: int = 32,
        pathways: str = "mpk",
        views: int = 1,
    ):
        super().__init__()
        check_spatial_dims(spatial_dims)
        unknown = set(pathways) - set(PATHWAYS)
        if not pathways or unknown:
            raise ValueError(f"pathways must be a non-empty subset of 'mpk', got {pathways!r}")
        self.in_channels, self.num_scales, self.spatial_dims = in_channels, num_scales, spatial_dims
        self.pathways = "".join(p for p in PATHWAYS if p in pathways)
        rgb = in_channels == 3
        d = spatial_dims
        streams = {
            # M: luminance of all scales, box-pooled to half resolution, then a wide kernel.
            "m": nn.Sequential(conv_norm_act(d, num_scales, width // 2, kernel=5, views=views), conv(d, width // 2, out_channels, 1)),
            # P: foveal luminance (+ red-green), full resolution, small kernels, then stride 2.
            "p": nn.Sequential(
                conv_norm_act(d, 2 if rgb else 1, width, kernel=3, views=views),
                conv(d, width, out_channels, 3, stride=2),
            ),
            # K: blue-yellow (+ luminance) of all scales through oriented Gabor filters, stride 2.
            "k": nn.Sequential(conv_norm_act(d, 2 * num_scales, width // 2, kernel=5, stride=2, views=views), conv(d, width // 2, out_channels, 1)),
        }
        self.streams = nn.ModuleDict({p: streams[p] for p in self.pathways})
        self.norms = nn.ModuleDict({p: ViewBatchNorm(d, out_channels, views) for p in self.pathways})
        if "k" in self.streams:
            first = self.streams["k"][0][0]
            with torch.no_grad():
                first.weight.copy_(gabor_bank(first.out_channels, first.in_channels, 5, d))
        n = len(self.pathways)
        self.cross_norm = CrossNormalization(n) if n > 1 else None
        self.gate = nn.Linear(n * out_channels, n) if n > 1 else None
        self.out_channels = out_channels

    def forward(self, glimpse: torch.Tensor) -> torch.Tensor:
        return self.forward_with_gates(glimpse)[0]

    def forward_with_gates(self, glimpse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """glimpse (B, S*C, *G) -> (features (B, out_channels, *G/2), gates (B, n_pathways))"""
        outs = list(self.pathway_maps(glimpse).values())
        b = glimpse.shape[0]
        if self.gate is None:
            return outs[0], glimpse.new_ones(b, 1)
        gates = torch.softmax(self.gate(torch.cat([global_avg_pool(o) for o in outs], 1)), dim=1)  # (B, n)
        view = (b, 1) + (1,) * self.spatial_dims
        # Scaled by n so that a uniform gate keeps the magnitude of a single stream.
        fused = sum(gates[:, i].view(view) * o for i, o in enumerate(outs)) * len(outs)
        return fused, gates

    def pathway_maps(self, glimpse: torch.Tensor) -> dict[str, torch.Tensor]:
        """glimpse (B, S*C, *G) -> {pathway: (B, out_channels, *G/2)}: each stream rectified and
        cross-normalised, before the gate mixes them (what the figures and Grad-CAM look at)."""
        expected = self.num_scales * self.in_channels
        if glimpse.dim() != self.spatial_dims + 2 or glimpse.shape[1] != expected:
            raise ValueError(
                f"MPK block expects (B, {expected}, *G) with {self.spatial_dims} spatial dims "
                f"({self.num_scales} scales x {self.in_channels} channels), got {tuple(glimpse.shape)}"
            )
        retina = colour_opponents(glimpse, self.in_channels)
        inputs = {
            "m": lambda: avg_pool(retina["lum"], 2),
            "p": lambda: retina["lum"][:, :1] if self.in_channels != 3 else torch.cat([retina["lum"][:, :1], retina["rg"][:, :1]], 1),
            "k": lambda: torch.cat([retina["by"], retina["lum"]], 1),
        }
        outs = [torch.relu(self.norms[p](self.streams[p](inputs[p]()))) for p in self.pathways]
        if self.cross_norm is not None:
            outs = self.cross_norm(outs)
        return dict(zip(self.pathways, outs))


class AdvancedMPKBlock2D(MPKBlock):
    """2D M/P/K block (public name from the original description)."""

    def __init__(self, in_channels: int, out_channels: int = 64, **kwargs):
        super().__init__(in_channels, out_channels, spatial_dims=2, **kwargs)


class AdvancedMPKBlock3D(MPKBlock):
    """3D M/P/K block (public name from the original description)."""

    def __init__(self, in_channels: int, out_channels: int = 64, **kwargs):
        super().__init__(in_channels, out_channels, spatial_dims=3, **kwargs)
