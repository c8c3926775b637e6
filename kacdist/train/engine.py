"""How an optimizer step is taken: the one seam between the training loop and the execution layer.

The loop holds an engine and calls ``engine.model(...)`` for the forward pass, ``backward(loss)``,
``step()`` (gradient clipping at ``grad_clip``, AdamW, the warmup/flat/cosine schedule, zeroed gradients;
returns the gradient norm before clipping) and ``state_dict()``. Everything else (EMA, metrics, checkpoints,
resume, NaN and early stop, snapshots) is the loop's and shared by both engines:

* ``TorchEngine``: AdamW on the model; wrapped in DistributedDataParallel when there are several workers.
* ``DeepSpeedEngine``: the same AdamW and LR schedule handed to ``deepspeed.initialize`` (ZeRO stage 0, 1 or
  2). No DeepSpeed op is compiled: the optimizer is torch's (not FusedAdam) and the CPU shared-memory
  all-reduce op is switched off, both of which JIT-compile for 35–70 s otherwise (platform notes).

Precision: parameters, gradients, optimizer state and the EMA stay float32 on every device; bf16 is
torch autocast in the forward pass (``train.precision``), so DeepSpeed's own fp16/bf16 modes are not used.

Checkpoints do not depend on the number of workers: ``state_dict()`` returns the whole model, the whole
optimizer state in torch AdamW's format (one entry per trainable parameter, in ``model.parameters()`` order)
and the scheduler. Under ZeRO 1/2 every rank holds only its slice of the flat fp32 optimizer partition; the
slices are gathered per parameter with DeepSpeed's public ``safe_get_full_optimizer_state`` (a collective, so
every rank calls ``state_dict``), and on load each rank cuts its own slice out of the per-parameter tensors
through the same fragment map. A checkpoint written with ZeRO-2 on 2 workers thus loads into the plain
loop, into DDP or into ZeRO on any other number of workers.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Protocol

import torch
from torch import nn

from kacdist.train.device import compiled
from kacdist.train.lr_schedule import lr_factor
from kacdist.train.workers import Workers

log = logging.getLogger(__name__)

ENGINES = ("torch", "deepspeed")
ZERO_STAGES = (0, 1, 2)


class Engine(Protocol):
    model: nn.Module  # what the loss calls: the module itself, its DDP wrapper or the DeepSpeed engine
    module: nn.Module  # the bare network (EMA, snapshots, checkpoints)

    def backward(self, loss: torch.Tensor) -> None: ...

    def step(self) -> float: ...

    @property
    def lr(self) -> float: ...

    def state_dict(self) -> dict: ...

    def optimizer_state_bytes(self) -> int: ...


def _optimizer_and_schedule(module: nn.Module, lr: float, weight_decay: float, total_steps: int,
                            warmup_frac: float, flat_frac: float):
    params = [p for p in module.parameters() if p.requires_grad]
    # the fused kernel: the same update as the per-tensor loop, in one pass over all tensors (the tiny UNet's 199
    # tensors on 2 CPU cores: 6.4 ms per step against 25, about 8% of a teacher step); CPU and CUDA have it
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    factor = functools.partial(lr_factor, total_steps=total_steps, warmup_frac=warmup_frac, flat_frac=flat_frac)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class TorchEngine:
    def __init__(self, module: nn.Module, settings, total_steps: int, workers: Workers, device: torch.device,
                 state: dict | None = None, compile_mode: str = "none") -> None:
        self.module = module
        self.grad_clip = settings.grad_clip
        self.optimizer, self.scheduler = _optimizer_and_schedule(
            module, settings.lr, settings.weight_decay, total_steps, settings.warmup_frac, settings.flat_frac)
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        self.model = module
        if workers.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
            self.model = DistributedDataParallel(module, device_ids=ids)
        self.model = compiled(self.model, compile_mode, training=True)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> float:
        norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def optimizer_state_bytes(self) -> int:
        return _state_bytes(self.optimizer)


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the tensors an optimizer holds in its state (Adam's two moments and step counters)."""
    return sum(v.numel() * v.element_size() for entry in optimizer.state.values() for v in entry.values() if torch.is_tensor(v))


def _import_deepspeed():
    """deepspeed, with nothing JIT-compiled and its INFO chatter off."""
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    import deepspeed
    import deepspeed.ops

    # Reading deepspeed.ops.__compatible_ops__ probes every op with compiler subprocesses, and a True entry
    # for the CPU shm all-reduce makes the first initialize compile it (35-40 s). The engine needs no op.
    if "__compatible_ops__" not in vars(deepspeed.ops):
        deepspeed.ops.__dict__["__compatible_ops__"] = {}
    from deepspeed.utils import logger as ds_logger

    ds_logger.setLevel(logging.WARNING)
    return deepspeed


def _ensure_process_group(device: torch.device, workers: Workers) -> None:
    """DeepSpeed needs a process group and LOCAL_RANK; a single in-process worker gets a private group (an
    in-memory store: no ports). Under Ray Train both exist already."""
    import torch.distributed as dist

    os.environ.setdefault("LOCAL_RANK", str(workers.local_rank))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(), rank=0, world_size=1)


class DeepSpeedEngine:
    def __init__(self, module: nn.Module, settings, total_steps: int, workers: Workers, device: torch.device,
                 state: dict | None = None, zero_stage: int = 0, micro_batch: int = 1, compile_mode: str = "none") -> None:
        deepspeed = _import_deepspeed()
        _ensure_process_group(device, workers)
        self.module = module
        self.zero_stage = zero_stage
        self.grad_clip = settings.grad_clip
        self._params = [p for p in module.parameters() if p.requires_grad]
        optimizer, scheduler = _optimizer_and_schedule(
            module, settings.lr, settings.weight_decay, total_steps, settings.warmup_frac, settings.flat_frac)
        config = {
            "train_micro_batch_size_per_gpu": micro_batch,
            "gradient_accumulation_steps": 1,
            "steps_per_print": 1 << 62,
            "wall_clock_breakdown": False,
            "zero_optimization": {"stage": zero_stage},
            # ZeRO clips inside its partitioned step (and records the norm); stage 0 is clipped here, below,
            # exactly as the torch engine does
            "gradient_clipping": settings.grad_clip if zero_stage else 0.0,
        }
        self.model, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=compiled(module, compile_mode, training=True), optimizer=optimizer, lr_scheduler=scheduler, config=config,
            dist_init_required=False)
        if state is not None:
            self._load_optimizer(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])

    def backward(self, loss: torch.Tensor) -> None:
        self.model.backward(loss)

    def step(self) -> float:
        if self.zero_stage == 0:
            norm = float(torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip))
            self.model.step()
            return norm
        self.model.step()
        return float(self.model.get_global_grad_norm())

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def state_dict(self) -> dict:
        """Whole model and optimizer state (a collective under ZeRO: every rank must call it)."""
        optimizer = self.optimizer.state_dict() if self.zero_stage == 0 else self._gather_optimizer()
        return {"model": self.module.state_dict(), "optimizer": optimizer, "scheduler": self.scheduler.state_dict()}

    def optimizer_state_bytes(self) -> int:
        """This rank's optimizer state: the whole of it at stage 0, its partition under ZeRO 1/2."""
        return _state_bytes(self.optimizer if self.zero_stage == 0 else self._base())

    # ZeRO 1/2: the base optimizer steps flat fp32 partitions; these two functions translate between that
    # layout and torch AdamW's per-parameter state dict.
    def _base(self) -> torch.optim.Optimizer:
        return self.optimizer.optimizer

    def _gather_optimizer(self) -> dict:
        from deepspeed.utils import safe_get_full_optimizer_state

        base = self._base()
        group = {k: v for k, v in base.param_groups[0].items() if k != "params"}
        group["params"] = list(range(len(self._params)))
        flat_states = list(base.state.values())
        if not flat_states:  # no step taken yet: AdamW has no state either
            return {"state": {}, "param_groups": [group]}
        step = flat_states[0]["step"]
        state = {}
        for i, p in enumerate(self._params):
            entry = {"step": step.detach().clone().cpu()}
            for key in ("exp_avg", "exp_avg_sq"):
                entry[key] = safe_get_full_optimizer_state(p, key).reshape(p.shape).cpu()
            state[i] = entry
        return {"state": state, "param_groups": [group]}

    def _load_optimizer(self, saved: dict) -> None:
        if self.zero_stage == 0:
            self.optimizer.load_state_dict(saved)
            return
        base, zero = self._base(), self.optimizer
        for key, value in saved["param_groups"][0].items():
            if key != "params":
                base.param_groups[0][key] = value
        if not saved["state"]:
            return
        index = {id(p): i for i, p in enumerate(self._params)}
        for g, flat in enumerate(zero.single_partition_of_fp32_groups):
            first = saved["state"][index[id(zero.bit16_groups[g][0])]]
            entry = {"step": first["step"].clone(), "exp_avg": torch.zeros_like(flat), "exp_avg_sq": torch.zeros_like(flat)}
            for p in zero.bit16_groups[g]:
                mapping = p._hp_mapping
                if mapping is None:  # no part of this parameter lives in this rank's partition
                    continue
                lp, hp = mapping.lp_fragment_address, mapping.hp_fragment_address
                for key in ("exp_avg", "exp_avg_sq"):
                    whole = saved["state"][index[id(p)]][key].to(flat.device, flat.dtype).flatten()
                    entry[key].narrow(0, hp.start, hp.numel).copy_(whole.narrow(0, lp.start, lp.numel))
            base.state[flat] = entry
        # point each parameter's fragment map at the new state (DeepSpeed does this after its first step)
        zero._hp_optimizer_states_linked = False
        zero._lazy_init_hp_params_optimizer_state()


def make_engine(kind: str, module: nn.Module, settings, total_steps: int, workers: Workers, device: torch.device,
                state: dict | None = None, zero_stage: int = 0, compile_mode: str = "none") -> Engine:
    """An engine over ``module`` (already on ``device``, with the resumed weights loaded); ``compile_mode``
    ``all`` (``train.compile``) puts the forward pass behind ``torch.compile`` (``engine.model``;
    ``engine.module`` stays the bare network)."""
    if kind == "torch":
        if zero_stage:
            raise ValueError(f"train.zero_stage={zero_stage} needs train.engine=deepspeed")
        return TorchEngine(module, settings, total_steps, workers, device, state, compile_mode)
    if kind == "deepspeed":
        micro = settings.batch_size // workers.world_size
        return DeepSpeedEngine(module, settings, total_steps, workers, device, state, zero_stage, micro, compile_mode)
    raise ValueError(f"train.engine={kind!r} is invalid: allowed values are {', '.join(ENGINES)}")
