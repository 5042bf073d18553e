"""focusnet.models.resnet: shapes, parameter counts, torchvision equivalence, input checks."""

import pytest
import torch
import torchvision
from torch import nn

from focusnet.errors import FocusNetError
from focusnet.models.resnet import (
    RESNETS,
    resnet18,
    resnet18_3d,
    resnet18_224,
    resnet50,
    resnet50_224,
)


def on_meta(factory, *args):
    """Build without allocating or initialising weights: enough to count parameters."""
    with torch.device("meta"):
        return factory(*args)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    "factory, in_channels, shape, feature_shape",
    [
        (resnet18, 1, (2, 1, 28, 28), (512, 4, 4)),  # 28 -> 28, 14, 7, 4 (CIFAR stem keeps 28)
        (resnet18, 3, (2, 3, 28, 28), (512, 4, 4)),
        (resnet50, 1, (1, 1, 16, 16), (2048, 2, 2)),
        (resnet18_224, 3, (1, 3, 96, 96), (512, 3, 3)),  # /32 (224 -> 7)
        (resnet50_224, 1, (1, 1, 32, 32), (2048, 1, 1)),
        (resnet18_3d, 1, (2, 1, 4, 4, 4), (512, 1, 1, 1)),
        (resnet18_3d, 3, (1, 3, 8, 12, 16), (512, 1, 2, 2)),
    ],
)
def test_output_shapes(factory, in_channels, shape, feature_shape):
    model = factory(in_channels, 7).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model.forward_head(features)
    assert features.shape == (shape[0], *feature_shape)
    assert logits.shape == (shape[0], 7)
    assert model.num_features == feature_shape[0]


def test_imagenet_param_counts_match_torchvision():
    # torchvision: resnet18 11,689,512 and resnet50 25,557,032 parameters at 1000 classes
    assert n_params(on_meta(resnet18_224, 3, 1000)) == n_params(on_meta(torchvision.models.resnet18)) == 11_689_512
    assert n_params(on_meta(resnet50_224, 3, 1000)) == n_params(on_meta(torchvision.models.resnet50)) == 25_557_032


def test_cifar_param_counts():
    # kuangliu/pytorch-cifar ResNet18 at 3 channels, 10 classes: 11,173,962
    assert n_params(resnet18(3, 10)) == 11_173_962
    # 1 channel, 2 classes: the stem loses 2*64*9 weights, the head 8*513
    assert n_params(resnet18(1, 2)) == 11_173_962 - 2 * 64 * 9 - 8 * 513
    # 3D: every 3x3 kernel becomes 3x3x3 (x3 weights); 1x1 shortcuts, BN and fc unchanged
    m2 = resnet18(1, 2)
    k3 = sum(m.weight.numel() for m in m2.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert n_params(on_meta(resnet18_3d, 1, 2)) == n_params(m2) + 2 * k3 == 33_140_802


@pytest.mark.parametrize(
    "ours, theirs", [(resnet18_224, torchvision.models.resnet18), (resnet50_224, torchvision.models.resnet50)]
)
def test_imagenet_variant_is_torchvision(ours, theirs):
    """Same module names and shapes: torchvision weights load strictly and give the same logits."""
    ref = theirs(num_classes=5).eval()
    model = ours(3, 5).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))


def test_imagenet_variant_adapts_input_channels():
    assert on_meta(resnet18_224, 1, 2).conv1.weight.shape == (64, 1, 7, 7)
    assert on_meta(resnet18, 1, 2).conv1.weight.shape == (64, 1, 3, 3)
    assert on_meta(resnet18_3d, 2, 2).conv1.weight.shape == (64, 2, 3, 3, 3)


def test_every_parameter_gets_a_gradient():
    for model, x in ((resnet18(1, 3), torch.randn(2, 1, 8, 8)), (resnet18_3d(1, 3), torch.randn(2, 1, 4, 4, 4))):
        model(x).sum().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not missing


def test_input_checks():
    with pytest.raises(FocusNetError, match="in_channels=3"):
        resnet18(1, 2)(torch.randn(2, 3, 28, 28))
    with pytest.raises(FocusNetError, match="add a batch dimension"):
        resnet18(1, 2)(torch.randn(1, 28, 28))
    with pytest.raises(FocusNetError, match=r"\(B, C, D, H, W\)"):
        resnet18_3d(1, 2)(torch.randn(2, 1, 8, 8))
    with pytest.raises(FocusNetError, match="spatial_dims"):
        from focusnet.models.resnet import BasicBlock, ResNet

        ResNet(BasicBlock, (2, 2, 2, 2), spatial_dims=1)


def test_registry():
    assert set(RESNETS) == {"resnet18", "resnet50", "resnet18_224", "resnet50_224", "resnet18_3d"}
    assert on_meta(RESNETS["resnet18_3d"], 1, 2).spatial_dims == 3
