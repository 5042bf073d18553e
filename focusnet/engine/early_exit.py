"""Confidence-based early exit: pick the threshold on the validation split, not by hand.

FocusNet can stop looking at an image once its prediction is confident
(`FocusNet.forward_early_exit`). Which confidence is "enough" depends on the dataset and on how
calibrated the trained model is: a fixed 0.9 saves nothing on a model that is rarely that sure.
The default threshold is therefore calibrated per checkpoint: the lowest threshold whose
validation ACC stays within `tolerance` (0.5 points) of the ACC with every fixation.

Every step's logits come out of one `forward_trace` pass (`predict_logits(..., steps=True)`), and in eval
mode each image is independent of the others in its batch, so the early-exit result for any
threshold is read off those logits without rerunning the model.
"""

from __future__ import annotations

import numpy as np
import torch

from ..metrics import get_acc, get_auc, probabilities
from ..models.focusnet import confidence
from ..tasks import MULTI_LABEL

TOLERANCE = 0.005  # 0.5 ACC points
GRID = tuple(np.round(np.arange(0.50, 1.0, 0.01), 2))  # candidate thresholds, lowest first


def exit_at(step_logits: torch.Tensor, threshold: float, multi_label: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """step_logits (N, T+1, K) -> (logits (N, K) at the first step whose confidence reaches
    `threshold` (the last step if none does), steps taken (N,) counting the glance as 1)."""
    n, steps, k = step_logits.shape
    sure = confidence(step_logits.reshape(n * steps, k), multi_label).reshape(n, steps) >= threshold
    sure[:, -1] = True  # everyone stops after the last fixation
    first = sure.float().argmax(dim=1)  # index of the first True
    return step_logits[torch.arange(n), first], first + 1


def calibrate_threshold(step_logits: torch.Tensor, labels: np.ndarray, task: str, tolerance: float = TOLERANCE) -> dict:
    """The lowest threshold in GRID whose ACC is within `tolerance` of all fixations' ACC.

    step_logits (N, T+1, K) and labels (N, L) of the validation split. Returns {"threshold",
    "acc", "acc_all", "mean_steps", "max_steps"}; threshold is None when no candidate keeps
    the accuracy (then every image takes every fixation)."""
    multi_label = task == MULTI_LABEL
    acc_all = get_acc(labels, probabilities(step_logits[:, -1], task).numpy(), task)
    for threshold in GRID:
        logits, steps = exit_at(step_logits, float(threshold), multi_label)
        acc = get_acc(labels, probabilities(logits, task).numpy(), task)
        if acc >= acc_all - tolerance - 1e-12:
            return {"threshold": float(threshold), "acc": acc, "acc_all": acc_all, "mean_steps": float(steps.float().mean()), "max_steps": step_logits.shape[1]}
    return {"threshold": None, "acc": acc_all, "acc_all": acc_all, "mean_steps": float(step_logits.shape[1]), "max_steps": step_logits.shape[1]}


def early_exit_summary(val_logits: torch.Tensor, val_labels: torch.Tensor, test_logits: torch.Tensor, test_labels: torch.Tensor, task: str) -> dict:
    """Calibrate the threshold on the validation step logits (N, T+1, K), then score the test
    split's with it (labels (N, L)).
    -> {"threshold", "tolerance", "max_steps", "val": {...}, "test": {"acc", "auc", "acc_all", "mean_steps"}}"""
    calibration = calibrate_threshold(val_logits, val_labels.numpy(), task)
    labels = test_labels.numpy()
    threshold = calibration["threshold"]
    logits, steps = exit_at(test_logits, 2.0 if threshold is None else threshold, task == MULTI_LABEL)
    scores = probabilities(logits, task).numpy()
    return {
        "threshold": threshold,
        "tolerance": TOLERANCE,
        "max_steps": calibration["max_steps"],
        "val": {k: calibration[k] for k in ("acc", "acc_all", "mean_steps")},
        "test": {
            "acc": get_acc(labels, scores, task),
            "auc": get_auc(labels, scores, task),
            "acc_all": get_acc(labels, probabilities(test_logits[:, -1], task).numpy(), task),
            "mean_steps": float(steps.float().mean()),
        },
    }
