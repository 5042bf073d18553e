"""The training loop: official MedMNIST protocol by default, one code path for every model.

    run = train(TrainConfig(dataset="pneumoniamnist", epochs=100))
    run.run_dir  -> results/pneumoniamnist_20261126-101500/
    run.metrics  -> {"val": {...}, "test": {"acc", "auc", "acc_ci", "auc_ci", "ece", "n"}, ...}

Run folder (written by rank 0, every file atomically):
    config.json         the resolved TrainConfig plus the model and data descriptions
    log.csv             one row per epoch: lr, train loss, validation loss/ACC/AUC, timing
    best_model.pth      weights of the best-validation-AUC epoch (loads with weights_only=True)
    best_model.safetensors  the same weights
    last.pth            everything needed to --resume after the last complete epoch
    metrics.json        val and test ACC/AUC with bootstrap 95% CIs and ECE, for best_model; for
                        FocusNet also early exit at the val-calibrated threshold (engine/early_exit.py)
    <flag>_{val,test}_[AUC]x_[ACC]y@<run>.csv   predictions in the official evaluator's format
    report.html         self-contained report (figures embedded); rebuild with `focusnet report <run>`
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import math
import multiprocessing
import os
import queue as queue_module
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..data import (
    Augment,
    BalancedTensorLoader,
    MedMNISTData,
    TensorLoader,
    balanced_weights,
    load_dataset,
    prepare_custom,
)
from ..data.augment import label_preserving_flip_axes
from ..data.custom import data_version
from ..data.custom import flag_hint as custom_flag
from ..errors import FocusNetError, shared_error
from ..fileio import atomic_path, ensure_dir, link_latest, write_json, write_text
from ..flops import count_flops, count_params
from ..metrics import official_csv_name, save_official_csv, single_class_columns
from ..models.factory import build_model, model_config
from ..models.focusnet import FocusNet
from ..tasks import make_criterion
from . import checkpoint as ckpt
from .config import TrainConfig
from .early_exit import early_exit_summary
from .distributed import (
    DistContext,
    barrier,
    broadcast_flag,
    broadcast_object,
    broadcast_weights,
    gather_objects,
    process_group,
    sync_buffers,
)
from .evaluator import (
    eval_loader,
    full_metrics,
    predict_logits,
    quick_metrics,
)
from .speed import autocast, cause_line, channels_last_format, compile_failed, to_channels_last, uses_autocast

LOG_FIELDS = ("epoch", "lr", "train_loss", "val_loss", "val_acc", "val_auc", "best", "epoch_s", "images_per_s", "skipped_steps")
# Options that may differ on --resume: where, how fast and how verbosely it runs (bf16 autocast
# changes the arithmetic's rounding, not the model or the protocol).
RESUME_FREE = ("device", "num_threads", "progress", "report", "data_dir", "amp", "amp_cpu", "channels_last", "compile")


class TrainingStopped(FocusNetError):
    """SIGINT/SIGTERM: stopped at a safe point; the run can be resumed."""

    exit_code = 130
    shared = True  # all ranks stop at the same batch (broadcast_flag)

    @property
    def what(self) -> str:
        """The message without its resume command (a multi-seed run names its own)."""
        return str(self).split("; resume ", 1)[0]


@dataclass
class RunResult:
    run_dir: str
    metrics: dict
    config: TrainConfig


class LossModel(nn.Module):
    """(x, y) -> (loss, logits). Wrapping the loss inside the module lets DDP see one forward that
    includes FocusNet's auxiliary predictive-coding loss, which needs `forward_trace`."""

    def __init__(self, model: nn.Module, criterion: nn.Module, prediction_loss_weight: float, step_loss_weight: float = 0.0) -> None:
        super().__init__()
        self.model, self.criterion = model, criterion
        focusnet = isinstance(model, FocusNet)
        self.aux = prediction_loss_weight if focusnet and model.config.predictive_coding else 0.0
        self.steps = step_loss_weight if focusnet and model.config.num_saccades else 0.0

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.aux or self.steps:
            trace = self.model.forward_trace(x)
            loss = self.criterion(trace.logits, y) + self.aux * trace.prediction_loss
            if self.steps:  # deep supervision: the glance and every saccade but the last must classify too
                earlier = trace.step_logits[:, :-1]
                loss = loss + self.steps * sum(self.criterion(earlier[:, t], y) for t in range(earlier.shape[1])) / earlier.shape[1]
            return loss, trace.logits
        logits = self.model(x)
        return self.criterion(logits, y), logits


class StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each batch (a second SIGINT aborts)."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopSignal:
        if hasattr(signal, "SIGTERM") and _in_main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# ----------------------------------------------------------------------------- setup


def _load_data(cfg: TrainConfig, ctx: DistContext) -> tuple[MedMNISTData, TrainConfig, dict | None]:
    """-> (data, cfg, split record). With `cfg.data` the user's files are converted (once, cached)
    into a registered custom-<name> dataset; the returned cfg names its flag, size and folder,
    so the run folder's config.json lets evaluate/report/visualize load it again."""
    # Rank 0 downloads, generates or converts first; the others then read the finished file, or
    # stop with rank 0's error (which rank 0 prints) instead of failing at a collective.
    if not ctx.is_main and (failure := broadcast_object(None, ctx)):
        raise shared_error(failure)
    try:
        record = None
        if cfg.data:
            prep = prepare_custom(cfg.data, cfg.size, cfg.task, cfg.on_bad_image)
            cfg = replace(cfg, dataset=prep.flag, size=prep.size, data_dir=prep.data_dir)
            record = prep.record
        data = load_dataset(cfg.dataset, cfg.size, cfg.data_dir, download=cfg.download, as_rgb=cfg.as_rgb)
        _check_scorable(data)
    except FocusNetError as e:
        if ctx.is_main:
            broadcast_object(str(e), ctx)
        raise
    if ctx.is_main:
        broadcast_object(None, ctx)
    return data, cfg, record


def _check_scorable(data: MedMNISTData) -> None:
    """Before any training: val AUC picks the best epoch and test AUC is reported, so both
    splits need every class (every label both present and absent)."""
    info = data.info
    for split in ("val", "test"):
        labels = data.splits[split].labels.numpy()
        columns = single_class_columns(labels, info.task, info.num_classes)
        if not columns:
            continue
        name = lambda i: repr(info.label_names.get(str(i), str(i)))  # noqa: E731
        if info.multi_label:
            found = ", ".join(f"label {name(i)} is {'on' if labels[0, i] else 'off'} in every image" for i in columns)
            fix = "each label both on and off"
        else:
            present = set(labels[:, 0].tolist())
            found = "there are no images of class " + ", ".join(name(i) for i in range(info.num_classes) if i not in present)
            fix = "images of every class"
        raise FocusNetError(f"{info.flag}: in the {split} split {found}, so AUC is undefined there; give {split} {fix}")


def data_description(data: MedMNISTData, cfg: TrainConfig) -> dict:
    """What a checkpoint must remember to preprocess new images like the training data."""
    info, images = data.info, data.splits["train"].images
    return {
        "flag": info.flag,
        "task": info.task,
        "num_classes": info.num_classes,
        "label_names": dict(info.label_names),
        "in_channels": int(images.shape[1]),
        "spatial_dims": info.spatial_dims,
        "size": cfg.size,
        "as_rgb": cfg.as_rgb,
        "source_channels": info.n_channels,  # before --as-rgb: predict makes colour grey for a model that only saw grey
        "mean": 0.5,
        "std": 0.5,
    } | ({"data_version": version} if (version := data_version(os.path.dirname(data.path))) else {})  # custom data: which preparation


def _loss_weights(data: MedMNISTData, cfg: TrainConfig) -> dict:
    """make_criterion's weights for --class-weights balanced, from the training split.
    Single-label: class_weights = inverse class frequency (n / (K * count)). Multi-label: each
    label is its own binary problem, so pos_weight = negatives / positives per label (a rare
    finding's positives weigh as much as its negatives), as BCEWithLogitsLoss's pos_weight."""
    if cfg.class_weights == "none":
        return {}
    labels, k = data.splits["train"].labels, data.info.num_classes
    counts = labels.sum(0).double() if data.info.multi_label else torch.bincount(labels[:, 0], minlength=k).double()
    names = [data.info.label_names.get(str(i), str(i)) for i in range(k)]
    if (counts == 0).any():
        missing = [names[i] for i in torch.nonzero(counts == 0)[:, 0].tolist()]
        raise FocusNetError(f"class-weighted loss needs every class in the training split; no examples of {missing}")
    if not data.info.multi_label:
        return {"class_weights": (counts.sum() / (k * counts)).float()}
    negatives = len(labels) - counts
    if (negatives == 0).any():
        always = [names[i] for i in torch.nonzero(negatives == 0)[:, 0].tolist()]
        raise FocusNetError(f"class-weighted loss needs negatives of every label in the training split; every image has {always}")
    return {"pos_weight": (negatives / counts).float()}


def _batch_size(cfg: TrainConfig, spatial_dims: int, ctx: DistContext) -> int:
    """Per-process batch: the global batch (128 in 2D, 32 in 3D by default) split over the ranks."""
    total = cfg.batch_size or (128 if spatial_dims == 2 else 32)
    if total % ctx.world_size:
        raise FocusNetError(f"batch size {total} does not divide over {ctx.world_size} processes; pick a multiple of {ctx.world_size}")
    return total // ctx.world_size


def _optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch. Official: x0.1 at 50% and 75% of the epochs (50 and 75 of 100)."""
    if cfg.scheduler == "multistep":
        milestones = sorted({max(1, int(m * cfg.epochs)) for m in cfg.milestones})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def dropout_seed(seed: int, rank: int) -> int:
    """Seed of a rank's own random stream (dropout masks): the ranks draw different masks, and
    seed 1's rank 0 is not seed 0's rank 1."""
    return seed + 1_000_003 * rank


def new_run_dir(output_dir: str, flag: str) -> str:
    """results/<flag>_<YYYYmmdd-HHMMSS>[_n]: a fresh folder that no other run uses."""
    ensure_dir(output_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = os.path.join(output_dir, f"{flag}_{stamp}" + (f"_{n}" if n > 1 else ""))
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue
    raise FocusNetError(f"cannot create a new run folder in {output_dir}; clean it up")


# ----------------------------------------------------------------------------- the run


def train(config: TrainConfig, resume: str | None = None, run_dir: str | None = None, link: bool = True, given: set[str] | None = None) -> RunResult:
    """Train, select the best-validation-AUC epoch, score it on val and test, write the run folder.

    resume: a run folder (or its last.pth) to continue after its last complete epoch; the stored
    config is used, except for RESUME_FREE options taken from `config`: those named in `given` (the
    flags the user gave), or when `given` is None, those that differ from the defaults.
    run_dir: write here instead of a new results/<flag>_<timestamp> folder.
    """
    state = None
    if resume:
        run_dir, state, config = _resume_state(resume, config, given)
        link = link and not os.path.basename(run_dir).startswith("seed_")  # one seed of a --seeds set: no <flag>_latest among the seeds
    try:
        cfg = config.resolved()
    except FocusNetError as e:  # a bad option: every process finds the same
        e.shared = True
        raise
    with process_group(cfg.device) as ctx:
        return _Run(cfg, ctx, run_dir, state, link).execute()


def _resume_state(resume: str, config: TrainConfig, given: set[str] | None = None) -> tuple[str, dict, TrainConfig]:
    path = os.path.join(resume, ckpt.LAST) if os.path.isdir(resume) else resume
    if not os.path.isfile(path):
        raise FocusNetError(f"nothing to resume at {resume}: no {ckpt.LAST} (a run saves it after its first epoch)")
    state = ckpt.load_train_state(path)
    if not isinstance(state.get("config"), dict):
        raise FocusNetError(f"{path} holds no training config; it is damaged: start a new run")
    stored = TrainConfig.from_dict(state["config"])
    if given is None:
        given = _changed_free_options(config)
    for name in set(RESUME_FREE) & given:  # an option not given keeps the run's own setting (its --data-dir, threads...)
        setattr(stored, name, getattr(config, name))
    run_dir = os.path.dirname(os.path.realpath(path))  # through <flag>_latest: the run folder itself, not the link
    _remove_stale_temporaries(run_dir)
    return run_dir, state, stored


def _changed_free_options(config: TrainConfig) -> set[str]:
    """Not told which flags the user gave: the RESUME_FREE options that differ from the defaults."""
    defaults = TrainConfig()
    return {name for name in RESUME_FREE if getattr(config, name) != getattr(defaults, name)}


def _remove_stale_temporaries(run_dir: str) -> None:
    """Temporary files (`<name>.<pid>.tmp`) that a killed process left behind in its run folder."""
    for name in os.listdir(run_dir):
        stem, _, pid = name[: -len(".tmp")].rpartition(".") if name.endswith(".tmp") else ("", "", "")
        if stem and pid.isdigit():
            with contextlib.suppress(OSError):
                os.remove(os.path.join(run_dir, name))


class _Run:
    """One training run; methods are the phases of `execute`."""

    def __init__(self, cfg: TrainConfig, ctx: DistContext, run_dir: str | None, state: dict | None, link: bool) -> None:
        self.cfg, self.ctx, self.state, self.link = cfg, ctx, state, link
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.data, cfg, self.split_record = _load_data(cfg, ctx)
        self.cfg = cfg
        info = self.data.info
        self.task = info.task
        self.data_desc = data_description(self.data, cfg)
        self.model_cfg = model_config(cfg.model, self.data_desc["in_channels"], info.num_classes, info.spatial_dims, cfg.model_options)
        torch.manual_seed(cfg.seed)  # same initial weights on every rank
        try:
            self.model = build_model(self.model_cfg).to(ctx.device)
        except (TypeError, ValueError) as e:  # e.g. --option width=abc
            raise FocusNetError(f"cannot build {self.model_cfg['name']} from these options ({type(e).__name__}: {str(e)[:160]}); check the model options") from None
        if cfg.channels_last:
            to_channels_last(self.model, info.spatial_dims)
        self.amp = uses_autocast(ctx.device, cfg.amp, cfg.amp_cpu)
        torch.manual_seed(dropout_seed(cfg.seed, ctx.rank))
        self.criterion = make_criterion(self.task, info.num_classes, cfg.loss, focal_gamma=cfg.focal_gamma, **_loss_weights(self.data, cfg)).to(ctx.device)
        self.val_criterion = copy.deepcopy(self.criterion).cpu()  # validation logits come back on the CPU
        self.loss_model: nn.Module = LossModel(self.model, self.criterion, cfg.prediction_loss_weight, cfg.step_loss_weight)
        if ctx.distributed:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.loss_model = nn.parallel.DistributedDataParallel(self.loss_model, device_ids=ids)
        if cfg.compile:  # the training step only: validation and the saved weights use the eager model
            self.loss_model = torch.compile(self.loss_model, backend=cfg.compile)
        self.optimizer = _optimizer(self.model.parameters(), cfg)
        self.scheduler = _scheduler(self.optimizer, cfg)
        self.batch_size = _batch_size(cfg, info.spatial_dims, ctx)
        self.train_loader = self._train_loader()
        self.val_loader = eval_loader(self.data.splits["val"], self.batch_size, ctx)
        self.run_dir = run_dir or broadcast_object(new_run_dir(cfg.output_dir, info.flag) if ctx.is_main else None, ctx)
        self.start_epoch, self.best, self.log = 0, {"epoch": 0, "auc": -math.inf}, []
        self.time_before = 0.0  # seconds of training spent before a resume
        if state is not None:
            self._restore(state)

    def _train_loader(self) -> TensorLoader:
        split, cfg, ctx = self.data.splits["train"], self.cfg, self.ctx
        per_rank = math.ceil(len(split) / ctx.world_size)
        info = self.data.info
        augment = Augment(info.spatial_dims, flip_axes=label_preserving_flip_axes(info.label_names, info.spatial_dims)) if cfg.augment else None
        # BatchNorm cannot train on a last batch of one sample; drop it in that one case.
        common = {"seed": cfg.seed, "drop_last": per_rank % self.batch_size == 1, "device": ctx.device, "augment": augment, "rank": ctx.rank, "world_size": ctx.world_size}
        if cfg.balanced_sampling:
            weights = balanced_weights(split.labels, self.data.info.multi_label, self.data.info.num_classes)
            return BalancedTensorLoader(split, self.batch_size, weights, **common)
        return TensorLoader(split, self.batch_size, shuffle=True, **common)

    # --- resume ---------------------------------------------------------------------------
    def _restore(self, state: dict) -> None:
        where = os.path.join(self.run_dir, ckpt.LAST)
        if isinstance(state.get("model"), dict) and "suppression_strength" in state["model"] and not hasattr(ckpt.unwrap(self.model), "suppression_strength"):
            raise FocusNetError(f"{where} was saved before 2026-11-27, when glance-only models held an unused parameter that its optimizer state still lists: it cannot be resumed; its best_model.pth still loads for evaluate and predict, or train it again")
        try:
            self.model.load_state_dict(state["model"])
        except (KeyError, TypeError, AttributeError, RuntimeError) as e:
            raise FocusNetError(f"{where}: weights do not fit the run's {self.model_cfg['name']} model ({ckpt.weights_mismatch(e)}); it is from another run or was edited") from None
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self._restore_rng(state["rng"])
            self.start_epoch, self.best, self.log = int(state["epoch"]), dict(state["best"]), list(state["log"])
            self.time_before = float(state.get("train_time_s", 0.0))  # absent before 2026-11-27
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise FocusNetError(f"{where}: its optimizer, schedule or progress do not fit this run ({type(e).__name__}: {str(e)[:120]}); it is damaged or from another run") from None
        if not 0 < self.start_epoch <= self.cfg.epochs:
            raise FocusNetError(f"{where} says epoch {self.start_epoch} of {self.cfg.epochs}; it is damaged or from another run")
        self._say(f"resuming {self.run_dir} after epoch {self.start_epoch}")

    def _rng_states(self) -> list[dict]:
        """Every rank's random streams (its dropout masks), in rank order; call on all ranks."""
        mine = {"torch": torch.get_rng_state()}
        if self.ctx.device.type == "cuda":  # dropout on a GPU draws from the device's generator
            mine["cuda"] = torch.cuda.get_rng_state(self.ctx.device)
        return gather_objects(mine, self.ctx)

    def _restore_rng(self, rng: dict) -> None:
        """Continue this rank's random streams where the checkpoint left them, so a resumed run
        draws the dropout masks the uninterrupted one would have. A rank the checkpoint has no
        state for (resumed on more processes) keeps its fresh `dropout_seed` stream; a checkpoint
        from before per-rank states ({"torch": state}) holds rank 0's alone."""
        ranks = rng["ranks"] if "ranks" in rng else [{"torch": rng["torch"]}]
        if self.ctx.rank >= len(ranks):
            return
        mine = ranks[self.ctx.rank]
        torch.set_rng_state(mine["torch"])
        if "cuda" in mine and self.ctx.device.type == "cuda":  # a run moved between CPU and GPU starts that stream afresh
            torch.cuda.set_rng_state(mine["cuda"], self.ctx.device)

    def _save_train_state(self, epoch: int, rng: list[dict]) -> None:
        state = {
            "format": ckpt.TRAIN_STATE_FORMAT,
            "version": ckpt.VERSION,
            "config": self.cfg.to_dict(),
            "epoch": epoch,
            "model": ckpt.cpu_state_dict(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"ranks": rng},
            "best": self.best,
            "log": self.log,
            "train_time_s": self._train_time(),
        }
        ckpt.save_torch(state, os.path.join(self.run_dir, ckpt.LAST))

    def _train_time(self) -> float:
        """Seconds of training so far, the time before a resume included (the interrupted part of
        an epoch is not: that epoch is trained again)."""
        return self.time_before + time.perf_counter() - self.started

    # --- phases ---------------------------------------------------------------------------
    def execute(self) -> RunResult:
        if self.ctx.is_main:
            self._write_config()
        self.started = time.perf_counter()
        with StopSignal() as stop:
            for epoch in range(self.start_epoch, self.cfg.epochs):
                self._train_epoch(epoch, stop)
                if broadcast_flag(stop.received is not None, self.ctx):  # arrived during validation: stop before the next phase
                    self._stopped(stop.received or "a stop signal")
        metrics = self._final_metrics(self._train_time())
        if self.ctx.is_main:
            self._write_results(metrics)
            self._print_summary(metrics)
            if self.cfg.report:
                from ..viz.report import (
                    write_report_or_warn,  # here, so matplotlib loads only once a run ends
                )

                write_report_or_warn(self.run_dir, self.ctx.device)  # prints a warning instead of raising
        return RunResult(self.run_dir, metrics, self.cfg)

    def _write_config(self) -> None:
        write_json(os.path.join(self.run_dir, "config.json"), {"train": self.cfg.to_dict(), "model": self.model_cfg, "data": self.data_desc})
        if self.split_record is not None:  # custom data: which file went to which split
            write_json(os.path.join(self.run_dir, "split.json"), self.split_record)

    def _train_epoch(self, epoch: int, stop: StopSignal) -> None:
        cfg, loader = self.cfg, self.train_loader
        loader.set_epoch(epoch)
        self.loss_model.train()
        started, total, seen, skipped = time.perf_counter(), 0.0, 0, 0
        n_batches = min(len(loader), cfg.max_batches) if cfg.max_batches else len(loader)
        bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not self._progress(), dynamic_ncols=True)
        for b, (x, y, _) in enumerate(loader):
            if b == n_batches:
                break
            loss = self._step(x, y, epoch, b)
            if loss is None:
                skipped += 1
            else:
                total += loss * len(x)
                seen += len(x)
                bar.set_postfix(loss=f"{total / seen:.4f}")
            bar.update()
            if broadcast_flag(stop.received is not None, self.ctx):
                bar.close()
                self._stopped(stop.received or "a stop signal", during=epoch)
        bar.close()
        if skipped and skipped * 2 > n_batches:
            raise shared_error(f"epoch {epoch + 1}: {skipped} of {n_batches} steps had a non-finite loss; lower --lr{self._kept()}")
        if not torch.stack([p.detach().isfinite().all() for p in self.model.parameters()]).all():  # never save NaN weights over good ones
            raise shared_error(f"epoch {epoch + 1}: the weights became non-finite; lower --lr or set --grad-clip{self._kept()}")
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        elapsed = time.perf_counter() - started
        sync_buffers(self.model, self.ctx)  # every rank validates rank 0's model, the one saved
        val = quick_metrics(*predict_logits(self.model, self.val_loader, self.ctx, self.amp), self.task, self.val_criterion)
        improved = val["auc"] > self.best["auc"]
        if improved:
            self.best = {"epoch": epoch + 1, "auc": val["auc"], "acc": val["acc"]}
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": total / max(seen, 1), "val_loss": val["loss"], "val_acc": val["acc"], "val_auc": val["auc"], "best": int(improved), "epoch_s": elapsed, "images_per_s": seen * self.ctx.world_size / elapsed, "skipped_steps": skipped}
        self.log.append(row)
        rng = self._rng_states()
        if self.ctx.is_main:
            if improved:
                ckpt.save_model(self.run_dir, self.model, self.model_cfg, self.data_desc, epoch + 1, {"val": val})
            self._save_train_state(epoch + 1, rng)
            self._write_log()
            self._say(f"epoch {epoch + 1:>3}/{cfg.epochs}  loss {row['train_loss']:.4f}  val loss {val['loss']:.4f}  acc {val['acc']:.4f}  auc {val['auc']:.4f}{'  *' if improved else ''}  ({elapsed:.1f}s)")
        barrier(self.ctx)

    def _kept(self) -> str:
        """The end of a failed-training message: where the last good checkpoint is, if any."""
        if not os.path.isfile(os.path.join(self.run_dir, ckpt.LAST)):
            return " (no epoch finished, so no checkpoint was written)"
        return f" (the last good checkpoint is kept in {self.run_dir})"

    def _step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, b: int) -> float | None:
        cfg = self.cfg
        if cfg.channels_last:
            x = x.contiguous(memory_format=channels_last_format(x.dim() - 2))
        try:
            with autocast(self.ctx.device, self.amp):
                loss, _ = self.loss_model(x, y)
        except Exception as e:
            if cfg.compile and compile_failed(e):
                raise FocusNetError(f"torch.compile with backend {cfg.compile!r} failed ({cause_line(e)[:200]}); try --compile aot_eager, or train without --compile") from None
            raise
        if broadcast_flag(not torch.isfinite(loss), self.ctx):  # under torchrun every process skips or stops alike, or the gradient all-reduce falls out of step
            if cfg.nan_policy == "skip":
                self.optimizer.zero_grad(set_to_none=True)
                return None
            value = loss.item() if not torch.isfinite(loss) else "on another process"
            raise shared_error(f"non-finite loss ({value}) at epoch {epoch + 1}, batch {b + 1}; lower --lr or use --nan-policy skip{self._kept()}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        return float(loss.detach())

    def _stopped(self, signame: str, during: int | None = None) -> None:
        """during: the (0-based) epoch whose batches were interrupted; None: between epochs."""
        done = self.log[-1]["epoch"] if self.log else self.start_epoch
        where = f"{self.run_dir}/{ckpt.LAST} (after epoch {done})" if done else "nowhere yet (no epoch finished)"
        when = f"during epoch {during + 1}" if during is not None else f"after epoch {done}"
        raise TrainingStopped(f"stopped by {signame} {when}; progress saved {where}; resume with: focusnet train --resume {self.run_dir}")

    def _final_metrics(self, train_time: float) -> dict:
        """Reload the best epoch's weights (rank 0 reads them, the others receive them) and score
        val and test with CIs."""
        barrier(self.ctx)
        best_epoch = None
        if self.ctx.is_main:
            best = ckpt.load_checkpoint(os.path.join(self.run_dir, ckpt.BEST))
            self.model.load_state_dict(best.state_dict)
            best_epoch = best.epoch
        broadcast_weights(self.model, self.ctx)
        best_epoch = broadcast_object(best_epoch, self.ctx)
        metrics = {
            "dataset": self.data.info.flag,
            "size": self.cfg.size,
            "model": self.model_cfg["name"],
            "preset": self.cfg.preset,
            "seed": self.cfg.seed,
            "epochs": self.cfg.epochs,
            "best_epoch": best_epoch,
            "params": count_params(self.model),
            "flops_per_image": count_flops(self.model, (1, self.data_desc["in_channels"], *self.data.splits["test"].images.shape[2:])),
            "train_time_s": train_time,
            "world_size": self.ctx.world_size,
        }
        self.scores = {}
        looks = isinstance(self.model, FocusNet) and self.model.config.num_saccades > 0
        steps = {}  # split -> (step logits (N, T+1, K), labels): one pass gives the metrics and early exit
        for split in ("val", "test"):
            loader = eval_loader(self.data.splits[split], self.batch_size, self.ctx)
            logits, labels = predict_logits(self.model, loader, self.ctx, self.amp, steps=looks)
            if looks:
                steps[split], logits = (logits, labels), logits[:, -1]
            metrics[split], self.scores[split] = full_metrics(logits, labels, self.task, self.cfg.n_boot, self.cfg.seed)
        if looks:
            metrics["early_exit"] = early_exit_summary(*steps["val"], *steps["test"], self.task)
        if hasattr(self.model, "readout_gate"):  # readout="gated": how much the head learned to take from the saccades
            metrics["readout_gate"] = self.model.readout_gate.item()
        return metrics

    # --- outputs ---------------------------------------------------------------------------
    def _write_log(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, LOG_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.log)
        write_text(os.path.join(self.run_dir, "log.csv"), buf.getvalue())

    def _write_results(self, metrics: dict) -> None:
        name = os.path.basename(self.run_dir.rstrip("/"))
        for split in ("val", "test"):
            m = metrics[split]
            for old in os.listdir(self.run_dir):  # a resumed run replaces its earlier predictions
                if old.endswith(".csv") and f"_{split}_[AUC]" in old:
                    os.remove(os.path.join(self.run_dir, old))
            path = os.path.join(self.run_dir, official_csv_name(self.data.info.flag, split, m["auc"], m["acc"], name, self.cfg.size))
            with atomic_path(path) as tmp:
                save_official_csv(tmp, self.scores[split])
        write_json(os.path.join(self.run_dir, "metrics.json"), metrics)
        if self.link:
            link_latest(self.run_dir, os.path.join(os.path.dirname(os.path.abspath(self.run_dir)), f"{self.data.info.flag}_latest"))

    def _print_summary(self, m: dict) -> None:
        def line(split: str) -> str:
            s = m[split]
            return f"  {split:<5} ACC {s['acc']:.4f} [{s['acc_ci'][0]:.3f}, {s['acc_ci'][1]:.3f}]  AUC {s['auc']:.4f} [{s['auc_ci'][0]:.3f}, {s['auc_ci'][1]:.3f}]  ECE {s['ece']:.4f}  (n={s['n']})"

        self._say(f"{m['model']} on {m['dataset']} ({m['size']} px), best epoch {m['best_epoch']}/{m['epochs']}, {m['train_time_s']:.0f}s")
        self._say(line("val"))
        self._say(line("test"))
        if m.get("early_exit") and m["early_exit"]["threshold"] is not None:
            e = m["early_exit"]
            self._say(f"  early exit at confidence {e['threshold']:.2f} (calibrated on val): test ACC {e['test']['acc']:.4f} with {e['test']['mean_steps']:.2f} of {e['max_steps']} steps per image")
        if "readout_gate" in m:
            self._say(f"  gated readout: the saccades' learned share g = {m['readout_gate']:+.3f} (0: the glance alone, 1: the mean of all steps)")
        self._say(f"  run folder: {self.run_dir}")

    def _progress(self) -> bool:
        if not self.ctx.is_main:
            return False
        return self.cfg.progress if self.cfg.progress is not None else sys.stderr.isatty()

    def _say(self, message: str) -> None:
        if self.ctx.is_main:
            print(message, flush=True)


# ----------------------------------------------------------------------------- several seeds


SEEDS_PLAN = "seeds.json"  # in a multi-seed folder, written first: the seeds and the training options


def train_seeds(config: TrainConfig, seeds: list[int], workers: int = 1) -> tuple[str, dict]:
    """One run per seed in results/<flag>_<timestamp>/seed_<k>/, plus summary.json with mean and
    std (ddof=1) of every val/test metric. `<flag>_latest` points at the last seed's run. The
    folder's seeds.json records the plan, so `resume_seeds` can finish an interrupted set.

    workers > 1 trains that many seeds at once, each in its own process: worth it on a GPU, where
    one small model leaves the card mostly idle; on a CPU the processes only share the cores.
    """
    _check_workers(workers)
    if len(set(seeds)) != len(seeds):
        raise FocusNetError(f"--seeds lists a seed twice ({' '.join(map(str, seeds))}); each seed is one run, so list each once")
    if min(seeds) < 0:  # checked before any seed trains (a bad one used to fail after the others had run)
        raise FocusNetError(f"--seeds must be >= 0, got {min(seeds)}")
    cfg = config.resolved()
    with process_group(cfg.device) as ctx:  # under torchrun, one group for every seed
        parent = _new_seeds_folder(cfg, seeds, ctx)
        try:
            return _run_seeds(parent, cfg.to_dict(), list(seeds), workers)
        except FocusNetError as e:
            if ctx.is_main and not isinstance(e, TrainingStopped) and all(not os.listdir(os.path.join(parent, d)) for d in os.listdir(parent) if d.startswith("seed_")):
                shutil.rmtree(parent, ignore_errors=True)  # failed before any seed wrote a file (e.g. missing data): leave nothing behind
            raise


def _new_seeds_folder(cfg: TrainConfig, seeds: list[int], ctx: DistContext) -> str:
    """results/<flag>_<timestamp>/ with its seeds.json, made by rank 0; the other ranks learn its
    name (each made its own before, with empty seed folders and a second summary)."""
    parent = None
    if ctx.is_main:
        parent = new_run_dir(cfg.output_dir, custom_flag(cfg.data) if cfg.data else cfg.dataset)
        write_json(os.path.join(parent, SEEDS_PLAN), {"seeds": list(seeds), "train": cfg.to_dict()})
    return broadcast_object(parent, ctx)


def is_seeds_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, SEEDS_PLAN))


def resume_seeds(parent: str, config: TrainConfig | None = None, given: set[str] | None = None, workers: int = 1) -> tuple[str, dict]:
    """Finish a `train_seeds` folder: finished seeds are kept, interrupted ones resumed after
    their last complete epoch, seeds not started trained; then summary.json is (re)written.
    RESUME_FREE options are taken from `config` (device, threads, data folder): those named in
    `given`, or when `given` is None, those that differ from the defaults (as `train` does)."""
    _check_workers(workers)
    config = config or TrainConfig()
    given = _changed_free_options(config) if given is None else given
    try:
        with open(os.path.join(parent, SEEDS_PLAN), encoding="utf-8") as f:
            plan = json.load(f)
        seeds, options = [int(s) for s in plan["seeds"]], dict(plan["train"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FocusNetError(f"{os.path.join(parent, SEEDS_PLAN)} is unreadable ({type(e).__name__}); start the seeds again") from None
    for name in set(RESUME_FREE) & given:
        options[name] = getattr(config, name)
    with process_group(options.get("device", "auto")):
        return _run_seeds(parent, options, seeds, workers, given)


def _check_workers(workers: int) -> None:
    if workers < 1:
        raise FocusNetError(f"--seed-workers must be at least 1, got {workers}")
    if workers > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:  # each worker would join the process group
        raise FocusNetError("--seed-workers cannot be combined with torchrun; give the seeds one at a time to torchrun, or drop torchrun")


def _run_seeds(parent: str, options: dict, seeds: list[int], workers: int, given: set[str] | None = None) -> tuple[str, dict]:
    jobs = [(options, seed, os.path.join(parent, f"seed_{seed}"), given) for seed in seeds]
    if workers == 1 or len(seeds) == 1:
        results = []
        for job in jobs:
            results.append(_train_seed(*job))
            if results[-1][2]:  # stopped by a signal: the later seeds wait for the resume
                break
    else:
        results = _train_in_processes(jobs, workers)
    stopped = [why for _, _, why in results if why]
    if stopped or len(results) < len(jobs):
        raise TrainingStopped(f"{'; '.join(stopped) or 'stopped before every seed had run'}; resume every seed with: focusnet train --resume {parent}")
    summary = summarize_seeds([metrics for _, metrics, _ in results], seeds)
    if int(os.environ.get("RANK", "0")):  # under torchrun rank 0 alone writes the summary
        return parent, summary
    write_json(os.path.join(parent, "summary.json"), summary)
    flag = results[-1][1]["dataset"]  # the registered flag (a custom dataset's may carry a suffix)
    link_latest(results[-1][0], os.path.join(os.path.dirname(os.path.abspath(parent)), f"{flag}_latest"))
    for split in ("val", "test"):
        s = summary[split]
        print(f"{len(seeds)} seeds, {split}: ACC {s['acc']['mean']:.4f} +/- {s['acc']['std']:.4f}  AUC {s['auc']['mean']:.4f} +/- {s['auc']['std']:.4f}")
    print(f"  summary: {os.path.join(parent, 'summary.json')}")
    return parent, summary


def _train_in_processes(jobs: list[tuple], workers: int) -> list[tuple]:
    """Each job's `_train_seed` in its own spawned process (CUDA cannot be used in a forked one),
    `workers` at a time, in job order. A stop signal to this process is passed on to the running
    seeds, which stop at their next safe point, and no further seed starts; after a failure the
    running seeds finish and no further one starts. Returns the results of the seeds that ran."""
    mp = multiprocessing.get_context("spawn")
    queue = mp.Queue()
    pending, running, done, failure, halted = list(enumerate(jobs)), {}, {}, None, False
    with StopSignal() as stop:
        while pending or running:
            if failure is not None:  # the seeds already running finish; no further one starts
                pending.clear()
            if stop.received is not None and not halted:
                halted = True
                pending.clear()
                for p in running.values():
                    p.terminate()  # SIGTERM: its trainer stops at the next safe point and says so
            while pending and len(running) < workers:
                i, job = pending.pop(0)
                running[i] = mp.Process(target=_seed_process, args=(queue, i, *job))
                running[i].start()
            try:
                i, outcome = queue.get(timeout=0.2)
            except queue_module.Empty:
                for i, p in list(running.items()):
                    if not p.is_alive() and queue.empty():  # ended without a word: stopped before its trainer started, or killed
                        running.pop(i)
                        if not halted:
                            failure = failure or FocusNetError(f"the process training seed {jobs[i][1]} ended with exit code {p.exitcode} before reporting; see its output above")
                continue
            running.pop(i).join()
            if isinstance(outcome, BaseException):
                failure = failure or outcome
            else:
                done[i] = outcome
    if failure is not None:
        raise failure
    return [done[i] for i in sorted(done)]


def _seed_process(queue, index: int, *job) -> None:
    """A worker process: `_train_seed(*job)`, or the exception it raised, back through `queue`."""
    try:
        outcome = _train_seed(*job)
    except BaseException as e:  # noqa: BLE001 - the parent re-raises it
        outcome = e if isinstance(e, FocusNetError) else RuntimeError(f"seed {job[1]}: {type(e).__name__}: {e}")
    queue.put((index, outcome))


def _train_seed(options: dict, seed: int, folder: str, given: set[str] | None = None) -> tuple[str, dict | None, str | None]:
    """(run folder, metrics, None), or (run folder, None, what stopped it) after a stop signal.
    A finished seed is read back, an interrupted one resumed. Module-level: a worker process imports it."""
    _check_seed_folder(folder, options, seed)
    done = os.path.join(folder, "metrics.json")
    if os.path.isfile(done) and os.path.isfile(os.path.join(folder, ckpt.BEST)):
        with open(done, encoding="utf-8") as f:
            return folder, json.load(f), None
    config = TrainConfig.from_dict({**options, "seed": seed})
    try:
        if os.path.isfile(os.path.join(folder, ckpt.LAST)):
            result = train(config, resume=folder, link=False, given=given or set())
        else:
            os.makedirs(folder, exist_ok=True)
            result = train(config, run_dir=folder, link=False)
    except TrainingStopped as e:
        return folder, None, f"seed {seed}: {e.what}"
    return result.run_dir, result.metrics, None


def _check_seed_folder(folder: str, options: dict, seed: int) -> None:
    """A seed folder an earlier try left must hold this seed's run of the plan's settings."""
    path = os.path.join(folder, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)["train"]
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FocusNetError(f"{path} is unreadable ({type(e).__name__}); move {folder} away to train seed {seed} again") from None
    expected = {**options, "seed": seed}
    free = set(RESUME_FREE) | ({"dataset", "size"} if options.get("data") else set())  # custom data: the trainer names its flag
    differ = sorted(k for k, v in expected.items() if k not in free and stored.get(k) != v)
    if differ:
        raise FocusNetError(f"{folder} holds a run whose settings differ from {SEEDS_PLAN}'s ({', '.join(differ)}); move it away to train seed {seed} again")


def summarize_seeds(metrics: list[dict], seeds: list[int]) -> dict:
    out: dict = {"seeds": list(seeds), "runs": metrics}
    for split in ("val", "test"):
        out[split] = {}
        for key in ("acc", "auc", "ece"):
            values = np.array([m[split][key] for m in metrics], dtype=np.float64)
            out[split][key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0, "values": values.tolist()}
    return out
