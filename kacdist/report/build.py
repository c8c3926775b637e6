"""``stage=report``: collect the run, draw and copy its pictures into ``<run>/report/``, write
``report.html`` beside them (atomically, last, so a reader never sees a page whose images are missing),
and drop pictures an earlier report left that this one no longer shows."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kacdist.atomic import atomic_output, atomic_write_bytes
from kacdist.config.schema import RunConfig
from kacdist.report import page, plots
from kacdist.report.collect import RunData, StageData, collect
from kacdist.report.page import Picture, Pictures
from kacdist.report.trajectories import CACHE, TrajectoryResult, stage_trajectories

log = logging.getLogger(__name__)

REPORT_DIR = "report"
PAGE = "report.html"
MAX_GRIDS = 8  # snapshots shown per stage: the first, the last and evenly spaced ones between
MAX_WIDTH = 1024  # larger grids (LSUN: 2.5k pixels) are scaled down for the page
SMALL = 320  # smaller grids (digits: 171 pixels) are shown enlarged, pixelated, to this width or more


def report_root(cfg: RunConfig) -> Path:
    """The run the report is about: ``report.run`` for stage=report, else runs_dir/run_name (the run a
    training stage or stage=eval has just written)."""
    from kacdist.stages.common import target_run

    return target_run(cfg).resolve()


def copy_image(source: Path, target: Path, caption: str = "") -> Picture:
    """``source`` as ``target`` (scaled down to MAX_WIDTH when wider), shown at least SMALL pixels wide."""
    from PIL import Image

    with Image.open(source) as image:
        width, height = image.size
        if width > MAX_WIDTH:
            scaled = image.resize((MAX_WIDTH, max(1, round(height * MAX_WIDTH / width))), Image.Resampling.LANCZOS)
            with atomic_output(target) as temp:
                scaled.save(temp, format="PNG")
            width = MAX_WIDTH
        else:
            atomic_write_bytes(target, source.read_bytes())
    shown = width * max(1, -(-SMALL // width)) if width < SMALL else None
    return Picture(target.name, caption, shown)


def _evenly(items: list, keep: int) -> list:
    if len(items) <= keep:
        return items
    return [items[i] for i in sorted(set(np.linspace(0, len(items) - 1, keep).round().astype(int)))]


def _kimg_per_step(stage: StageData) -> float | None:
    for row in stage.metrics:
        if plots.finite(row.get("kimg")) and row.get("step"):
            return row["kimg"] / row["step"]
    return None


def draw(data: RunData, out: Path, trajectories: list[TrajectoryResult]) -> Pictures:
    pictures = Pictures()
    path = plots.fd_vs_nfe(data.eval_rows, out / "fd_vs_nfe.png")
    pictures.fd_vs_nfe = Picture(path.name) if path else None
    for stage in data.stages:
        path = plots.training_curves(stage.metrics, f"{stage.name}: training", out / f"{stage.name}-training.png")
        if path:
            pictures.training[stage.name] = Picture(path.name)
        path = plots.velocity_bins(stage.metrics, f"{stage.name}: velocity norm per time bin",
                                   out / f"{stage.name}-velocity.png")
        if path:
            pictures.velocity[stage.name] = Picture(path.name)
        per_step = _kimg_per_step(stage)
        grids = []
        for step, grid in _evenly(stage.grids, MAX_GRIDS):
            at = f"step {step}" + (f" ({step * per_step:g} kimg)" if per_step else "")
            grids.append(copy_image(grid, out / f"{stage.name}-grid-{step:09d}.png", at))
        pictures.grids[stage.name] = grids
        pictures.grid_counts[stage.name] = len(stage.grids)
    for sample in data.samples:
        info = sample.info
        caption = sample.path.stem
        if info:
            caption += f": {info.get('integrator')}, {info.get('steps')} steps, w = {info.get('guidance')}, " \
                       f"{info.get('nfe_per_image')} NFE"
        pictures.samples.append(copy_image(sample.path, out / f"sample-{sample.path.name}", caption))
    if data.tune is not None and data.tune.heatmap is not None:
        pictures.heatmap = copy_image(data.tune.heatmap, out / "tune-heatmap.png")
    if trajectories:
        from kacdist.eval.trajectory import plot_discrepancy_vs_time, plot_endpoint_vs_mean

        curves = {f"{r.pair.stage} ({r.comparison.student_steps} NFE)": r.comparison for r in trajectories}
        pictures.trajectory_time = Picture(plot_discrepancy_vs_time(curves, out / "trajectory-vs-t.png").name)
        for r in trajectories:
            path = plot_endpoint_vs_mean(r.comparison, out / f"trajectory-{r.pair.stage}.png",
                                         title=f"{r.pair.teacher} vs {r.pair.stage}")
            pictures.trajectory_scatter[r.pair.stage] = Picture(path.name)
    return pictures


def _shown(pictures: Pictures) -> set[str]:
    singles = [pictures.fd_vs_nfe, pictures.heatmap, pictures.trajectory_time, *pictures.samples,
               *pictures.training.values(), *pictures.velocity.values(), *pictures.trajectory_scatter.values()]
    singles += [g for grids in pictures.grids.values() for g in grids]
    return {p.src for p in singles if p is not None}


def run_report(cfg: RunConfig) -> Path:
    """Write ``<run>/report/report.html`` for the run of ``cfg`` (see ``report_root``) and return its path.

    Raises ``RunNotFoundError`` (a FileNotFoundError, ``kacdist.stages.common``) naming the runs that exist
    when the directory does not."""
    from kacdist.train.device import autocast_dtype, resolve_device

    root = report_root(cfg)
    data = collect(root, cfg)
    out = root / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.train.device)
    samples = cfg.report.trajectory_samples
    trajectories, skipped = stage_trajectories(root, out, data.stages, samples, device,
                                               autocast_dtype(cfg.train.precision, device))
    pictures = draw(data, out, trajectories)
    target = out / PAGE
    atomic_write_bytes(target, page.render(data, pictures, trajectories, skipped, samples).encode())
    keep = _shown(pictures) | {PAGE, CACHE}
    for stale in out.glob("*.png"):
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    return target
