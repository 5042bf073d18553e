"""New images -> the model's input, the way the training images were made.

MedMNIST images are uint8, square (or cubic) at the checkpoint's size, grey or RGB; the loader
feeds them as (x / 255 - mean) / std. An image from a file goes the same way:

1. intensities to 0..255: uint8 images are kept as they are (a MedMNIST-style PNG is used
   unchanged), and so are images of any other dtype whose values are all whole numbers in
   0..255 (a float or int64 copy of 8-bit pixels predicts as the pixels do); float images with
   every value in [0, 1] (torchvision's ToTensor convention) are scaled by 255; anything else
   (16-bit PNG/TIFF, CT in Hounsfield units, float NIfTI, ...) is stretched min-max over the
   whole image or volume, so its lowest value is 0 and its highest 255 (a constant image
   becomes 0). Booleans become 0 / 255; NaN and inf count as the minimum.
2. channels: to grey with the ITU-R 601 luma weights (0.299 R + 0.587 G + 0.114 B, as Pillow's
   "L") when the model takes one channel; grey repeated to RGB when it takes three. A model
   trained with --as-rgb on a grey dataset saw only R = G = B: a colour image is made grey
   first, then repeated. Alpha is dropped.
3. size: resized to size x size (x size) without keeping the aspect ratio (MedMNIST images are
   square), bilinear with antialiasing in 2D, trilinear in 3D after a box filter when shrinking
   by 2x or more along an axis (a 512 x 512 x 300 CT to 28^3 is not aliased; every voxel counts,
   also where an axis is not a multiple of the box).
4. rounded to whole grey levels in 0..255 (the training images were uint8), then
   (x / 255 - mean) / std with the checkpoint's mean and std.

A fixation the model reports in normalised coordinates u (x first, align_corners=False) sits at
pixel ((u + 1) n - 1) / 2 of the original image's side of n pixels: the resize stretches each
axis, so the mapping holds for any original size.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.registry import get_dataset_info
from ..errors import FocusNetError
from .readers import read_image

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Preprocess:
    """image (path, Source or array) -> float32 (C, *[size] * spatial_dims) model input."""

    spatial_dims: int
    in_channels: int
    size: int
    mean: float = 0.5
    std: float = 0.5
    grey_source: bool = False  # three channels made from grey ones (--as-rgb on grey data): colour in -> grey, repeated

    @classmethod
    def from_data(cls, data: dict) -> Preprocess:
        """From a checkpoint's data description."""
        in_channels = int(data["in_channels"])
        grey_source = bool(data.get("as_rgb")) and in_channels == 3 and _source_channels(data) == 1
        return cls(int(data["spatial_dims"]), in_channels, int(data["size"]), float(data["mean"]), float(data["std"]), grey_source)

    def __call__(self, image) -> torch.Tensor:
        return self.prepare(image)[0]

    def prepare(self, image) -> tuple[torch.Tensor, tuple[int, ...]]:
        """-> (model input (C, *S'), spatial shape of the original image)."""
        a = self.grey_levels(read_image(image, self.spatial_dims), _name(image))
        t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 0)))  # (C, *S)
        return self.normalise(self.resize(t)), tuple(a.shape[:-1])

    def grey_levels(self, a: np.ndarray, name: str = "image") -> np.ndarray:
        """(*S, C) in any dtype -> float32 (*S, in_channels) in 0..255 (steps 1 and 2)."""
        return self.channels(to_grey_levels(a, name))

    def channels(self, a: np.ndarray) -> np.ndarray:
        c = a.shape[-1]
        colour = a[..., :3] if c >= 3 else a[..., :1]  # drop alpha
        grey = colour @ LUMA[:, None] if c >= 3 else colour
        if self.in_channels == 1:
            return grey
        if self.in_channels == 3:
            return np.repeat(grey, 3, axis=-1) if self.grey_source or c < 3 else colour
        if c == self.in_channels:
            return a
        raise FocusNetError(f"the model takes {self.in_channels} channels; cannot make them from an image with {c}")

    def resize(self, t: torch.Tensor) -> torch.Tensor:
        """float (C, *S) -> (C, size, ...) (step 3)."""
        target = (self.size,) * self.spatial_dims
        if tuple(t.shape[1:]) == target:
            return t
        x = t[None].float()
        if self.spatial_dims == 2:
            x = F.interpolate(x, size=target, mode="bilinear", antialias=True, align_corners=False)
        else:
            k = tuple(max(1, n // self.size) for n in x.shape[2:])
            if max(k) > 1:  # box prefilter: trilinear alone would alias when shrinking a lot
                # adaptive: boxes of about k voxels that cover the whole axis (a fixed k would drop n mod k at the end)
                x = F.adaptive_avg_pool3d(x, [math.ceil(n / kk) for n, kk in zip(x.shape[2:], k)])
            x = F.interpolate(x, size=target, mode="trilinear", align_corners=False)
        return x[0]

    def normalise(self, t: torch.Tensor) -> torch.Tensor:
        """0..255 -> whole grey levels -> (x / 255 - mean) / std (step 4)."""
        x = t.float().clamp(0, 255).round()
        return (x / 255.0 - self.mean) / self.std


def to_grey_levels(a: np.ndarray, name: str = "image") -> np.ndarray:
    """Any dtype -> float32 in 0..255 (step 1 above): uint8 and whole numbers in 0..255 as they
    are, bool 0/255, floats in [0, 1] times 255, anything else min-max stretched."""
    if a.dtype == np.uint8:
        return a.astype(np.float32)
    if a.dtype == np.bool_:
        return a.astype(np.float32) * 255.0
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise FocusNetError(f"{name}: pixel type {a.dtype} is not a number type")
    floating = np.issubdtype(a.dtype, np.floating)
    a = a.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.all():
        if not finite.any():
            raise FocusNetError(f"{name}: every pixel is NaN or infinite")
        a = np.where(finite, a, a[finite].min())
    lo, hi = a.min(), a.max()
    if floating and lo >= 0 and hi <= 1:
        return (a * 255.0).astype(np.float32)
    if lo >= 0 and hi <= 255 and np.array_equal(a, np.round(a)):  # 8-bit grey levels held in another dtype
        return a.astype(np.float32)
    if hi <= lo:
        return np.zeros(a.shape, np.float32)
    return ((a - lo) * (255.0 / (hi - lo))).astype(np.float32)


def _source_channels(data: dict) -> int | None:
    """Channels of the training dataset's own images (before --as-rgb), from the checkpoint or,
    for checkpoints that predate the key, the dataset registry; None if unknown."""
    if "source_channels" in data:
        return int(data["source_channels"])
    try:
        return get_dataset_info(str(data["flag"])).n_channels
    except (FocusNetError, KeyError):
        return None


def _name(image) -> str:
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    return getattr(image, "name", None) or "image"
