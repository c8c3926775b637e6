"""The FLOP counting of benchmarks/flops.py: a training step costs about 3 forward passes, the count is linear in
the batch, and a single convolution matches the hand count 2 · C_in · C_out · k² · H_out · W_out."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from kacdist.models.presets import get_preset

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "flops.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("flops_benchmark", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_training_step_is_about_three_forward_passes(bench):
    row = bench.preset_flops("tiny")
    assert row["params"] == 493_025
    assert row["forward_flops"] > 0
    assert 2.5 * row["forward_flops"] <= row["train_flops"] <= 3.5 * row["forward_flops"]


def test_tiny_count_is_linear_in_batch(bench):
    cfg = get_preset("tiny")
    model = bench.build(cfg, "meta")
    one = bench.count_flops(model, bench.unet_inputs(cfg, 1, "meta"))
    three = bench.count_flops(model, bench.unet_inputs(cfg, 3, "meta"))
    assert three == (3 * one[0], 3 * one[1])


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_conv2d_forward_matches_hand_count(bench, device):
    c_in, c_out, k, batch = 3, 8, 3, 2
    with torch.device(device):
        conv = nn.Conv2d(c_in, c_out, k, stride=2, padding=1)
        x = torch.randn(batch, c_in, 9, 9)
    h_out = w_out = (9 + 2 * 1 - k) // 2 + 1  # 5
    forward, _ = bench.count_flops(conv, (x,))
    assert forward == batch * 2 * c_in * c_out * k * k * h_out * w_out
