"""Scoring a model on a split exactly as the official MedMNIST evaluator does.

Predictions are gathered from every rank with their sample indices; the duplicates that
distributed sampling pads in are dropped, so metrics equal the single-process ones.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch import nn

from ..data import MedMNISTData, SplitArrays, TensorLoader, load_run_data
from ..errors import FocusNetError
from ..metrics import evaluate_predictions, get_acc, get_auc, probabilities
from .checkpoint import load_checkpoint
from .distributed import DistContext, gather_cat, pick_device
from .speed import autocast, to_channels_last, uses_autocast


def eval_loader(split: SplitArrays, batch_size: int, ctx: DistContext, mean: float = 0.5, std: float = 0.5) -> TensorLoader:
    return TensorLoader(split, batch_size, shuffle=False, device=ctx.device, mean=mean, std=std, rank=ctx.rank, world_size=ctx.world_size)


@torch.no_grad()
def predict_logits(model: nn.Module, loader: TensorLoader, ctx: DistContext, amp: bool = False, steps: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (logits float32 (N, K), labels int64 (N, L)) on the CPU in split order, each sample once.
    steps: a FocusNet's logits after every step instead, (N, T+1, K) (its forward_trace's
    step_logits; the last step is forward()'s logits), so early exit needs no second pass."""
    was_training = model.training
    model.eval()
    idx_parts, logit_parts, label_parts = [], [], []
    for x, y, idx in loader:
        with autocast(ctx.device, amp):
            logits = model.forward_trace(x).step_logits if steps else model(x)
        idx_parts.append(idx)
        logit_parts.append(logits.float())
        label_parts.append(y)
    model.train(was_training)
    idx = gather_cat(torch.cat(idx_parts), ctx).cpu()
    logits = gather_cat(torch.cat(logit_parts), ctx).cpu()
    labels = gather_cat(torch.cat(label_parts), ctx).cpu()
    n = len(loader.split)
    first = torch.full((n,), -1, dtype=torch.long)
    first.scatter_reduce_(0, idx, torch.arange(len(idx)), reduce="amin", include_self=False)  # first copy of each sample
    if (first < 0).any():
        raise RuntimeError("evaluation missed samples; the loader must cover the whole split")
    return logits[first], labels[first]


def quick_metrics(logits: torch.Tensor, labels: torch.Tensor, task: str, criterion: nn.Module | None = None) -> dict:
    """ACC, AUC (and loss) without confidence intervals: the per-epoch validation check."""
    y_score = probabilities(logits, task).numpy()
    y_true = labels.numpy()
    out = {"acc": get_acc(y_true, y_score, task), "auc": get_auc(y_true, y_score, task)}
    if criterion is not None:
        out["loss"] = float(criterion(logits, labels))
    return out


def full_metrics(logits: torch.Tensor, labels: torch.Tensor, task: str, n_boot: int, seed: int = 0) -> tuple[dict, np.ndarray]:
    """-> (metrics with bootstrap CIs and ECE, y_score (N, K) probabilities)."""
    y_score = probabilities(logits, task).numpy()
    return evaluate_predictions(labels.numpy(), y_score, task, n_boot=n_boot, seed=seed), y_score


def evaluate_checkpoint(path: str, split: str = "test", data_dir: str | None = None, device: str = "auto", batch_size: int | None = None, n_boot: int | None = None, seed: int | None = None) -> dict:
    """Re-score a saved model on one split of the data it was trained on.

    Defaults come from the run folder's config.json when there is one (same bootstrap seed and
    resamples), so the result reproduces the run's metrics.json exactly.
    """
    if split not in ("train", "val", "test"):
        raise FocusNetError(f"unknown split {split!r}; use train, val or test")
    ck = load_checkpoint(path)
    train_cfg = _run_config(ck.path)
    n_boot = n_boot if n_boot is not None else train_cfg.get("n_boot", 1000)
    seed = seed if seed is not None else train_cfg.get("seed", 0)
    d = ck.data
    data = load_run_data(d, data_dir, train_cfg)  # the run's data folder, and its --no-download
    check_fits_data(ck.model_config, data, ck.path)
    ctx = DistContext(device=pick_device(device))
    model = ck.build(ctx.device)
    if train_cfg.get("channels_last"):  # the layout the run scored with
        to_channels_last(model, d["spatial_dims"])
    bs = batch_size or train_cfg.get("batch_size") or (128 if d["spatial_dims"] == 2 else 32)
    loader = eval_loader(data.splits[split], bs, ctx, d["mean"], d["std"])
    amp = uses_autocast(ctx.device, train_cfg.get("amp", True), train_cfg.get("amp_cpu", False))  # as the run scored it
    metrics, _ = full_metrics(*predict_logits(model, loader, ctx, amp), d["task"], n_boot, seed)
    return metrics


def check_fits_data(model_config: dict, data: MedMNISTData, path: str) -> None:
    """A model scores only the data it was built for: same task, classes, channels and dimensions."""
    info, channels = data.info, int(data.splits["test"].images.shape[1])
    found = {"num_classes": info.num_classes, "in_channels": channels, "spatial_dims": info.spatial_dims}
    for key, value in found.items():
        if model_config.get(key) != value:
            raise FocusNetError(f"{path}: the model has {key}={model_config.get(key)!r} but {info.flag} has {value}; this checkpoint was not trained on {info.flag}")


def _run_config(checkpoint_path: str) -> dict:
    path = os.path.join(os.path.dirname(os.path.abspath(checkpoint_path)), "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("train", {})
    except (OSError, ValueError):
        return {}
