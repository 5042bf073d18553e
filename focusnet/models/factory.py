"""Build any model the trainer knows by name, from plain values (so a checkpoint can rebuild it)."""

from __future__ import annotations

from torch import nn

from ..errors import FocusNetError
from .focusnet import FocusNet, FocusNetConfig
from .resnet import RESNETS
from .smallcnn import SmallCNN

MODEL_NAMES = ("focusnet", "smallcnn", *RESNETS)


def resolve_model_name(name: str, spatial_dims: int) -> str:
    """`resnet18` on volumes means the 3D ResNet-18; everything else must match the data."""
    if name == "resnet18" and spatial_dims == 3:
        return "resnet18_3d"
    if name not in MODEL_NAMES:
        raise FocusNetError(f"unknown model {name!r}; use one of {', '.join(MODEL_NAMES)}")
    model_dims = 3 if name.endswith("_3d") else 2 if name.startswith("resnet") else spatial_dims  # focusnet, smallcnn: both
    if model_dims != spatial_dims:
        raise FocusNetError(f"model {name!r} is {model_dims}D but the data is {spatial_dims}D; use 'focusnet' or 'resnet18'")
    return name


def model_config(name: str, in_channels: int, num_classes: int, spatial_dims: int, options: dict | None = None) -> dict:
    """The complete, plain-valued description of a model: what `build_model` needs and checkpoints store."""
    name = resolve_model_name(name, spatial_dims)
    options = dict(options or {})
    if name == "focusnet":
        try:
            cfg = FocusNetConfig.from_dict({**options, "in_channels": in_channels, "num_classes": num_classes, "spatial_dims": spatial_dims})
        except (TypeError, ValueError) as e:
            raise FocusNetError(f"bad FocusNet option: {e}") from e
        return {"name": name, **cfg.to_dict()}
    if options:
        raise FocusNetError(f"model {name!r} takes no options, got {sorted(options)}; FocusNet options apply to --model focusnet only")
    return {"name": name, "in_channels": in_channels, "num_classes": num_classes, "spatial_dims": spatial_dims}


def build_model(config: dict) -> nn.Module:
    """config from `model_config` -> freshly initialised model."""
    values = dict(config)
    name = values.pop("name")
    if name == "focusnet":
        return FocusNet(FocusNetConfig.from_dict(values))
    if name == "smallcnn":
        return SmallCNN(values["in_channels"], values["num_classes"], values["spatial_dims"])
    if name not in RESNETS:
        raise FocusNetError(f"unknown model {name!r} in config; use one of {', '.join(MODEL_NAMES)}")
    return RESNETS[name](values["in_channels"], values["num_classes"])
