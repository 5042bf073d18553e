"""ResNet baselines of the official MedMNIST protocol, one implementation for 2D and 3D.

- `resnet18`, `resnet50`: CIFAR-style for 28-pixel input (3x3 stride-1 stem, no max-pool),
  as in MedMNIST/experiments `models.py`; PyTorch default init, as there.
- `resnet18_224`, `resnet50_224`: torchvision's ImageNet architecture (7x7 stride-2 stem,
  max-pool, torchvision's init) with `in_channels` and `num_classes` adapted, no pretrained
  weights. Module names follow torchvision, so its state_dicts load with strict=True.
- `resnet18_3d`: the CIFAR-style ResNet-18 with 3D convolutions, what the official 3D code
  gets from `Conv3dConverter(ResNet18)` (without i3d weight inflation, as nothing is pretrained).

Input (B, C, H, W) for spatial_dims=2 or (B, C, D, H, W) for 3; output logits (B, num_classes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from focusnet.errors import FocusNetError

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_BN = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_MAXPOOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVGPOOL = {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


def _downsample(dims: int, in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """1x1 projection shortcut when the residual changes shape, else None (identity)."""
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(
        _CONV[dims](in_planes, out_planes, kernel_size=1, stride=stride, bias=False), _BN[dims](out_planes)
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs + shortcut. (B, in_planes, *S) -> (B, planes, *S / stride)."""

    expansion = 1

    def __init__(self, dims: int, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        conv, bn = _CONV[dims], _BN[dims]
        self.conv1 = conv(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = bn(planes)
        self.conv2 = conv(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(dims, in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride, as torchvision v1.5), 1x1 expand x4, + shortcut."""

    expansion = 4

    def __init__(self, dims: int, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        conv, bn = _CONV[dims], _BN[dims]
        out_planes = planes * self.expansion
        self.conv1 = conv(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = bn(planes)
        self.conv2 = conv(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = bn(planes)
        self.conv3 = conv(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = bn(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(dims, in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Generic ResNet.

    block: BasicBlock or Bottleneck; layers: blocks per stage, e.g. (2, 2, 2, 2).
    spatial_dims: 2 (B, C, H, W) or 3 (B, C, D, H, W).
    stem: "cifar" (3x3 stride 1, no max-pool; 28-pixel input) or "imagenet"
    (7x7 stride 2 + 3x3 max-pool stride 2; 224-pixel input).
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        in_channels: int = 1,
        num_classes: int = 2,
        spatial_dims: int = 2,
        stem: str = "cifar",
    ) -> None:
        super().__init__()
        if spatial_dims not in _CONV or stem not in ("cifar", "imagenet"):
            raise FocusNetError(
                f"ResNet needs spatial_dims 2 or 3 and stem 'cifar' or 'imagenet', got {spatial_dims}, {stem!r}"
            )
        self.spatial_dims, self.in_channels, self.num_classes = spatial_dims, in_channels, num_classes
        d = spatial_dims
        if stem == "cifar":
            self.conv1 = _CONV[d](in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = _CONV[d](in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = _MAXPOOL[d](kernel_size=3, stride=2, padding=1)
        self.bn1 = _BN[d](64)
        self.relu = nn.ReLU(inplace=True)
        planes_in = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stage = []
            for j in range(n):
                stage.append(block(d, planes_in, planes, stride=2 if (i > 0 and j == 0) else 1))
                planes_in = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
        self.num_features = planes_in
        self.avgpool = _AVGPOOL[d](1)
        self.fc = nn.Linear(planes_in, num_classes)
        if stem == "imagenet":
            self._torchvision_init()

    def _torchvision_init(self) -> None:
        """Same init as torchvision.models.ResNet (zero_init_residual=False)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _check_input(self, x: torch.Tensor) -> None:
        layout = "(B, C, H, W)" if self.spatial_dims == 2 else "(B, C, D, H, W)"
        dtype = self.fc.weight.dtype
        if not isinstance(x, torch.Tensor) or x.dtype != dtype:
            got = f"{type(x).__name__} {getattr(x, 'dtype', '')}".strip()
            raise FocusNetError(f"ResNet expects a {str(dtype).replace('torch.', '')} tensor {layout}, got {got}; convert it with .to({dtype})")
        if x.ndim != self.spatial_dims + 2:
            batchless = x.ndim == self.spatial_dims + 1
            hint = "add a batch dimension" if batchless else "use a model of matching spatial_dims"
            raise FocusNetError(f"ResNet expects input {layout}, got shape {tuple(x.shape)}; {hint}")
        if x.shape[1] != self.in_channels:
            raise FocusNetError(
                f"ResNet was built for {self.in_channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)}); "
                f"build it with in_channels={x.shape[1]} or convert the images"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> feature map (B, num_features, *S / 8) (cifar) or (*S / 32) (imagenet)."""
        self._check_input(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """(B, num_features, *S') -> logits (B, num_classes)."""
        return self.fc(torch.flatten(self.avgpool(features), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> logits (B, num_classes)."""
        return self.forward_head(self.forward_features(x))


def resnet18(in_channels: int, num_classes: int) -> ResNet:
    """ResNet-18, CIFAR-style, 2D (MedMNIST "ResNet-18 (28)")."""
    return ResNet(BasicBlock, (2, 2, 2, 2), in_channels, num_classes, spatial_dims=2, stem="cifar")


def resnet50(in_channels: int, num_classes: int) -> ResNet:
    """ResNet-50, CIFAR-style, 2D (MedMNIST "ResNet-50 (28)")."""
    return ResNet(Bottleneck, (3, 4, 6, 3), in_channels, num_classes, spatial_dims=2, stem="cifar")


def resnet18_224(in_channels: int, num_classes: int) -> ResNet:
    """torchvision ResNet-18 architecture, 2D (MedMNIST "ResNet-18 (224)")."""
    return ResNet(BasicBlock, (2, 2, 2, 2), in_channels, num_classes, spatial_dims=2, stem="imagenet")


def resnet50_224(in_channels: int, num_classes: int) -> ResNet:
    """torchvision ResNet-50 architecture, 2D (MedMNIST "ResNet-50 (224)")."""
    return ResNet(Bottleneck, (3, 4, 6, 3), in_channels, num_classes, spatial_dims=2, stem="imagenet")


def resnet18_3d(in_channels: int, num_classes: int) -> ResNet:
    """ResNet-18 with 3D convs, CIFAR-style stem (MedMNIST "ResNet-18+3D" at 28^3)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), in_channels, num_classes, spatial_dims=3, stem="cifar")


RESNETS = {f.__name__: f for f in (resnet18, resnet50, resnet18_224, resnet50_224, resnet18_3d)}
