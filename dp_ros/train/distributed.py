"""Data-parallel set-up (torchrun / DDP): the device, the process group, this process's place in
it and the few collectives the trainer needs; logging from rank 0 only."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from dp_ros.train.config import ConfigError


def info(msg: str) -> None:
    """A progress / warning line on stderr, from rank 0 only."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[dp-train] {msg}", file=sys.stderr, flush=True)


@dataclass
class DistInfo:
    """This process's rank in a group of `world` processes; the collectives are no-ops for one."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def broadcast_from_main(self, obj):
        """Rank 0's obj, on every rank."""
        box = [obj]
        if self.enabled:
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj) -> list:
        """[obj of rank 0, obj of rank 1, ...] on every rank."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def mean(self, x: torch.Tensor) -> float:
        """The mean of a scalar tensor over the ranks."""
        x = x.detach().float().clone()
        if self.enabled:
            dist.all_reduce(x, op=dist.ReduceOp.SUM)
            x /= self.world
        return float(x)

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """module in DistributedDataParallel when there are several processes, else as it is."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel
        # No BatchNorm anywhere, and the normaliser is identical on every rank: no buffers to
        # broadcast each step.
        return DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False)


def pick_device(pref: str, local_rank: int | None = None) -> torch.device:
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(pref)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"training.device={pref!r} but CUDA is not available here")
        if dev.index is None:
            dev = torch.device("cuda", local_rank or 0)
    return dev


def init_distributed(device_pref: str) -> tuple[DistInfo, torch.device]:
    """torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_*: then join the group (NCCL on
    CUDA, gloo on CPU); without them run as a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_pref, local if world > 1 else None)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local), device
