"""What a sweep leaves in ``runs/<run>/tune/``: ``trials.parquet`` (one row per trial: its setting, metric
history, final metric, wall time, whether ASHA stopped it), ``heatmap.png`` (the final metric over (a, c),
one panel per g), ``best.yaml`` (the winner as ``kac:`` settings: ``stage=teacher settings=<it>``) and
``summary.md`` (winner, seed-to-seed spread, where the data-driven proposal ranked)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from kacdist.atomic import atomic_write_bytes


@dataclass
class TrialRecord:
    label: str
    a: float
    c: float
    g: str
    seed: int
    origin: str  # grid | random | proposal | spread
    kimg: list[float] = field(default_factory=list)  # at each report
    metric: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    budget_kimg: float = 0.0
    error: str = ""

    @property
    def final(self) -> float | None:
        return self.metric[-1] if self.metric else None

    @property
    def stopped_early(self) -> bool:
        return not self.error and (not self.kimg or self.kimg[-1] < self.budget_kimg - 1e-9)

    @property
    def completed(self) -> bool:
        return not self.error and not self.stopped_early and self.final is not None and math.isfinite(self.final)


@dataclass
class Summary:
    metric_name: str
    winner: TrialRecord | None
    ranking: list[TrialRecord]  # completed sweep trials, best first
    spread: list[float]  # the winner's final metric over its training seeds (its own and tune.spread_seeds)
    proposal_rank: int | None  # 1-based among completed trials
    proposal_ratio: float | None  # proposal's metric / winner's
    proposal_stop: tuple[float, float, int, int] | None = None  # stopped early: (kimg, metric, rank there, trials there)
    all_sweep: list[TrialRecord] = field(default_factory=list)  # every sweep trial, stopped ones too

    @property
    def spread_sd(self) -> float | None:
        return statistics.stdev(self.spread) if len(self.spread) > 1 else None


def summarize(records: list[TrialRecord], metric_name: str, proposal: tuple[float, float, str] | None = None) -> Summary:
    """``proposal``: the data-driven (a, c, g), also when it coincides with a grid point."""
    sweep = [r for r in records if r.origin != "spread"]
    ranking = sorted((r for r in sweep if r.completed), key=lambda r: r.final)
    winner = ranking[0] if ranking else None
    spread = []
    if winner is not None:
        spread = [winner.final] + [r.final for r in records if r.origin == "spread" and (r.a, r.c, r.g) == (winner.a, winner.c, winner.g)
                                   and r.completed]
    proposed = next((r for r in sweep if proposal is not None and (r.a, r.c, r.g) == tuple(proposal)), None)
    rank = ratio = stop = None
    if proposed is not None and proposed in ranking:
        rank = ranking.index(proposed) + 1
        ratio = proposed.final / winner.final
    elif proposed is not None and proposed.stopped_early and proposed.kimg:
        at = proposed.kimg[-1]  # where ASHA stopped it: its rank among every trial's metric at that report
        there = sorted(r.metric[r.kimg.index(at)] for r in sweep if at in r.kimg)
        stop = (at, proposed.final, there.index(proposed.final) + 1, len(there))
    return Summary(metric_name, winner, ranking, spread, rank, ratio, stop, sweep)


def write_table(records: list[TrialRecord], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "trial": [r.label for r in records],
        "a": [r.a for r in records], "c": [r.c for r in records], "g": [r.g for r in records],
        "seed": [r.seed for r in records], "origin": [r.origin for r in records],
        "kimg": [r.kimg[-1] if r.kimg else 0.0 for r in records],
        "kimg_history": [r.kimg for r in records], "metric_history": [r.metric for r in records],
        "final_metric": [r.final for r in records], "wall_s": [r.wall_s for r in records],
        "stopped_early": [r.stopped_early for r in records], "error": [r.error for r in records],
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.parquet")
    pq.write_table(table, tmp)
    tmp.replace(path)


def write_heatmap(records: list[TrialRecord], metric_name: str, path: Path) -> None:
    """Final metric over (a, c) per g: log-a axis, one square per setting, its value written in it; trials
    that ASHA stopped are drawn hollow with the metric they reached."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = [r for r in records if r.origin != "spread" and r.final is not None]
    schedules = sorted({r.g for r in sweep}) or ["t"]
    fig, axes = plt.subplots(1, len(schedules), figsize=(5.5 * len(schedules), 4.5), squeeze=False)
    values = [r.final for r in sweep if math.isfinite(r.final)]
    vmin, vmax = (min(values), max(values)) if values else (0, 1)
    for ax, g in zip(axes[0], schedules):
        mine = [r for r in sweep if r.g == g]
        done = [r for r in mine if not r.stopped_early]
        cut = [r for r in mine if r.stopped_early]
        if done:
            points = ax.scatter([r.a for r in done], [r.c for r in done], c=[r.final for r in done], cmap="YlOrRd",
                                vmin=vmin, vmax=vmax, s=700, marker="s")
            fig.colorbar(points, ax=ax, label=metric_name.split(",")[0])
        if cut:
            ax.scatter([r.a for r in cut], [r.c for r in cut], facecolors="none", edgecolors="grey", s=700, marker="s")
        for r in mine:
            ax.annotate(f"{r.final:.3g}" + ("*" if r.origin == "proposal" else ""), (r.a, r.c), ha="center", va="center",
                        fontsize=7, color="black")
        ax.set_xscale("log")
        ax.set_xlabel("a (flip rate)")
        ax.set_ylabel("c (speed)")
        ax.set_title(f"g(t) = {'t' if g == 't' else 't²' if g == 't2' else g}")
        ax.margins(0.25)
    fig.suptitle(f"{metric_name}; hollow: stopped early by ASHA; *: the data-driven proposal", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def best_yaml(winner: TrialRecord) -> str:
    return f"# the best setting of the sweep; use: python jobs/launch.py stage=teacher settings=<this file>\nkac:\n  a: {winner.a:g}\n  c: {winner.c:g}\n  g: {winner.g}\n"


def summary_text(summary: Summary, proposal_text: str, wall_s: float, command: str) -> str:
    lines = [f"# Kac sweep\n", f"`{command}`: {wall_s / 60:.1f} min wall.", f"Metric: {summary.metric_name} (lower is better).",
             f"{proposal_text}.", ""]
    lines += ["| rank | a | c | g | final metric | kimg | wall s | origin |", "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(summary.ranking, 1):
        lines.append(f"| {i} | {r.a:g} | {r.c:g} | {r.g} | {r.final:.4f} | {r.kimg[-1]:g} | {r.wall_s:.0f} | {r.origin} |")
    cut = [r for r in summary.all_sweep if r.stopped_early and r.metric]
    if cut:
        lines += ["", "Stopped early by ASHA:", "", "| a | c | g | metric when stopped | at kimg | origin |", "|---|---|---|---|---|---|"]
        lines += [f"| {r.a:g} | {r.c:g} | {r.g} | {r.final:.4f} | {r.kimg[-1]:g} | {r.origin} |"
                  for r in sorted(cut, key=lambda r: (r.kimg[-1], r.final))]
    lines.append("")
    if summary.winner is None:
        lines.append("No trial completed its budget.")
        return "\n".join(lines) + "\n"
    w = summary.winner
    lines.append(f"Winner: a={w.a:g} c={w.c:g} g={w.g}, {summary.metric_name.split(',')[0]} {w.final:.4f}.")
    if summary.spread_sd is not None:
        gap = summary.ranking[1].final - w.final if len(summary.ranking) > 1 else float("nan")
        lines.append(f"Seed-to-seed spread of the winner ({len(summary.spread)} training seeds): "
                     f"{', '.join(f'{v:.4f}' for v in summary.spread)}; sd {summary.spread_sd:.4f}. Gap to the runner-up: "
                     f"{gap:.4f} ({'beyond' if gap > 2 * summary.spread_sd else 'within'} two sd).")
    if summary.proposal_rank is not None:
        lines.append(f"The data-driven proposal ranked {summary.proposal_rank} of {len(summary.ranking)}, at "
                     f"{summary.proposal_ratio:.2f}x the winner's metric.")
    elif summary.proposal_stop is not None:
        at, value, rank, n = summary.proposal_stop
        lines.append(f"The data-driven proposal was stopped by ASHA at {at:g} kimg with {value:.4f}, rank {rank} of the "
                     f"{n} trials scored there.")
    else:
        lines.append("The data-driven proposal did not complete its budget (stopped by ASHA or not in the sweep).")
    return "\n".join(lines) + "\n"


def write_all(root: Path, records: list[TrialRecord], metric_name: str, proposal_text: str, wall_s: float,
              command: str, proposal: tuple[float, float, str] | None = None) -> Summary:
    summary = summarize(records, metric_name, proposal)
    write_table(records, root / "trials.parquet")
    write_heatmap(records, metric_name, root / "heatmap.png")
    if summary.winner is not None:
        atomic_write_bytes(root / "best.yaml", best_yaml(summary.winner).encode())
    atomic_write_bytes(root / "summary.md", summary_text(summary, proposal_text, wall_s, command).encode())
    return summary
