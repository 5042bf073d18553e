"""A plain small CNN: the floor FocusNet has to beat at equal compute.

Six 3x3 conv-BN-ReLU layers (widths w, w, 2w, 2w, 4w, 4w; stride 2 at the third and fifth), then
the global max of each channel and a linear head: about 58 MFLOPs at 28x28 with w = 32, close to
FocusNet's. No attention, no recurrence. 2D and 3D through `spatial_dims`.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import check_input, conv_norm_act


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int = 2, width: int = 32) -> None:
        super().__init__()
        self.in_channels, self.spatial_dims = in_channels, spatial_dims
        d, w = spatial_dims, width
        self.body = nn.Sequential(
            conv_norm_act(d, in_channels, w), conv_norm_act(d, w, w),
            conv_norm_act(d, w, 2 * w, stride=2), conv_norm_act(d, 2 * w, 2 * w),
            conv_norm_act(d, 2 * w, 4 * w, stride=2), conv_norm_act(d, 4 * w, 4 * w),
        )  # fmt: skip
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> logits (B, num_classes)"""
        check_input(x, self.spatial_dims, self.in_channels, "SmallCNN", self.head.weight.dtype)
        return self.head(self.body(x).flatten(2).amax(2))
