"""Dimension-agnostic building blocks: one code path for 2D `(B, C, H, W)` and 3D `(B, C, D, H, W)`.

Every module in `focusnet.models` takes a `spatial_dims` argument (2 or 3), as MONAI's
networks do, and builds its convolutions and norms through these helpers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FocusNetError

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_BATCHNORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def check_spatial_dims(spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def conv(spatial_dims: int, in_ch: int, out_ch: int, kernel: int, stride: int = 1, bias: bool = False) -> nn.Module:
    """'Same'-padded convolution (spatial size divided by `stride`)."""
    return _CONV[spatial_dims](in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=bias)


class ViewBatchNorm(nn.Module):
    """BatchNorm with its own statistics and affine for each kind of view.

    FocusNet's encoder sees two kinds of input: the glance (the whole image, low-passed) and foveal
    glimpses (a zoomed part). A single BatchNorm would average their statistics, so in eval mode
    neither would be normalised as in training. The model sets `view` before each pass
    (`set_view`). Eval mode uses running statistics only: outputs stay independent of the batch.
    """

    def __init__(self, spatial_dims: int, channels: int, views: int = 1):
        super().__init__()
        self.norms = nn.ModuleList(_BATCHNORM[spatial_dims](channels) for _ in range(views))
        self.view = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norms[self.view](x)


def set_view(module: nn.Module, view: int) -> None:
    for m in module.modules():
        if isinstance(m, ViewBatchNorm):
            m.view = min(view, len(m.norms) - 1)


def conv_norm_act(spatial_dims: int, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, views: int = 1) -> nn.Sequential:
    return nn.Sequential(conv(spatial_dims, in_ch, out_ch, kernel, stride), ViewBatchNorm(spatial_dims, out_ch, views), nn.ReLU(inplace=True))


def avg_pool(x: torch.Tensor, factor: int | tuple[int, ...]) -> torch.Tensor:
    """Box-filter downsampling of a 2D or 3D batch by an integer factor, or one per axis (ceil
    mode keeps odd sides)."""
    if factor == 1:
        return x
    pool = F.avg_pool2d if x.dim() == 4 else F.avg_pool3d
    return pool(x, factor, ceil_mode=True, count_include_pad=False)


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """(B, C, *S) -> (B, C)"""
    return x.flatten(2).mean(dim=2)


class InputError(FocusNetError, ValueError):
    """An input batch the model cannot take: a FocusNetError (one line, exit code 2 in the CLI)
    that is also a ValueError, as it was before."""


def check_input(x: torch.Tensor, spatial_dims: int, in_channels: int, name: str, dtype: torch.dtype = torch.float32) -> None:
    """Fail at the module boundary with one line that says which shape (and dtype: the model's,
    float32 unless it was converted) was expected."""
    layout = "(B, C, H, W)" if spatial_dims == 2 else "(B, C, D, H, W)"
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise InputError(f"{name} expects a floating-point tensor {layout}, got {type(x).__name__} {getattr(x, 'dtype', '')}")
    if x.dtype != dtype:
        raise InputError(f"{name} expects {str(dtype).replace('torch.', '')} input (the model's dtype), got {str(x.dtype).replace('torch.', '')}; convert it with .to({dtype})")
    if x.dim() != spatial_dims + 2:
        raise InputError(f"{name} expects a {spatial_dims}D batch {layout}, got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise InputError(f"{name} expects {in_channels} channel(s) in dim 1 of {layout}, got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or min(x.shape[2:]) < 2:
        raise InputError(f"{name} needs a non-empty batch and spatial sides >= 2, got shape {tuple(x.shape)}")
