"""Opt-in speed options, kept out of the training loop's logic: bfloat16 autocast (on CUDA by
default, on the CPU with --amp-cpu), channels-last memory layout, and torch.compile errors made
into one line."""

from __future__ import annotations

import contextlib
import itertools
import re

import torch
from torch import nn


def uses_autocast(device: torch.device, amp: bool, amp_cpu: bool) -> bool:
    """A run's bfloat16 autocast on this device: `amp` on CUDA (default on), `amp_cpu` on the CPU (default off)."""
    return amp if device.type == "cuda" else amp_cpu


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on `device` when enabled (resolve `enabled` with `uses_autocast`)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def compile_failed(error: Exception) -> bool:
    """Did torch.compile's backend fail (no compiler, an unsupported Python, a backend not installed)?"""
    from torch._dynamo.exc import BackendCompilerFailed

    return isinstance(error, BackendCompilerFailed) or type(error).__name__ == "InductorError"


def cause_line(error: Exception) -> str:
    """The cause inside a long compiler error, e.g. "ImportError: Please install apache-tvm ..."."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    causes = [line for line in lines if re.match(r"\w+(Error|Exception): ", line)]
    return (causes or lines or [type(error).__name__])[0]


def channels_last_format(spatial_dims: int) -> torch.memory_format:
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def to_channels_last(model: nn.Module, spatial_dims: int) -> None:
    """Image-shaped weights and buffers (rank spatial_dims + 2) to channels-last, in place; the
    others keep their layout (Module.to(memory_format=) refuses a model that has any)."""
    fmt = channels_last_format(spatial_dims)
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.dim() == spatial_dims + 2:
            t.data = t.data.contiguous(memory_format=fmt)
