"""Balanced sampling: draw training images with probability inversely proportional to their
class frequency, so each class is seen about equally often per epoch.

`BalancedTensorLoader` is a TensorLoader whose epoch order is `len(split)` draws with
replacement (torch.multinomial, seeded by loader.order_seed, the same on every rank) instead of a
permutation; each rank then takes its DistributedSampler-style shard of that order, so
multi-process runs see one global balanced stream, exactly as with shuffling.
"""

from __future__ import annotations

import math

import torch

from ..errors import FocusNetError
from .loader import TensorLoader, order_seed


def class_counts(labels: torch.Tensor, multi_label: bool, num_classes: int) -> torch.Tensor:
    """labels int64 (N, L) -> float64 (K,): images per class (multi-label: positives per label)."""
    if multi_label:
        return labels.sum(0).double()
    return torch.bincount(labels[:, 0], minlength=num_classes).double()


def balanced_weights(labels: torch.Tensor, multi_label: bool, num_classes: int) -> torch.Tensor:
    """float64 (N,) sampling weight per image: 1 / (its class's count). Multi-label: the rarest of
    its positive labels decides; images without any positive label count as one more class."""
    counts = class_counts(labels, multi_label, num_classes)
    if not multi_label:
        return 1.0 / counts[labels[:, 0]]
    inv = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))  # (K,)
    per_image = (labels.double() * inv).amax(1)  # (N,)
    none = labels.sum(1) == 0
    if none.any():
        per_image[none] = 1.0 / none.sum().double()
    return per_image


class BalancedTensorLoader(TensorLoader):
    """TensorLoader with class-balanced sampling (with replacement); `shuffle` is implied."""

    def __init__(self, split, batch_size: int, weights: torch.Tensor, **kwargs) -> None:
        super().__init__(split, batch_size, shuffle=True, **kwargs)
        if weights.shape != (len(split),) or not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise FocusNetError("balanced sampling needs one finite, non-negative weight per training image")
        self.weights = weights.double()

    def indices(self) -> torch.Tensor:
        """int64 (num_samples,): this rank's shard of len(split) weighted draws for this epoch."""
        n = len(self.split)
        g = torch.Generator().manual_seed(order_seed(self.seed, self.epoch))
        order = torch.multinomial(self.weights, n, replacement=True, generator=g)
        total = self.num_samples * self.world_size
        if total > n:
            order = torch.cat([order, order.repeat(math.ceil((total - n) / n))[: total - n]])
        return order[self.rank : total : self.world_size]
