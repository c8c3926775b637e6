"""Kac-flow demo on the embedded default data (scikit-learn's digits): draw the exact forward process and
its training targets for the paper's two settings and check them against the closed-form law.

    python jobs/kac_demo.py [--batch 256] [--seed 0]

Prints, per setting and time, the atom fraction against e^{-a·g(t)}, the noise variance against
Var K_{g(t)}, the largest |target| against its bound |x0| + c·g'(t), and the time to build the targets.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from kacdist.kac import KacProcess, kac_variance

SETTINGS = [(25.0, 2.0, "t"), (3000.0, 20.0, "t2")]  # DistillKac Table B-1: CIFAR-10; CelebA-64 / LSUN


def digits_batch(batch: int, seed: int) -> torch.Tensor:
    """Digits 8×8 in [0, 16] → 16×16 in [-1, 1] (nearest upscaling), one channel."""
    images = load_digits().images.astype(np.float32)
    rng = np.random.default_rng(seed)
    pick = images[rng.choice(len(images), size=batch, replace=False)]
    x = torch.from_numpy(pick / 8.0 - 1.0)[:, None]
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    x0 = digits_batch(args.batch, args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    header = f"{'(a, c), g':<16}{'t':>7}{'atoms':>10}{'e^-a·g':>10}{'Var K':>11}{'formula':>11}{'max|u|':>9}{'bound':>8}{'ms':>8}"
    print(f"digits: {tuple(x0.shape)} in [{float(x0.min()):.0f}, {float(x0.max()):.0f}]\n{header}")
    ok = True
    for a, c, g in SETTINGS:
        proc = KacProcess(a, c, g)
        for t_val in (0.001, 0.01, 0.1, 0.5, 1.0):
            t = torch.full((args.batch,), t_val)
            start = time.perf_counter()
            x_t, u = proc.target(x0, t, generator=gen)
            ms = 1e3 * (time.perf_counter() - start)
            s = float(proc.schedule.g(t[:1]))
            k = x_t - (1 - t_val) * x0
            atoms = float(((u + x0).abs() >= c * float(proc.schedule.dg(t[:1])) * (1 - 1e-5)).float().mean())
            var, var_formula = float(k.double().var()), float(kac_variance(torch.tensor(s), a, c))
            bound = 1 + c * float(proc.schedule.dg(t[:1]))
            umax = float(u.abs().max())
            ok &= umax <= bound + 1e-4 and abs(var / var_formula - 1) < 0.05
            print(
                f"{f'({a:g}, {c:g}), {g}':<16}{t_val:>7g}{atoms:>10.4f}{math.exp(-a * s):>10.4f}"
                f"{var:>11.3e}{var_formula:>11.3e}{umax:>9.3f}{bound:>8.2f}{ms:>8.1f}"
            )
    print("law checks:", "ok" if ok else "FAILED")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
