"""FocusNet: bio-inspired saccadic attention for 2D and 3D medical image classification."""

from .models import (
    AdvancedMPKBlock2D,
    AdvancedMPKBlock3D,
    CrossNormalization,
    EnhancedFocusNet2D,
    EnhancedFocusNet3D,
    FocusNet,
    FocusNetConfig,
    FocusTrace,
    PredictiveCodingGRU,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    # FocalLoss lives with the task definitions; imported lazily to keep `import focusnet` light.
    if name == "FocalLoss":
        from .tasks import FocalLoss

        return FocalLoss
    if name in ("load", "Predictor"):  # inference pulls in readers and exporters: only when used
        from . import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'focusnet' has no attribute {name!r}")


__all__ = [
    "AdvancedMPKBlock2D",
    "AdvancedMPKBlock3D",
    "CrossNormalization",
    "EnhancedFocusNet2D",
    "EnhancedFocusNet3D",
    "FocalLoss",
    "FocusNet",
    "FocusNetConfig",
    "FocusTrace",
    "PredictiveCodingGRU",
    "Predictor",
    "load",
]
