"""The re-created reference table sampler of benchmarks/kac_targets.py draws the Kac law (to table accuracy),
so the side-by-side timing compares two samplers of the same thing."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch

from kacdist.kac import kac_variance

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "kac_targets.py"


def _load():
    spec = importlib.util.spec_from_file_location("kac_targets_benchmark", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_lookup_baseline_draws_the_kac_law():
    """Small table (400 clock rows × 512 quantiles) at (25, 2): per clock s, the atom share is e^{-a·s}
    within 5 binomial standard errors, |K| ≤ c·s, and Var K matches the closed form within 3%."""
    bench = _load()
    a, c = 25.0, 2.0
    table = bench.build_lookup_table(a, c, rows=400, quantiles=512)
    clock_grid = torch.linspace(0.0, 1.0, table.shape[0], dtype=torch.float32)
    s = torch.tensor([0.02, 0.1, 0.5, 1.0])
    n = 40_000
    k = bench.table_lookup_draw(table, clock_grid, s, a, c, n, torch.Generator().manual_seed(3)).double()
    assert k.shape == (4, n)
    for row, sv in enumerate(s.tolist()):
        front = c * sv
        assert float(k[row].abs().max()) <= front * (1 + 1e-6)
        atoms = float((k[row].abs() >= front * (1 - 1e-6)).double().mean())
        p = math.exp(-a * sv)
        assert abs(atoms - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-4, f"s={sv}: atom share {atoms:.4f} vs {p:.4f}"
        var = float(kac_variance(torch.tensor([sv], dtype=torch.float64), a, c)[0])
        assert abs(float(k[row].var()) / var - 1) < 0.03, f"s={sv}: Var {float(k[row].var()):.5f} vs {var:.5f}"
