"""Foveated glimpse sensor: differentiable crops around a fixation, 2D and 3D.

Coordinates are torch's normalised grid coordinates in [-1, 1], ordered as `grid_sample` orders
them: (x, y) = (width, height) in 2D and (x, y, z) = (width, height, depth) in 3D.

A glimpse at fixation `c` (B, d) with foveal half-width `s` (B,) is `num_scales` patches of
g^d samples: the fovea covers [c - s, c + s], ring k covers [c - s*2^k, c + s*2^k]. Each ring is read
from an image pyramid level whose pixel pitch matches its sampling pitch, so wide rings are
low-passed instead of aliased: sharp at the centre, coarse around it (per axis, for non-square images). Sampling is bilinear
(trilinear in 3D), so the loss has a gradient with respect to `c` and `s`: the policy can learn.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .layers import avg_pool


def base_grid(glimpse_size: int, spatial_dims: int, device=None, dtype=None) -> torch.Tensor:
    """Sample offsets of a unit glimpse: (g, ..., g, d) in [-1, 1], last dim ordered (x, y[, z])."""
    axis = (torch.arange(glimpse_size, device=device, dtype=dtype) + 0.5) / glimpse_size * 2 - 1
    mesh = torch.meshgrid(*[axis] * spatial_dims, indexing="ij")  # (z,) y, x order of the tensor dims
    return torch.stack(mesh[::-1], dim=-1)


class ImagePyramid:
    """Box-filtered levels of one batch, built lazily. A level is indexed per axis in tensor-dim
    order ((l_z,) l_y, l_x): its pixel pitch along an axis is 2^l. Square and cubic images use equal
    levels; a longer side gets a coarser one, so it is low-passed as much as it is subsampled."""

    def __init__(self, image: torch.Tensor):
        self.base = (0,) * (image.dim() - 2)
        self.levels = {self.base: image}

    @property
    def sides(self) -> tuple[int, ...]:
        return tuple(self.levels[self.base].shape[2:])

    @property
    def min_side(self) -> int:
        return min(self.sides)

    def subset(self, keep: torch.Tensor) -> ImagePyramid:
        """The pyramid of the images selected by a boolean mask (B,), reusing built levels."""
        pyramid = ImagePyramid.__new__(ImagePyramid)
        pyramid.base, pyramid.levels = self.base, {index: level[keep] for index, level in self.levels.items()}
        return pyramid

    def level(self, index: tuple[int, ...]) -> torch.Tensor:
        if index not in self.levels:
            if min(index) == max(index):  # equal levels: halve every axis of the level below
                self.levels[index] = avg_pool(self.level((index[0] - 1,) * len(index)), 2)
            else:  # halve the axis that needs the coarsest pitch, one step at a time
                axis = max(range(len(index)), key=index.__getitem__)
                below = tuple(i - (a == axis) for a, i in enumerate(index))
                self.levels[index] = avg_pool(self.level(below), tuple(2 if a == axis else 1 for a in range(len(index))))
        return self.levels[index]

    def level_for(self, half_width: float, glimpse_size: int) -> tuple[int, ...]:
        """Per axis, the level whose pitch is at most the sampling pitch of a patch of this half-width."""
        levels = []
        for side in self.sides:
            pitch = half_width * side / glimpse_size  # image pixels per glimpse sample along this axis
            levels.append(max(0, min(int(math.floor(math.log2(max(pitch, 1.0)))), int(math.log2(side)) - 1)))
        return tuple(levels)

    def extent_scale(self, index: tuple[int, ...]) -> tuple[float, ...] | None:
        """Per grid axis (x, y[, z]): the image's side over the side level `index` spans (its last
        pixel pools past the edge where a halved side was odd), or None where they all match."""
        level = self.level(index)
        scale = tuple(side / (2**i * n) for side, i, n in zip(self.sides, index, level.shape[2:]))
        return None if all(a == 1.0 for a in scale) else scale[::-1]


class GlimpseSensor(torch.nn.Module):
    def __init__(self, spatial_dims: int, glimpse_size: int, num_scales: int):
        super().__init__()
        self.spatial_dims, self.glimpse_size, self.num_scales = spatial_dims, glimpse_size, num_scales
        self.register_buffer("grid", base_grid(glimpse_size, spatial_dims), persistent=False)

    def forward(
        self, pyramid: ImagePyramid, centers: torch.Tensor, half_widths: torch.Tensor, nominal_half_width: float
    ) -> torch.Tensor:
        """centers (B, d), half_widths (B,) -> glimpse (B, num_scales * C, *G).

        `nominal_half_width` (a float) picks the pyramid level, so the level is fixed per step and
        the learned half-width varies the sampling smoothly around it.
        """
        b, d = centers.shape
        assert d == self.spatial_dims and half_widths.shape == (b,), (centers.shape, half_widths.shape)
        patches = []
        for k in range(self.num_scales):
            ring = 2.0**k
            index = pyramid.level_for(nominal_half_width * ring, self.glimpse_size)
            image = pyramid.level(index)
            view = (b,) + (1,) * d + (d,)
            grid = centers.view(view) + (half_widths * ring).view((b,) + (1,) * (d + 1)) * self.grid.to(centers.dtype)
            scale = pyramid.extent_scale(index)
            if scale is not None:  # the level spans past the image: read it where the image's points lie
                grid = (grid + 1) * grid.new_tensor(scale) - 1
            patches.append(F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
        return torch.cat(patches, dim=1)


def glimpse_boxes(centers: torch.Tensor, half_widths: torch.Tensor, num_scales: int) -> torch.Tensor:
    """Footprints of every ring: centers (B, T, d), half_widths (B, T) -> (B, T, num_scales, 2d)
    as [lo_x, lo_y(, lo_z), hi_x, hi_y(, hi_z)] in normalised coordinates (may extend past +-1)."""
    rings = 2.0 ** torch.arange(num_scales, device=centers.device, dtype=centers.dtype)
    half = half_widths[..., None, None] * rings[:, None]  # (B, T, S, 1)
    c = centers[:, :, None, :]
    return torch.cat([c - half, c + half], dim=-1)
