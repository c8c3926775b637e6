"""``train.precision`` on a CPU: ``bf16`` trains a teacher under autocast whose losses follow the fp32 run's to bf16
rounding while parameters, EMA and checkpoint stay fp32, and samples like fp32; ``auto`` is fp32 on a CPU and
bf16 on CUDA; a CPU without bf16 instructions is warned about once (autocast would be emulated there); the sample
grids saved during training run in the run's precision. The instruction check reads this machine's real CPU."""

import logging
from pathlib import Path

import pytest
import torch

from kacdist.config import load_config
from kacdist.kac import KacProcess
from kacdist.sampling import generate
from kacdist.train import device as device_module
from kacdist.train.batches import InMemoryBatches
from kacdist.train.device import autocast_dtype, cpu_bf16_native
from kacdist.train.teacher import train_teacher

from .test_teacher import MICRO, _micro_model

CPU = torch.device("cpu")


def test_auto_is_fp32_on_cpu_and_bf16_on_cuda():
    assert autocast_dtype("auto", CPU) is None
    assert autocast_dtype("fp32", CPU) is None
    assert autocast_dtype("bf16", CPU) is torch.bfloat16
    assert autocast_dtype("auto", torch.device("cuda")) is torch.bfloat16  # a device object needs no GPU
    assert autocast_dtype("fp32", torch.device("cuda")) is None


def test_the_bf16_instruction_check_matches_the_cpu_flags():
    flags = {flag for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
             for flag in line.split(":", 1)[1].split()}
    assert cpu_bf16_native() == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_bf16_on_a_cpu_without_bf16_instructions_is_warned_about_once(monkeypatch, caplog):
    monkeypatch.setattr(device_module, "cpu_bf16_native", lambda: False)
    device_module._warn_emulated_bf16.cache_clear()
    with caplog.at_level(logging.WARNING, logger="kacdist.train.device"):
        assert autocast_dtype("bf16", CPU) is torch.bfloat16  # still honoured: emulated, not refused
        autocast_dtype("bf16", CPU)
    warnings = [r.getMessage() for r in caplog.records if "emulated" in r.getMessage()]
    assert len(warnings) == 1 and "train.precision=fp32" in warnings[0]
    device_module._warn_emulated_bf16.cache_clear()


def test_a_bf16_teacher_keeps_fp32_state_and_follows_the_fp32_run(tmp_path, digits64):
    import pyarrow.parquet as pq

    x, y = digits64
    runs = {}
    for precision in ("fp32", "bf16"):
        cfg = load_config(MICRO + [f"runs_dir={tmp_path}", "train.total_kimg=0.064", f"train.precision={precision}"])
        result = train_teacher(cfg, tmp_path / precision, model=_micro_model(cfg),
                               batches=InMemoryBatches(x, y, cfg.train.batch_size, cfg.train.seed))
        runs[precision] = (cfg, torch.load(result.checkpoint, weights_only=True),
                           pq.read_table(tmp_path / precision / "metrics.parquet").column("loss").to_pylist())
    (_, fp32, fp32_losses), (cfg, bf16, bf16_losses) = runs["fp32"], runs["bf16"]
    assert bf16["step"] == fp32["step"] == 4
    assert bf16_losses != fp32_losses  # autocast really ran in bf16
    assert bf16_losses == pytest.approx(fp32_losses, rel=3e-2)
    for key in ("model", "ema"):
        assert all(v.dtype == torch.float32 for v in bf16[key].values() if v.is_floating_point()), key
    # the bf16 run's EMA samples the same images in either precision, to bf16 rounding
    net = _micro_model(cfg)
    net.load_state_dict(bf16["ema"])
    process = KacProcess(cfg.kac.a, cfg.kac.c, cfg.kac.g, cfg.kac.sampler)
    labels = torch.arange(6) % 10
    full = generate(net, process, (1, 16, 16), list(range(6)), labels, "ab2", 5, 1.2, 6)
    low = generate(net, process, (1, 16, 16), list(range(6)), labels, "ab2", 5, 1.2, 6, amp_dtype=torch.bfloat16)
    assert low.images.dtype == torch.float32
    assert not torch.equal(low.images, full.images)
    torch.testing.assert_close(low.images, full.images, rtol=0, atol=5e-2)


class _AutocastProbe(torch.nn.Module):
    """A velocity of zero that records the autocast dtype each evaluation ran under (None: fp32)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: set = set()

    def forward(self, x, t, y=None):
        self.seen.add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return torch.zeros_like(x) + self.weight


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp32", None)])
def test_the_grids_saved_during_training_sample_in_the_runs_precision(tmp_path, precision, dtype):
    from kacdist.stages.distill import _snapshot as distill_snapshot
    from kacdist.stages.teacher import _snapshot as teacher_snapshot

    cfg = load_config([f"runs_dir={tmp_path}", f"train.precision={precision}", "sample.steps=2", "sample.num_images=4"])
    teacher, student = _AutocastProbe(), _AutocastProbe()
    teacher_snapshot(cfg)(teacher, 10)
    distill_snapshot(cfg, tmp_path / "grids", 1)(student, 10)
    assert teacher.seen == {dtype} and student.seen == {dtype}
    assert (tmp_path / "grids" / "grid-000000010.png").exists()
