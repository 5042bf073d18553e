"""Training configuration: one dataclass of plain values, resolved from a preset plus overrides.

Presets
- "official": the MedMNIST protocol (Adam lr 1e-3, MultiStepLR x0.1 at 50% and 75% of the
  epochs, batch 128 in 2D / 32 in 3D, no augmentation, mean/std 0.5, best validation AUC).
- "strong": ours, reported separately: AdamW with weight decay, cosine schedule, batched
  augmentation and gradient clipping.
Fields left at None take the preset's value; the resolved config (no None left where a preset
decides) is what a run folder stores and what `--resume` checks against.
"""

from __future__ import annotations

import json
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace

from ..errors import FocusNetError

PRESETS = {
    "official": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "scheduler": "multistep", "augment": False, "grad_clip": 0.0},
    "strong": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-2, "scheduler": "cosine", "augment": True, "grad_clip": 1.0},
}
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("multistep", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
NAN_POLICIES = ("stop", "skip")
CLASS_WEIGHTS = ("none", "balanced")


@dataclass
class TrainConfig:
    dataset: str = "synth-lesion"  # a registered flag (`focusnet datasets`); replaced by custom-<name> with `data`
    data: str | None = None  # your own data: a MedMNIST-format .npz, an image folder or a CSV (README.md, section "Your own data")
    task: str | None = None  # custom data: binary | multi-class | multi-label (default: inferred)
    on_bad_image: str = "fail"  # custom data: an unreadable image stops the run ("fail") or is left out ("skip")
    size: int | str = 28  # custom data may say "native" (the images' own common size)
    data_dir: str | None = None  # default: $FOCUSNET_DATA_DIR or ~/.medmnist
    as_rgb: bool = False
    download: bool = True
    model: str = "focusnet"
    model_options: dict = field(default_factory=dict)  # FocusNetConfig fields, e.g. {"num_saccades": 4}
    preset: str = "official"
    epochs: int = 100
    batch_size: int | None = None  # None: 128 (2D) / 32 (3D)
    lr: float | None = None
    optimizer: str | None = None
    weight_decay: float | None = None
    scheduler: str | None = None
    milestones: tuple[float, ...] = (0.5, 0.75)  # MultiStepLR, as fractions of the epochs
    augment: bool | None = None
    grad_clip: float | None = None  # 0: off
    loss: str = "ce"  # "ce" (BCE for multi-label) or "focal"
    focal_gamma: float = 2.0
    class_weights: str = "none"  # "balanced": inverse class frequency of the training split (multi-label: pos_weight = negatives / positives per label)
    balanced_sampling: bool = False  # draw training images with probability 1 / class frequency
    prediction_loss_weight: float = 0.1  # FocusNet's auxiliary predictive-coding loss
    step_loss_weight: float = 0.0  # FocusNet: weight of the mean loss of the earlier steps' logits (deep supervision); 0 = final step only
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bfloat16 autocast on CUDA
    amp_cpu: bool = False  # bfloat16 autocast on the CPU too (opt-in: CPU runs stay exact float32 by default)
    channels_last: bool = False  # model weights and training batches in channels-last memory layout
    compile: str = ""  # torch.compile backend for the training step ("inductor"; "aot_eager" traces without code generation); "" = eager
    num_threads: int = 0  # 0: leave torch's default
    output_dir: str = "results"
    n_boot: int = 1000  # bootstrap resamples for the test confidence intervals
    nan_policy: str = "stop"  # non-finite loss: "stop" the run, or "skip" the step
    max_batches: int = 0  # >0: cap batches per epoch (smoke runs and tests only)
    report: bool = True  # write report.html at the end of the run
    progress: bool | None = None  # None: progress bars only when stderr is a terminal

    def resolved(self) -> TrainConfig:
        """A copy with preset values filled in and every value checked."""
        if self.preset not in PRESETS:
            raise FocusNetError(f"unknown preset {self.preset!r}; use one of {', '.join(PRESETS)}")
        filled = {k: v for k, v in PRESETS[self.preset].items() if getattr(self, k) is None}
        for name in ("data_dir", "data"):  # config.json names them for evaluate, report, --resume and --config, run from any folder
            if getattr(self, name):
                filled[name] = os.path.abspath(os.path.expanduser(getattr(self, name)))
        cfg = replace(self, **filled, milestones=tuple(self.milestones), model_options=dict(self.model_options))
        cfg._check()
        return cfg

    def _check(self) -> None:
        choices = {"optimizer": OPTIMIZERS, "scheduler": SCHEDULERS, "device": DEVICES, "nan_policy": NAN_POLICIES, "class_weights": CLASS_WEIGHTS, "loss": ("ce", "focal")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise FocusNetError(f"unknown {name} {getattr(self, name)!r}; use one of {', '.join(allowed)}")
        if isinstance(self.size, str) and not (self.size == "native" and self.data):
            raise FocusNetError(f"size must be a number of pixels ('native' only with --data), got {self.size!r}")
        if self.on_bad_image not in ("fail", "skip"):
            raise FocusNetError(f"unknown on_bad_image {self.on_bad_image!r}; use fail or skip")
        if self.epochs < 1:
            raise FocusNetError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise FocusNetError(f"batch size must be >= 1, got {self.batch_size}")
        if not (self.lr and math.isfinite(self.lr) and self.lr > 0):
            raise FocusNetError(f"learning rate must be a finite number > 0, got {self.lr}")
        for name in ("weight_decay", "grad_clip"):  # a negative clip norm flips the gradients' sign
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise FocusNetError(f"{name.replace('_', '-')} must be a finite number >= 0 (0: off), got {value}")
        for name, zero in (("num_threads", "torch's default"), ("max_batches", "no cap")):
            if getattr(self, name) < 0:
                raise FocusNetError(f"{name.replace('_', '-')} must be >= 0 (0: {zero}), got {getattr(self, name)}")
        if self.seed < 0:  # numpy's generators (the bootstrap) take no negative seed: it would fail after training
            raise FocusNetError(f"seed must be >= 0, got {self.seed}")
        if self.n_boot < 1:
            raise FocusNetError(f"n-boot (bootstrap resamples for the confidence intervals) must be >= 1, got {self.n_boot}")
        if self.compile:
            import torch._dynamo

            backends = sorted({*torch._dynamo.list_backends(), "eager", "aot_eager"})
            if self.compile not in backends:
                raise FocusNetError(f"unknown torch.compile backend {self.compile!r}; use one of {', '.join(backends)} (--compile alone means inductor)")
        if not all(math.isfinite(w) and w >= 0 for w in (self.prediction_loss_weight, self.step_loss_weight)):
            raise FocusNetError(f"loss weights must be finite and >= 0, got prediction {self.prediction_loss_weight}, step {self.step_loss_weight}")
        if any(not 0 < m < 1 for m in self.milestones):
            raise FocusNetError(f"milestones are fractions of the epochs in (0, 1), got {list(self.milestones)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise FocusNetError(f"unknown training option(s) {unknown} in config; known: {sorted(known)}")
        hints = typing.get_type_hints(cls)
        wrong = [f"{k}={v!r} (expected {_type_name(hints[k])})" for k, v in values.items() if not _type_ok(v, hints[k])]
        if wrong:
            raise FocusNetError(f"wrong type for training option(s) {', '.join(wrong)[:300]} in config")
        values = dict(values)
        if "milestones" in values:
            values["milestones"] = tuple(values["milestones"])
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _type_ok(value, hint) -> bool:
    """Does a plain (JSON) value fit a field's annotation? int passes for float, bool never for numbers."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint in (int, float):
        return isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
    if typing.get_origin(hint) is tuple:
        return isinstance(value, (list, tuple)) and all(_type_ok(v, float) for v in value)
    return isinstance(value, typing.get_origin(hint) or hint)


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint)
