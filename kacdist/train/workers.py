"""This process's place among the data-parallel workers of a run, and the few collectives the loop needs.

The loop never asks which executor started it. In-process (``cluster.workers=0``) it gets ``Workers()``: one
worker, no process group, every collective a no-op. Under Ray Train the worker function builds it from the
train context (rank, world size, the worker's device) after the process group exists, and passes the hook
that reports checkpoints to Ray. Collectives use torch.distributed alone, so the loop stays free of Ray and
DeepSpeed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Workers:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # the device this worker trains on (Ray: the worker's GPU); None: resolved from train.device
    device: torch.device | None = None
    # called on every rank after each checkpoint step, with the checkpoint's path on rank 0 and None elsewhere
    # (the Ray executor reports it); every rank calls it the same number of times
    report: Callable[[int, Path | None], None] | None = None
    # test-only fault injection: hook(event, step, rank) after each optimizer step ("step") and after a
    # checkpoint is written but before it is reported ("checkpoint_written")
    hook: Callable[[str, int, int], None] | None = None
    # asked by the loop once per step on every rank: true when the execution layer wants the run to stop at
    # the next step boundary (a scheduler's preemption signal); the loop agrees it across ranks
    stop_requested: Callable[[], bool] | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def event(self, name: str, step: int) -> None:
        if self.hook is not None:
            self.hook(name, step, self.rank)

    def _comm_device(self, tensor: torch.Tensor) -> torch.device:
        # NCCL moves only CUDA tensors, gloo only CPU ones
        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over workers of ``tensor`` (a new tensor on the input's device)."""
        if not self.distributed:
            return tensor.clone()
        buf = tensor.detach().to(self._comm_device(tensor), copy=True)
        dist.all_reduce(buf)
        return buf.to(tensor.device)

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank (for decisions rank 0 takes alone: which checkpoint, stop early)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @torch.no_grad()
    def broadcast_module(self, module: nn.Module) -> None:
        """Make every rank's parameters and buffers equal to rank 0's (initial weights)."""
        if not self.distributed:
            return
        for tensor in list(module.parameters()) + list(module.buffers()):
            buf = tensor.detach().to(self._comm_device(tensor), copy=True)
            dist.broadcast(buf, src=0)
            tensor.copy_(buf.to(tensor.device))

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()
