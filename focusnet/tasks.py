"""Task type -> output activation, label format and loss.

MedMNIST has four task types. Labels always arrive from the data loader as int64 of
shape (B, L): L = 1 for single-label tasks, L = number of labels for multi-label.
Models always return raw logits (B, K); the loss is applied to logits, never to
probabilities (the original code applied a loss on top of log-softmax/sigmoid).

| task                       | K (logits)     | activation | loss                  |
|----------------------------|----------------|------------|-----------------------|
| multi-label, binary-class  | number of labels | sigmoid  | BCE-with-logits       |
| binary-class               | 2              | softmax    | cross-entropy         |
| multi-class                | classes        | softmax    | cross-entropy         |
| ordinal-regression         | classes        | softmax    | cross-entropy         |

Binary tasks use two logits and softmax, as the official MedMNIST experiments do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from focusnet.errors import FocusNetError

MULTI_LABEL = "multi-label, binary-class"
BINARY = "binary-class"
MULTI_CLASS = "multi-class"
ORDINAL = "ordinal-regression"
TASKS = (MULTI_LABEL, BINARY, MULTI_CLASS, ORDINAL)
LOSSES = ("ce", "focal")

Weights = Sequence[float] | torch.Tensor | None


def check_task(task: str) -> str:
    """Return `task` if it is a MedMNIST task type, else raise a one-line FocusNetError."""
    if task not in TASKS:
        raise FocusNetError(f"unknown task {task!r}; use one of {', '.join(map(repr, TASKS))}")
    return task


@dataclass(frozen=True)
class TaskSpec:
    """What a task needs from a model and a loss.

    task: MedMNIST task type, e.g. "multi-class".
    num_classes: number of output logits K (classes, or labels for multi-label; 2 for binary).
    multi_label: True only for "multi-label, binary-class" (independent sigmoid per label).
    """

    task: str
    num_classes: int
    multi_label: bool

    def __post_init__(self) -> None:
        check_task(self.task)
        if self.multi_label != (self.task == MULTI_LABEL):
            raise FocusNetError(
                f"multi_label={self.multi_label} contradicts task {self.task!r}; "
                "use TaskSpec.from_task(task, num_classes) to derive it"
            )
        minimum = 1 if self.multi_label else 2
        if self.num_classes < minimum:
            raise FocusNetError(
                f"task {self.task!r} needs num_classes >= {minimum}, got {self.num_classes} "
                "(binary-class uses 2 logits)"
            )

    @classmethod
    def from_task(cls, task: str, num_classes: int) -> TaskSpec:
        return cls(check_task(task), int(num_classes), task == MULTI_LABEL)

    @classmethod
    def from_info(cls, info: Mapping) -> TaskSpec:
        """From a `medmnist.INFO[flag]` entry: its "task" and its "label" dict."""
        return cls.from_task(info["task"], len(info["label"]))

    @property
    def activation(self) -> str:
        """Output activation: sigmoid for multi-label, else softmax over dim 1 of (B, K) logits."""
        return "sigmoid" if self.multi_label else "softmax"

    @property
    def label_columns(self) -> int:
        """L in the loader's (B, L) int64 labels."""
        return self.num_classes if self.multi_label else 1


def _as_weight(weights: Weights, num_classes: int, name: str) -> torch.Tensor | None:
    """(K,) float tensor from a list/tensor, or None."""
    if weights is None:
        return None
    w = torch.as_tensor(weights, dtype=torch.float32).flatten()
    if w.numel() != num_classes:
        raise FocusNetError(f"{name} has {w.numel()} values but the task has {num_classes} classes; give one per class")
    return w


class FocalLoss(nn.Module):
    """Focal loss on logits (Lin et al. 2017): mean of alpha_t * (1 - p_t)^gamma * CE.

    Single-label: logits (B, K), targets (B,) int64; p_t = softmax(logits)[target].
    Multi-label:  logits (B, K), targets (B, K) in {0, 1}; p_t per element from sigmoid.
    gamma=0 and alpha=None give exactly cross-entropy / BCE-with-logits.

    alpha: None; a (K,) sequence/tensor of per-class weights (single-label: weighted mean
    normalised by the weights, like `CrossEntropyLoss(weight=...)`; multi-label: per-label
    weight, like `BCEWithLogitsLoss(weight=...)`); or, multi-label only, a float in [0, 1]
    weighting positives by alpha and negatives by 1 - alpha (torchvision's sigmoid_focal_loss).
    pos_weight (multi-label): None or (K,) weights of each label's positive terms, like
    `BCEWithLogitsLoss(pos_weight=...)`.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | Weights = None, multi_label: bool = False, pos_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        if gamma < 0:
            raise FocusNetError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.multi_label = multi_label
        self.alpha_scalar: float | None = None
        alpha_vec = None
        if isinstance(alpha, (int, float)):
            if not multi_label or not 0.0 <= alpha <= 1.0:
                raise FocusNetError(
                    "a scalar focal alpha in [0, 1] is only defined for multi-label tasks; "
                    "give one weight per class instead"
                )
            self.alpha_scalar = float(alpha)
        elif alpha is not None:
            alpha_vec = torch.as_tensor(alpha, dtype=torch.float32).flatten()
        self.register_buffer("alpha", alpha_vec)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.multi_label:
            return self._multi_label(logits, targets.to(logits.dtype))
        return self._single_label(logits, targets)

    def _modulate(self, ce: torch.Tensor) -> torch.Tensor:
        """(1 - p_t)^gamma * ce with p_t = exp(-ce); gamma=0 skipped so it is exactly ce."""
        if self.gamma == 0:
            return ce
        return (1 - torch.exp(-ce)).clamp(min=0).pow(self.gamma) * ce

    def _single_label(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, targets, reduction="none")  # (B,)
        loss = self._modulate(ce)
        if self.alpha is None:
            return loss.mean()
        w = self.alpha.to(loss.dtype)[targets]  # (B,)
        return (w * loss).sum() / w.sum()

    def _multi_label(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # (B, K)
        loss = self._modulate(ce)
        if self.alpha_scalar is not None:
            loss = (self.alpha_scalar * targets + (1 - self.alpha_scalar) * (1 - targets)) * loss
        elif self.alpha is not None:
            loss = self.alpha.to(loss.dtype) * loss
        if self.pos_weight is not None:  # as BCE's pos_weight: positives x w, negatives x 1
            loss = (self.pos_weight.to(loss.dtype) * targets + 1 - targets) * loss
        return loss.mean()


class CrossEntropy(nn.Module):
    """Cross-entropy on (B, K) logits with (B,) class targets, or BCE-with-logits with
    (B, K) {0, 1} targets when multi_label. The optional (K,) weight (and, multi-label, the
    positives' pos_weight) follow the logits' dtype, so float64 or bfloat16 logits work
    without moving the criterion."""

    def __init__(self, weight: torch.Tensor | None = None, multi_label: bool = False, pos_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.multi_label = multi_label
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.to(logits.dtype)
        if self.multi_label:
            pw = None if self.pos_weight is None else self.pos_weight.to(logits.dtype)
            return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), weight=w, pos_weight=pw)
        return F.cross_entropy(logits, targets, weight=w)


class TaskLoss(nn.Module):
    """Adapts the loader's (B, L) int64 labels to a loss on (B, K) logits.

    Single-label: labels[:, 0] as class indices. Multi-label: labels as float targets.
    """

    def __init__(self, spec: TaskSpec, loss: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.loss = loss

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        L = self.spec.label_columns
        if logits.ndim != 2 or logits.shape[1] != self.spec.num_classes:
            raise FocusNetError(
                f"logits must be (B, {self.spec.num_classes}) for task {self.spec.task!r}, "
                f"got {tuple(logits.shape)}; build the model with num_classes={self.spec.num_classes}"
            )
        if labels.ndim == 1 and not self.spec.multi_label:
            labels = labels[:, None]  # tolerate (B,) class indices
        if labels.shape != (logits.shape[0], L):
            raise FocusNetError(
                f"labels must be (B, L) = ({logits.shape[0]}, {L}) for task {self.spec.task!r}, "
                f"got {tuple(labels.shape)}"
            )
        if self.spec.multi_label:
            return self.loss(logits, labels.to(logits.dtype))
        return self.loss(logits, labels[:, 0].long())


def make_criterion(
    task: str,
    num_classes: int,
    loss: str = "ce",
    class_weights: Weights = None,
    focal_gamma: float = 2.0,
    pos_weight: Weights = None,
) -> nn.Module:
    """Loss module for `task`: call it as criterion(logits (B, K), labels (B, L) int64) -> scalar.

    loss="ce": cross-entropy (single-label) or BCE-with-logits (multi-label).
    loss="focal": FocalLoss with gamma=focal_gamma.
    class_weights: optional (K,) weights (CE `weight`, BCE per-label `weight`, focal `alpha`).
    pos_weight: multi-label only, optional (K,) weights of each label's positive terms (BCE
    `pos_weight`; focal likewise), e.g. negatives / positives per label against imbalance.
    """
    spec = TaskSpec.from_task(task, num_classes)
    weight = _as_weight(class_weights, spec.num_classes, "class_weights")
    positives = _as_weight(pos_weight, spec.num_classes, "pos_weight")
    if positives is not None and not spec.multi_label:
        raise FocusNetError(f"pos_weight is for multi-label tasks; task {task!r} takes class_weights instead")
    if loss == "focal":
        inner: nn.Module = FocalLoss(focal_gamma, weight, spec.multi_label, positives)
    elif loss == "ce":
        inner = CrossEntropy(weight, spec.multi_label, positives)
    else:
        raise FocusNetError(f"unknown loss {loss!r}; use one of {', '.join(map(repr, LOSSES))}")
    return TaskLoss(spec, inner)
