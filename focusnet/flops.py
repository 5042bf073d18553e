"""FLOPs per image and parameter counts.

Built on `torch.utils.flop_counter.FlopCounterMode` (convolution and matmul counted as
2 x multiply-accumulates, torch's convention; elementwise ops, norms and activations
count zero). That counter has no formula for the sampling and pooling ops an attention
model relies on, so they would count zero; we add explicit formulas for them through
its `custom_mapping` (local to one count, nothing is registered globally):

| op (aten)                              | FLOPs counted                                            |
|----------------------------------------|----------------------------------------------------------|
| affine_grid_generator                  | 2*d*(d+1) per output location (theta @ [x, y, (z), 1])   |
| grid_sampler_2d / _3d                  | per location: 4d coordinate FLOPs + taps*(d-1) weight    |
|                                        | products; per location and channel: 2*taps (mul + add);  |
|                                        | taps: 2^d bilinear/trilinear, 4^d bicubic; nearest: 3d   |
|                                        | per location and nothing per channel (a copy)            |
| upsample_{bi,tri}linear / bicubic      | 2*taps per output element (nearest: 0, it is a copy)     |
| avg_pool, adaptive avg_pool, mean      | one add per input element covered by each output         |

d is the number of spatial dims. Conv/linear bias adds are not counted (torch's convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import ceil, floor, prod

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from focusnet.errors import FocusNetError

aten = torch.ops.aten

# grid_sampler interpolation_mode codes: 0 bilinear, 1 nearest, 2 bicubic
_GRID_TAPS = {0: lambda d: 2**d, 1: lambda d: 1, 2: lambda d: 4**d}


def _affine_grid_flop(theta_shape, size, align_corners, out_shape=None) -> int:
    """theta (N, d, d+1) applied to the homogeneous base grid: out (N, *S, d)."""
    d = out_shape[-1]
    return prod(out_shape[:-1]) * 2 * d * (d + 1)


def _grid_sampler_flop(input_shape, grid_shape, mode, padding_mode, align_corners, out_shape=None) -> int:
    """out (N, C, *S): per-location coordinate work + per-channel weighted tap sums."""
    n, c, *spatial = out_shape
    d = len(spatial)
    locations = n * prod(spatial)
    taps = _GRID_TAPS[mode](d)
    if mode == 1:  # nearest: unnormalise + round each coordinate, then a copy
        return locations * 3 * d
    per_location = 4 * d + taps * (d - 1)  # unnormalise (2) + fraction & complement (2) per dim
    return locations * per_location + locations * c * 2 * taps


def _interp_flop(taps_per_dim: int):
    def formula(input_shape, *args, out_shape=None, **kwargs) -> int:
        d = len(out_shape) - 2
        return 2 * taps_per_dim**d * prod(out_shape)

    return formula


def _avg_pool_flop(input_shape, kernel_size, *args, out_shape=None, **kwargs) -> int:
    d = len(out_shape) - 2
    k = tuple(kernel_size) * (d if len(kernel_size) == 1 else 1)
    return prod(out_shape) * prod(k)


def _covered(n_in: int, n_out: int) -> int:
    """Sum over adaptive-pool windows of their length along one dim."""
    return sum(ceil((i + 1) * n_in / n_out) - floor(i * n_in / n_out) for i in range(n_out))


def _adaptive_avg_pool_flop(input_shape, output_size, out_shape=None) -> int:
    n_in, n_out = input_shape[-len(output_size) :], out_shape[-len(output_size) :]
    lead = prod(out_shape[: -len(output_size)])
    return lead * prod(_covered(i, o) for i, o in zip(n_in, n_out, strict=True))


def _mean_flop(input_shape, *args, out_shape=None, **kwargs) -> int:
    """Global average pooling lowers to aten.mean: one add per input element."""
    return prod(input_shape)


EXTRA_FLOP_FORMULAS = {
    aten.affine_grid_generator: _affine_grid_flop,
    aten.grid_sampler_2d: _grid_sampler_flop,
    aten.grid_sampler_3d: _grid_sampler_flop,
    aten.upsample_bilinear2d: _interp_flop(2),
    aten.upsample_trilinear3d: _interp_flop(2),
    aten.upsample_bicubic2d: _interp_flop(4),
    aten.avg_pool2d: _avg_pool_flop,
    aten.avg_pool3d: _avg_pool_flop,
    aten._adaptive_avg_pool2d: _adaptive_avg_pool_flop,
    aten._adaptive_avg_pool3d: _adaptive_avg_pool_flop,
    aten.mean: _mean_flop,
}


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters(), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


def _count(model: nn.Module, x: torch.Tensor, **forward_kwargs) -> FlopCounterMode:
    """Run one eval-mode, no-grad forward under the counter; restores the training flag."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)
    try:
        with torch.no_grad(), counter:
            model(x, **forward_kwargs)
    finally:
        model.train(was_training)
    return counter


def _example(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    if len(input_shape) < 3 or input_shape[0] < 1:
        raise FocusNetError(
            f"input_shape must include the batch, e.g. (1, 1, 28, 28) or (1, 1, 28, 28, 28); got {tuple(input_shape)}"
        )
    device, dtype = _model_device_dtype(model)
    return torch.randn(tuple(input_shape), device=device, dtype=dtype)


def count_flops(model: nn.Module, input_shape: tuple, **forward_kwargs) -> int:
    """FLOPs per image of one forward pass on a random input of `input_shape`
    ((B, C, H, W) or (B, C, D, H, W), usually B=1), total divided by B.

    The input is created on the model's device and dtype; a model on the "meta" device
    is counted without computing anything (fine unless the forward is data-dependent).
    """
    return count_flops_on(model, _example(model, input_shape), **forward_kwargs)


def count_flops_on(model: nn.Module, x: torch.Tensor, **forward_kwargs) -> int:
    """FLOPs per image of `model(x, **forward_kwargs)`, averaged over the batch of x;
    use real images when the compute depends on the data (e.g. early stopping)."""
    return _count(model, x, **forward_kwargs).get_total_flops() // x.shape[0]


def flops_by_op(model: nn.Module, input_shape: tuple, **forward_kwargs) -> dict[str, int]:
    """Per-op FLOPs per image, e.g. {"aten.convolution": ..., "aten.grid_sampler_2d": ...}."""
    x = _example(model, input_shape)
    counts = _count(model, x, **forward_kwargs).get_flop_counts().get("Global", {})
    return {str(op): v // x.shape[0] for op, v in counts.items()}


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
