"""Device, precision and compilation from the config: bf16 autocast on CUDA, fp32 on CPU unless bf16 is asked
for, one code path."""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil

import torch
from torch import nn

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is visible; use train.device=cpu or auto")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None means plain fp32."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if device.type == "cpu" and not cpu_bf16_native():
        _warn_emulated_bf16()
    return torch.bfloat16


@functools.cache
def cpu_bf16_native() -> bool:
    """Whether oneDNN has bf16 instructions on this CPU (avx512_bf16 or AMX). With them bf16 autocast runs the tiny
    UNet 1.4-1.9x faster than fp32 (benchmarks/cpu_precision.py); without them it is emulated, 10-50x slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def _warn_emulated_bf16() -> None:
    log.warning("train.precision=bf16 on a CPU without bf16 instructions (avx512_bf16 or AMX): autocast is emulated "
                "and many times slower than train.precision=fp32 (10-50x for the tiny UNet)")


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


COMPILE_MODES = ("none", "inference", "all")


def compiled(module: nn.Module, mode: str, training: bool = False) -> nn.Module:
    """``module`` behind ``torch.compile`` when ``train.compile=mode`` covers it, else ``module`` itself:
    ``inference`` compiles networks that only run forward (sampling, evaluation, a distillation's frozen
    teacher), ``all`` also the one being trained (``training=True``).

    A wrapper, not ``module.compile()`` in place: the bare module keeps its eager forward and state_dict keys,
    so the EMA (a deep copy), checkpoints and snapshots are those of the uncompiled network, and a deep copy can
    never call the compiled forward of the module it was copied from."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"train.compile={mode!r} is invalid: allowed values are {', '.join(COMPILE_MODES)}")
    return torch.compile(module) if mode == "all" or (mode == "inference" and not training) else module


def compile_problem(device_name: str) -> str | None:
    """Why ``train.compile`` cannot work for ``train.device=device_name`` here, or None. On a CPU torch inductor
    builds C++ kernels, so a compiler must be on PATH; checked with the config instead of failing at the first
    forward pass of a started job."""
    on_cpu = device_name == "cpu" or (device_name == "auto" and not torch.cuda.is_available())
    if on_cpu and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        return ("train.compile on a CPU needs a C++ compiler on PATH (c++, g++ or clang++: torch inductor builds its "
                "kernels with it); install one or set train.compile=none")
    return None
