"""torchrun support: process group from the environment, rank-0 helpers, gathers.

`torchrun --nproc_per_node N -m focusnet train ...` sets RANK / WORLD_SIZE / LOCAL_RANK; without
them everything runs as a single process and these helpers are no-ops.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import FocusNetError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise FocusNetError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(device: str) -> DistContext:
    """Join the torchrun process group when launched by torchrun (nccl on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistContext(rank, world, local, dev)


def joined() -> bool:
    """Is this process already in a torchrun process group?"""
    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def process_group(device: str):
    """The DistContext of this process, in the torchrun process group when launched by torchrun:
    joined here and left on exit, unless a caller already holds it (a --seeds set joins once for
    all its seeds: a group left and joined again fails to connect under gloo)."""
    owns = not joined()
    ctx = init_distributed(device)
    try:
        yield ctx
    finally:
        if owns:
            cleanup_distributed()


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def gather_cat(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate equally-shaped tensors from every rank (rank order) along dim 0."""
    if not ctx.distributed:
        return t
    parts = [torch.empty_like(t) for _ in range(ctx.world_size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def broadcast_flag(flag: bool, ctx: DistContext) -> bool:
    """True on every rank if it is True on any (e.g. a stop signal received by one process)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([int(flag)], device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def gather_objects(obj, ctx: DistContext) -> list:
    """Every rank's value of a picklable object, in rank order, on every rank."""
    if not ctx.distributed:
        return [obj]
    box = [None] * ctx.world_size
    dist.all_gather_object(box, obj)
    return box


def broadcast_object(obj, ctx: DistContext):
    """Rank 0's value of a picklable object on every rank (used for the run folder name)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_weights(model: torch.nn.Module, ctx: DistContext) -> None:
    """Give every rank rank 0's parameters and buffers in place (e.g. the best epoch's weights,
    which only rank 0 wrote to disk: on several machines without a shared file system the others
    cannot read them)."""
    if ctx.distributed:
        with torch.no_grad():
            for t in model.state_dict().values():
                flat = t if t.is_contiguous() else t.contiguous()  # channels-last weights: send a contiguous copy
                dist.broadcast(flat, src=0)
                if flat is not t:
                    t.copy_(flat)


def sync_buffers(model: torch.nn.Module, ctx: DistContext) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics drift apart in the last
    training step of an epoch, since DDP broadcasts buffers only at the start of a forward)."""
    if ctx.distributed:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)
