"""Large-sample check of the exact Kac sampler against the closed-form law (not a test: one fixed seed).

    python benchmarks/kac_law_check.py [--values 1000000] [--seed 2026] [--lams 3 10] [--tag NAME]

For lam = a·s from 1e-3 to 1e4, about --values draws of u = K/(c·s) from the default sampler, in rows of
3,072 values (one 3×32×32 image, 256 bins): a one-sample Kolmogorov–Smirnov test of the off-atom draws
against the CDF obtained by quadrature of the closed-form density (tests/kac/reference.py, independent of
the library's formulas), and a binomial test of the atom count against e^{-lam}. With 12 values of lam, one
p below 0.004 (Bonferroni at 0.05) deserves a rerun of that lam with more draws (--lams, --values, --tag).
Writes benchmarks/results/kac_law_check[-TAG].{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the reference law lives with the tests

from kacdist.kac.sampler import sample_kac_unit  # noqa: E402
from tests.kac.reference import AcCdf  # noqa: E402

LAMS = [1e-3, 0.03, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 1e4]
ROW = 3072


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--lams", type=float, nargs="+", default=LAMS)
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(args.seed)
    rows_per_lam = max(1, args.values // ROW)
    results = []
    for lam in args.lams:
        u, atom = sample_kac_unit(torch.full((rows_per_lam,), lam, dtype=torch.float64), (rows_per_lam, ROW), generator=gen)
        u, atom = u.double().numpy().ravel(), atom.numpy().ravel()
        ac = u[~atom]
        ks = stats.kstest(ac, AcCdf(1.0, lam, 1.0))  # u's law depends on lam alone
        binom = stats.binomtest(int(atom.sum()), atom.size, float(np.exp(-lam)))
        row = {"lam": lam, "values": int(u.size), "off_atom": int(ac.size), "ks_d": ks.statistic if ks else None,
               "ks_p": ks.pvalue if ks else None, "atoms": int(atom.sum()), "atoms_expected": float(atom.size * np.exp(-lam)),
               "atoms_p": binom.pvalue}
        results.append(row)
        print(f"lam {lam:>8g}: {row['off_atom']:>8d} off-atom draws, KS D {row['ks_d']:.2e} p {row['ks_p']:.3f}; "
              f"atoms {row['atoms']} (expected {row['atoms_expected']:.1f}) p {row['atoms_p']:.3f}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "kac_law_check" + (f"-{args.tag}" if args.tag else "")
    (out / f"{stem}.json").write_text(json.dumps({"seed": args.seed, "row": ROW, "rows": results}, indent=2))
    lines = [f"Seed {args.seed}; {rows_per_lam} rows of {ROW} values per lam; default sampler (envelope).", "",
             "| lam | off-atom draws | KS D | KS p | atoms (expected) | binomial p |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['lam']:g} | {r['off_atom']} | {r['ks_d']:.2e} | {r['ks_p']:.3f} | {r['atoms']} "
                     f"({r['atoms_expected']:.1f}) | {r['atoms_p']:.3f} |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
