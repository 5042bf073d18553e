"""Checkpoints that never run code when loaded.

A model checkpoint (`best_model.pth`) is a dict of tensors and plain values, loaded with
`torch.load(weights_only=True)`:

    {"format": "focusnet", "version": 1,
     "model": {"name": "focusnet", ...all constructor values...},
     "data":  {"flag", "task", "num_classes", "label_names", "in_channels", "spatial_dims",
               "size", "as_rgb", "source_channels", "mean", "std"},  # what predict needs to preprocess
     "state_dict": {...}, "epoch": int, "metrics": {...}}

`best_model.safetensors` holds the same weights, with everything else as JSON in its metadata.
The training state (`last.pth`: model, optimizer, scheduler, RNG, log) uses the same loader.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors
from torch import nn

from ..errors import FocusNetError
from ..fileio import atomic_path
from ..models.factory import build_model

FORMAT = "focusnet"
TRAIN_STATE_FORMAT = "focusnet-train-state"
VERSION = 1
BEST = "best_model.pth"
BEST_SAFETENSORS = "best_model.safetensors"
LAST = "last.pth"
MODEL_KEYS = ("name", "in_channels", "num_classes", "spatial_dims")
DATA_KEYS = ("flag", "task", "num_classes", "in_channels", "spatial_dims", "size", "as_rgb", "mean", "std")


@dataclass
class Checkpoint:
    model_config: dict  # for models.factory.build_model
    data: dict  # dataset and preprocessing the model was trained with
    state_dict: dict[str, torch.Tensor]
    epoch: int = 0
    metrics: dict | None = None
    path: str = ""

    def build(self, device: str | torch.device = "cpu") -> nn.Module:
        """The model with these weights, in eval mode."""
        try:
            model = build_model(self.model_config)
        except (KeyError, TypeError, ValueError) as e:
            raise FocusNetError(f"{self.path or 'checkpoint'}: its model description cannot build a model ({type(e).__name__}: {str(e)[:160]}); it was edited or damaged") from None
        try:
            model.load_state_dict(self.state_dict)
        except (RuntimeError, TypeError, AttributeError) as e:
            raise FocusNetError(f"{self.path or 'checkpoint'}: weights do not fit a {self.model_config['name']} model ({weights_mismatch(e)}); it is from another architecture or was edited") from None
        return model.to(device).eval()


def weights_mismatch(e: Exception) -> str:
    """load_state_dict's multi-line complaint in a few words: how many weights are missing or
    unexpected, and the first one whose shape differs."""
    text, parts = str(e), []
    for label, kind in (("Missing", "missing"), ("Unexpected", "unexpected")):
        found = re.search(label + r" key\(s\) in state_dict: (.*)", text)
        if found:
            parts.append(f"{found.group(1).count(chr(34)) // 2} {kind} weights")
    found = re.search(r"size mismatch for ([\w.]+): copying a param with shape torch.Size\((\[.*?\])\) from checkpoint, the shape in current model is torch.Size\((\[.*?\])\)", text)
    if found:
        parts.append(f"{found.group(1)} is {found.group(2)} in the file but {found.group(3)} in the model")
    if not parts:
        lines = text.strip().splitlines()
        parts.append(lines[-1].strip()[:160] if lines else type(e).__name__)
    return "; ".join(parts)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}


def save_torch(obj: dict, path: str) -> None:
    # Through a Python file: a full disk then raises OSError(ENOSPC), which atomic_path turns into
    # one line ("the disk is full"); torch.save(obj, path) reports it as an opaque RuntimeError.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as e:  # torch's zip writer hides a failed write behind its own error
            if isinstance(e.__context__, OSError):
                raise e.__context__ from None
            raise


def save_model(folder: str, model: nn.Module, model_config: dict, data: dict, epoch: int, metrics: dict | None = None) -> str:
    """Write best_model.pth and best_model.safetensors (each atomically); returns the .pth path."""
    state = cpu_state_dict(model)
    meta = {"format": FORMAT, "version": VERSION, "model": model_config, "data": data, "epoch": epoch, "metrics": metrics or {}}
    path = os.path.join(folder, BEST)
    save_torch({**meta, "state_dict": state}, path)
    blob = save_safetensors({k: v.contiguous() for k, v in state.items()}, metadata={"focusnet": json.dumps(meta)})
    with atomic_path(os.path.join(folder, BEST_SAFETENSORS)) as tmp, open(tmp, "wb") as f:
        f.write(blob)  # as bytes through Python, for the same reason as save_torch
    return path


def safe_torch_load(path: str) -> dict:
    """torch.load restricted to tensors and plain values; anything else is refused, never executed."""
    if not os.path.isfile(path):
        raise FocusNetError(f"checkpoint {path} not found; pass a run folder or its best_model.pth")
    with open(path, "rb") as f:
        head = f.read(2)
    if not head:
        raise FocusNetError(f"cannot read checkpoint {path}: the file is empty; retrain or restore it")
    if head != b"PK" and head[:1] != b"\x80":  # neither torch.save's zip nor a binary pickle (e.g. a run's config.json)
        raise FocusNetError(f"{path} is not a checkpoint (not written by torch.save); pass a run folder, its best_model.pth or best_model.safetensors")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the refusal below says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise FocusNetError(f"refusing to load {path}: it holds Python objects other than tensors and plain values, which could run code ({_unpickling_reason(e)}); nothing from it was run; only FocusNet checkpoints are accepted") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise FocusNetError(f"cannot read checkpoint {path}: the file is corrupt or truncated ({type(e).__name__}); retrain or restore it") from None
    if not isinstance(obj, dict):
        raise FocusNetError(f"{path} is not a FocusNet checkpoint (found {type(obj).__name__}, expected a dict)")
    return obj


def _unpickling_reason(e: Exception) -> str:
    """The useful part of torch's weights-only refusal: which callable the file asked for."""
    text = str(e)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it asks to call {found.group(1)}"
    found = re.search(r"Unsupported operand (\d+)", text)
    if found:
        return f"pickle instruction {found.group(1)} is not allowed"
    return "unsupported object"


def resolve_checkpoint_path(path: str) -> str:
    """A run folder means its best_model.pth."""
    if os.path.isdir(path):
        path = os.path.join(path, BEST)
    return path


def load_checkpoint(path: str) -> Checkpoint:
    """Read best_model.pth (or .safetensors, or a run folder) without executing anything from it."""
    path = resolve_checkpoint_path(path)
    if path.endswith(".safetensors"):
        return _load_safetensors(path)
    obj = safe_torch_load(path)
    if obj.get("format") != FORMAT:
        found = obj.get("format", "no 'format' key")
        raise FocusNetError(f"{path} is not a FocusNet model checkpoint ({found}); pass best_model.pth from a run folder")
    _check_version(obj, path)
    if not isinstance(obj.get("state_dict"), dict):
        raise FocusNetError(f"{path} holds no weights ('state_dict'); it is not a complete FocusNet checkpoint")
    return Checkpoint(obj["model"], obj["data"], obj["state_dict"], obj.get("epoch", 0), obj.get("metrics"), path)


def _load_safetensors(path: str) -> Checkpoint:
    if not os.path.isfile(path):
        raise FocusNetError(f"checkpoint {path} not found")
    try:
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            meta = json.loads((f.metadata() or {}).get("focusnet", "null"))
        state = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise FocusNetError(f"cannot read {path}: corrupt safetensors file ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise FocusNetError(f"{path} has no FocusNet metadata; it was not written by FocusNet")
    _check_version(meta, path)
    return Checkpoint(meta["model"], meta["data"], state, meta.get("epoch", 0), meta.get("metrics"), path)


def _check_version(obj: dict, path: str) -> None:
    version = obj.get("version", 0)
    if not isinstance(version, int):
        raise FocusNetError(f"{path} has a malformed format version ({version!r}); it was not written by FocusNet")
    if version > VERSION:
        raise FocusNetError(f"{path} was written by a newer FocusNet (format version {obj['version']}); upgrade focusnet")
    model, data = obj.get("model"), obj.get("data")
    if not isinstance(model, dict) or not isinstance(data, dict):
        raise FocusNetError(f"{path} is missing its model or data description; it is not a complete FocusNet checkpoint")
    missing = [f"model.{k}" for k in MODEL_KEYS if k not in model] + [f"data.{k}" for k in DATA_KEYS if k not in data]
    if missing:
        raise FocusNetError(f"{path} lacks {', '.join(missing)}; it is not a complete FocusNet checkpoint")
    # A relabelled or hand-edited file: the model must be the one for the data it claims.
    for key in ("in_channels", "num_classes", "spatial_dims"):
        if model[key] != data[key]:
            raise FocusNetError(f"{path} is inconsistent: its model has {key}={model[key]!r} but its data description says {data[key]!r}; it was edited or damaged")


def load_train_state(path: str) -> dict:
    obj = safe_torch_load(path)
    if obj.get("format") != TRAIN_STATE_FORMAT:
        raise FocusNetError(f"{path} is not a FocusNet training state; resume from a run folder with {LAST}")
    return obj
