"""The report's figures, drawn from plain rows (metrics.parquet, fd_vs_nfe.parquet) into PNG files.

Each function returns the PNG's path, or None when its rows hold nothing to draw (a stage that never
logged, an evaluation without rows): the page then says so instead of showing an empty frame. Figures use
matplotlib's Agg canvas directly, so drawing needs no display and leaves pyplot's figure list alone; the
PNG is written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from kacdist.atomic import atomic_output

VELOCITY_BINS = 10  # velocity_l2_bin0..9 of the training loop: t in [i/10, (i+1)/10)
MAX_VELOCITY_CURVES = 4  # first, last and evenly spaced logged rows between them


def new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Any, path: Path) -> Path:
    with atomic_output(path) as temp:
        fig.savefig(temp, format="png", dpi=100)
    return path


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(kimg, value) of the rows that have a finite ``key``."""
    points = [(r["kimg"], r[key]) for r in rows if finite(r.get(key)) and finite(r.get("kimg"))]
    return [p[0] for p in points], [p[1] for p in points]


# panels of the training figure: (label, [(column, legend)]); a panel is drawn when one of its columns has values
TRAINING_PANELS = (
    ("loss", [("loss", "")]),
    ("learning rate", [("lr", "")]),
    ("FD (training monitor)", [("fd", "")]),
    ("peak memory (MiB)", [("peak_rss_mib", "host RSS"), ("peak_gpu_mib", "GPU")]),
)


def training_curves(metrics: list[dict], title: str, path: Path) -> Path | None:
    """Loss and learning rate against kimg, the periodic FD when the stage evaluated during training, and
    the peak memory of the process (and GPU) that the metrics rows record."""
    panels = [(label, [(key, name) for key, name in series if _series(metrics, key)[0]])
              for label, series in TRAINING_PANELS]
    panels = [(label, series) for label, series in panels if series]
    if not panels or panels[0][0] != "loss":
        return None
    fig = new_figure(3.6 * len(panels), 3.2)
    for i, (label, series) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for key, name in series:
            x, y = _series(metrics, key)
            ax.plot(x, y, marker="o" if len(x) < 30 else None, markersize=3, label=name or None)
            if key == "loss" and min(y) > 0 and max(y) / min(y) > 20:  # a loss falling by decades reads better on log
                ax.set_yscale("log")
        if any(name for _, name in series):
            ax.legend(fontsize="small")
        ax.set_xlabel("kimg")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    return save_png(fig, path)


def velocity_rows(metrics: list[dict]) -> list[dict]:
    """Logged rows that hold at least one velocity-norm bin, by step."""
    return [r for r in metrics if any(finite(r.get(f"velocity_l2_bin{i}")) for i in range(VELOCITY_BINS))]


def velocity_bins(metrics: list[dict], title: str, path: Path) -> Path | None:
    """The L2(mu_t) velocity norm per time bin at a few points of training, against the c·sqrt(d) bound.

    A bin a stage never visits (a 1-step student only sees t = 1) has no value and no marker."""
    rows = velocity_rows(metrics)
    if not rows:
        return None
    pick = sorted(set(np.linspace(0, len(rows) - 1, min(MAX_VELOCITY_CURVES, len(rows))).round().astype(int)))
    centers = (np.arange(VELOCITY_BINS) + 0.5) / VELOCITY_BINS
    fig = new_figure(5.5, 3.6)
    ax = fig.add_subplot()
    colours = _colours(len(pick))
    for colour, i in zip(colours, pick):
        row = rows[i]
        values = [row.get(f"velocity_l2_bin{b}") for b in range(VELOCITY_BINS)]
        y = np.array([v if finite(v) else np.nan for v in values], dtype=float)
        label = f"{row['kimg']:g} kimg" if finite(row.get("kimg")) else f"step {row.get('step')}"
        ax.plot(centers, y, marker="o", markersize=4, color=colour, label=label)
    bounds = [r["velocity_bound"] for r in rows if finite(r.get("velocity_bound"))]
    if bounds:
        ax.axhline(bounds[-1], color="C3", linestyle="--", label=f"bound c·√d = {bounds[-1]:.3g}")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("t (bin centre)")
    ax.set_ylabel("√E‖v‖² in the bin")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return save_png(fig, path)


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(x) for x in (np.linspace(0.1, 0.85, n) if n > 1 else [0.5])]


def metric_keys(rows: list[dict]) -> list[tuple[str, str]]:
    """(column, label) of the quality metrics the evaluation holds: classifier FD and/or Inception FID."""
    return [(key, label) for key, label in (("fd", "classifier FD"), ("fid", "Inception FID"))
            if any(finite(r.get(key)) for r in rows)]


def mean_over_seeds(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if finite(r.get(key))]
    return float(np.mean(values)) if values else None


def fd_vs_nfe(rows: list[dict], path: Path) -> Path | None:
    """The metric (mean over seeds) against NFE: a line per teacher (integrator, guidance), a point per
    student, the real-vs-real floor as a dashed line; one panel per metric."""
    metrics = metric_keys(rows)
    if not metrics:
        return None
    fig = new_figure(6.0 * len(metrics), 4.2)
    for i, (key, label) in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        teacher = [r for r in rows if r.get("model") == "teacher"]
        for integrator, guidance in dict.fromkeys((r["integrator"], r["guidance"]) for r in teacher):
            same = [r for r in teacher if (r["integrator"], r["guidance"]) == (integrator, guidance)]
            points = sorted((nfe, mean_over_seeds([r for r in same if r["nfe"] == nfe], key))
                            for nfe in {r["nfe"] for r in same})
            points = [p for p in points if p[1] is not None]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                        label=f"teacher {integrator}, w = {guidance:g}")
        students = [r for r in rows if r.get("model") not in ("teacher", "real")]
        for j, name in enumerate(dict.fromkeys(r["model"] for r in students)):
            mine = [r for r in students if r["model"] == name]
            value = mean_over_seeds(mine, key)
            if value is not None:
                ax.scatter([mine[0]["nfe"]], [value], marker="*", s=140, color=f"C{(j + 4) % 10}", zorder=3,
                           label=f"{name} (Euler, w = 1)")
        floor = mean_over_seeds([r for r in rows if r.get("model") == "real"], key)
        if floor is not None:
            ax.axhline(floor, color="k", linestyle="--", linewidth=1, label=f"real vs real {floor:.2f}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFE (network evaluations per image)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("Sample quality against NFE")
    return save_png(fig, path)
