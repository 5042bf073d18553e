"""Batched augmentation on tensors (CPU or GPU, 2D and 3D).

One `affine_grid` + `grid_sample` per batch applies random flips, shifts, scales and (optional)
in-plane rotations; then per-image brightness/contrast jitter. Random parameters are drawn on
the CPU from the given `torch.Generator`, so results are reproducible and identical on any
device.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

from ..errors import FocusNetError


_SIDE = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def label_preserving_flip_axes(label_names: dict[str, str], spatial_dims: int) -> tuple[int, ...]:
    """Flip axes that keep every label true: all spatial axes, but not the width axis (left /
    right in MedMNIST's images and volumes) when a class names a side, as OrganMNIST's
    kidney-left / kidney-right do (a flip would turn one into the other)."""
    axes = tuple(range(-spatial_dims, 0))
    return axes[:-1] if any(_SIDE.search(name) for name in label_names.values()) else axes


class Augment:
    """Random flips, translations, scales, rotations and intensity jitter for a batch.

    Input: float (B, C, H, W) or (B, C, D, H, W) with values in [0, 1]; output: same shape.
    max_shift is a fraction of the image size; max_scale a relative zoom (0.1 = +-10%);
    max_rotate in degrees, in the (H, W) plane; flip_axes are tensor dims (default: every
    spatial axis), each flipped with probability 0.5.
    """

    def __init__(
        self,
        spatial_dims: int,
        flip: bool = True,
        max_shift: float = 0.1,
        max_scale: float = 0.1,
        max_rotate: float = 0.0,
        brightness: float = 0.1,
        contrast: float = 0.1,
        flip_axes: tuple[int, ...] | None = None,
        padding_mode: str = "zeros",
        clamp: bool = True,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise FocusNetError(f"Augment: spatial_dims must be 2 or 3, got {spatial_dims}.")
        self.spatial_dims = spatial_dims
        self.flip = flip
        self.max_shift, self.max_scale, self.max_rotate = max_shift, max_scale, max_rotate
        self.brightness, self.contrast = brightness, contrast
        axes = flip_axes if flip_axes is not None else tuple(range(-spatial_dims, 0))
        # tensor dim -> grid coordinate: last dim (W) is x = 0, H is y = 1, D is z = 2
        self._flip_coords = sorted({-(a - (spatial_dims + 2) if a >= 0 else a) - 1 for a in axes})
        if any(not 0 <= c < spatial_dims for c in self._flip_coords):
            raise FocusNetError(f"Augment: flip_axes {flip_axes} are not spatial dims of a {spatial_dims}D batch.")
        self.padding_mode = padding_mode
        self.clamp = clamp

    @property
    def geometric(self) -> bool:
        return (self.flip and bool(self._flip_coords)) or self.max_shift > 0 or self.max_scale > 0 or self.max_rotate > 0

    def __repr__(self) -> str:
        return (f"Augment(spatial_dims={self.spatial_dims}, flip={self.flip}, max_shift={self.max_shift}, "
                f"max_scale={self.max_scale}, max_rotate={self.max_rotate}, brightness={self.brightness}, "
                f"contrast={self.contrast})")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2:
            raise FocusNetError(
                f"Augment({self.spatial_dims}D) expects a (B, C, {'D, ' if self.spatial_dims == 3 else ''}H, W) batch, "
                f"got shape {tuple(x.shape)}."
            )
        if self.geometric:
            theta = self.sample_affine(x.shape[0], generator).to(device=x.device, dtype=x.dtype)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=False)
        if self.brightness > 0 or self.contrast > 0:
            x = self._jitter(x, generator)
        return x.clamp_(0, 1) if self.clamp else x

    def sample_affine(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, d, d+1) affine matrices mapping output to input grid coordinates (x first)."""
        d = self.spatial_dims
        u = torch.rand(batch, 2 * d + 2, generator=generator)  # all draws at once, fixed order
        diag = (1 + self.max_scale * (2 * u[:, :1] - 1)).expand(batch, d).clone()  # isotropic zoom
        if self.flip:
            for c in self._flip_coords:
                diag[:, c] *= torch.where(u[:, 1 + c] < 0.5, -1.0, 1.0)
        A = torch.diag_embed(diag)
        if self.max_rotate > 0:
            A = _plane_rotation(math.radians(self.max_rotate) * (2 * u[:, -1] - 1), d) @ A
        shift = 2 * self.max_shift * (2 * u[:, 1 + d : 1 + 2 * d] - 1)  # grid spans 2 per image size
        return torch.cat([A, shift.unsqueeze(-1)], dim=-1)

    def _jitter(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        u = torch.rand(x.shape[0], 2, generator=generator).to(device=x.device, dtype=x.dtype)
        shape = (-1,) + (1,) * (x.dim() - 1)
        c = (1 + self.contrast * (2 * u[:, 0] - 1)).view(shape)
        b = (self.brightness * (2 * u[:, 1] - 1)).view(shape)
        mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
        return (x - mean) * c + mean + b


def _plane_rotation(angle: torch.Tensor, d: int) -> torch.Tensor:
    """(B, d, d) rotations by `angle` in the x-y (W-H) plane."""
    R = torch.eye(d).repeat(len(angle), 1, 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    R[:, 0, 0], R[:, 0, 1], R[:, 1, 0], R[:, 1, 1] = cos, -sin, sin, cos
    return R
