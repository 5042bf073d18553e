"""focusnet.flops: hand-computed FLOPs for convs, sampling and pooling ops, ResNet totals."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from focusnet.errors import FocusNetError
from focusnet.flops import count_flops, count_flops_on, count_params, flops_by_op
from focusnet.models.resnet import resnet18, resnet18_3d


class Fn(nn.Module):
    """Wraps a function of the input so it can be counted like a model."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize(
    "conv, shape, expected",
    [
        # 2 * Cout * Hout * Wout * Cin * k * k (bias not counted)
        (nn.Conv2d(3, 8, 3, padding=1), (1, 3, 10, 10), 2 * 8 * 10 * 10 * 3 * 9),
        (nn.Conv2d(3, 8, 3, stride=2), (1, 3, 11, 11), 2 * 8 * 5 * 5 * 3 * 9),
        (nn.Conv2d(4, 8, 3, padding=1, groups=2), (1, 4, 6, 6), 2 * 8 * 36 * 2 * 9),
        (nn.Conv3d(2, 4, 3, padding=1), (1, 2, 5, 5, 5), 2 * 4 * 125 * 2 * 27),
        (nn.Linear(10, 5), (1, 10), 2 * 10 * 5),
    ],
)
def test_conv_and_linear_hand_computed(conv, shape, expected):
    assert count_flops_on(conv, torch.randn(shape)) == expected


def test_per_image_divides_by_batch():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, (4, 3, 10, 10)) == count_flops(conv, (1, 3, 10, 10)) == 43200


def test_grid_sample_2d_bilinear_and_nearest():
    grid = torch.rand(1, 5, 5, 2) * 2 - 1  # 25 output locations
    # bilinear, d=2: per location 4*2 coordinate + 4 taps*(2-1) weight FLOPs = 12,
    # per location and channel 4 taps * 2 = 8  ->  25*12 + 25*3*8 = 900
    bilinear = Fn(lambda x: F.grid_sample(x, grid, align_corners=False))
    assert count_flops(bilinear, (1, 3, 8, 8)) == 900
    nearest = Fn(lambda x: F.grid_sample(x, grid, mode="nearest", align_corners=False))
    assert count_flops(nearest, (1, 3, 8, 8)) == 25 * 2 * 3  # 3 per coordinate (unnormalise, round), then a copy


def test_grid_sample_3d_and_affine_grid():
    def glimpse(x):  # (1, 2, 4, 4, 4) -> (1, 2, 3, 3, 3): 27 locations
        theta = torch.tensor([[[0.5, 0, 0, 0.1], [0, 0.5, 0, 0], [0, 0, 0.5, -0.1]]])
        grid = F.affine_grid(theta, (1, 2, 3, 3, 3), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    by_op = flops_by_op(Fn(glimpse), (1, 2, 4, 4, 4))
    assert by_op["aten.affine_grid_generator"] == 27 * 2 * 3 * 4  # (3 x 4) @ (4,) per location
    # trilinear: per location 4*3 + 8*2 = 28; per channel 8 taps * 2 = 16
    assert by_op["aten.grid_sampler_3d"] == 27 * 28 + 27 * 2 * 16


def test_torch_alone_counts_grid_sample_as_zero():
    """Why the extra formulas exist (if torch adds its own, ours still take precedence)."""
    from torch.utils.flop_counter import FlopCounterMode

    x, grid = torch.randn(1, 3, 8, 8), torch.rand(1, 5, 5, 2)
    with FlopCounterMode(display=False) as counter:
        F.grid_sample(x, grid, align_corners=False)
    assert counter.get_total_flops() == 0


@pytest.mark.parametrize(
    "fn, expected",
    [
        (lambda x: F.avg_pool2d(x, 2), 3 * 16 * 4),  # 3 ch * 4x4 outputs * 2x2 window
        (lambda x: F.avg_pool2d(x, (2, 3)), 3 * 4 * 2 * 6),  # 4x2 outputs * 6-element window
        (lambda x: F.adaptive_avg_pool2d(x, 1), 3 * 64),  # lowers to mean: every input once
        (lambda x: F.adaptive_avg_pool2d(x, 4), 3 * 64),  # divides evenly: every input once
        (lambda x: F.adaptive_avg_pool2d(x, 3), 3 * 10 * 10),  # windows 3,4,3 overlap: 10 per dim
        (lambda x: F.interpolate(x, scale_factor=2, mode="bilinear"), 3 * 256 * 2 * 4),
        (lambda x: F.interpolate(x, scale_factor=2, mode="bicubic"), 3 * 256 * 2 * 16),
        (lambda x: F.interpolate(x, scale_factor=2, mode="nearest"), 0),
    ],
)
def test_pool_and_interpolation_2d(fn, expected):
    assert count_flops(Fn(fn), (1, 3, 8, 8)) == expected


def test_pool_and_interpolation_3d():
    assert count_flops(Fn(lambda x: F.avg_pool3d(x, 2)), (1, 2, 4, 4, 4)) == 2 * 8 * 8
    assert count_flops(Fn(lambda x: F.adaptive_avg_pool3d(x, 2)), (1, 2, 4, 4, 4)) == 2 * 64
    trilinear = Fn(lambda x: F.interpolate(x, size=(5, 5, 5), mode="trilinear"))
    assert count_flops(trilinear, (1, 2, 4, 4, 4)) == 2 * 125 * 2 * 8


def resnet18_cifar_flops_by_hand(in_ch: int, classes: int) -> int:
    """Sum of 2*Cin*Cout*k^2*positions over the convs of ResNet-18 at 28x28 (stages at
    28, 14, 7, 4 pixels), plus the global mean and the linear layer."""

    def conv(cin: int, cout: int, k: int, side: int) -> int:
        return 2 * cin * cout * k * k * side * side

    total = conv(in_ch, 64, 3, 28) + 4 * conv(64, 64, 3, 28)
    for cin, cout, side in ((64, 128, 14), (128, 256, 7), (256, 512, 4)):
        total += conv(cin, cout, 3, side) + 3 * conv(cout, cout, 3, side) + conv(cin, cout, 1, side)
    return total + 512 * 4 * 4 + 2 * 512 * classes


def test_resnet18_cifar_28():
    model = resnet18(1, 2)
    flops = count_flops(model, (1, 1, 28, 28))
    assert flops == resnet18_cifar_flops_by_hand(1, 2) == 911_601_664
    # ~0.56 GMACs at 32 px scaled by (28/32)^2 = 0.43 GMACs; 28 px keeps a 4x4 (not 3.5x3.5) last stage
    assert 0.85e9 < flops < 0.95e9
    assert model.training  # mode restored


def test_resnet18_3d_on_meta_device_without_compute():
    with torch.device("meta"):
        model = resnet18_3d(1, 2)
    assert count_flops(model, (1, 1, 28, 28, 28)) == 35_498_240_000


def test_count_params_counts_shared_once():
    lin = nn.Linear(10, 5)
    assert count_params(lin) == 55
    assert count_params(nn.Sequential(lin, nn.ReLU(), lin)) == 55
    lin.bias.requires_grad_(False)
    assert count_params(lin, trainable_only=True) == 50


def test_rejects_shape_without_batch():
    with pytest.raises(FocusNetError, match="batch"):
        count_flops(nn.Linear(3, 2), (3,))
