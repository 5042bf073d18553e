"""Models: FocusNet (pathways, glimpse sensor, integrator) and the ResNet baselines."""

from .focusnet import (
    EnhancedFocusNet2D,
    EnhancedFocusNet3D,
    FocusNet,
    FocusNetConfig,
    FocusTrace,
)
from .integrator import PredictiveCodingGRU
from .pathways import (
    AdvancedMPKBlock2D,
    AdvancedMPKBlock3D,
    CrossNormalization,
    MPKBlock,
)

__all__ = [
    "AdvancedMPKBlock2D",
    "AdvancedMPKBlock3D",
    "CrossNormalization",
    "EnhancedFocusNet2D",
    "EnhancedFocusNet3D",
    "FocusNet",
    "FocusNetConfig",
    "FocusTrace",
    "MPKBlock",
    "PredictiveCodingGRU",
]
