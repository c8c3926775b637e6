"""Teacher-student trajectory discrepancies of each finished distillation stage (paper Fig. B-2/B-3),
computed by the report and cached in ``<run>/report/trajectories.parquet``.

A stage is compared with the model it was distilled from, as ``source.json`` records it: the guided
teacher with its integrator and w for the first rung, the previous student (Euler) for the next ones, so a
ladder gives its consecutive pairs. Both start from the same ``report.trajectory_samples`` prior draws
(image i from seed i, labels cycling through the classes) and use EMA weights, as distillation did.

The cache is keyed by the two checkpoints (path inside the run and size), the sample count and the
teacher's integrator and guidance: a second report reads the numbers instead of integrating again, and a
stage that was retrained is computed afresh.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kacdist.atomic import atomic_output
from kacdist.eval.trajectory import TrajectoryComparison
from kacdist.report.collect import StageData, read_parquet_rows

log = logging.getLogger(__name__)

CACHE = "trajectories.parquet"
_SCALARS = ("pearson_r", "r2", "slope", "intercept", "teacher_nfe", "student_nfe", "teacher_steps", "student_steps")


@dataclass
class StagePair:
    stage: str  # the student's stage
    teacher: str  # what it was distilled from: a stage name, or a checkpoint path given with from=
    teacher_checkpoint: Path
    student_checkpoint: Path
    source: dict  # source.json
    key: str


@dataclass
class TrajectoryResult:
    pair: StagePair
    comparison: TrajectoryComparison
    cached: bool


def _in_run(root: Path, recorded: str, stage: str) -> Path:
    """A checkpoint recorded by absolute path, found in this run by its stage and file name first (the run
    directory may have moved since), else at the recorded path."""
    here = root / stage / "checkpoints" / Path(recorded).name if stage else None
    return here if here is not None and here.exists() else Path(recorded)


def _identity(root: Path, path: Path) -> str:
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    return f"{shown}@{path.stat().st_size}"


def stage_pairs(root: Path, stages: list[StageData], samples: int) -> tuple[list[StagePair], list[tuple[str, str]]]:
    """The (teacher, student) pair of each finished distillation stage, and (stage, why not) for those
    whose checkpoints are gone."""
    pairs, skipped = [], []
    for stage in stages:
        if stage.done is None or stage.source is None or not stage.name.startswith("distill-"):
            continue
        src = stage.source
        teacher = _in_run(root, str(src.get("checkpoint", "")), str(src.get("stage") or ""))
        student = _in_run(root, str(stage.done.get("checkpoint") or ""), stage.name)
        missing = [str(p) for p in (teacher, student) if not p.is_file()]
        if missing:
            skipped.append((stage.name, f"checkpoint {missing[0]} no longer exists"))
            continue
        key = "|".join([_identity(root, teacher), _identity(root, student), f"n={samples}",
                        str(src.get("teacher_integrator")), f"w={src.get('guidance')}"])
        pairs.append(StagePair(stage.name, str(src.get("stage") or teacher), teacher, student, src, key))
    return pairs, skipped


def _from_rows(rows: list[dict], integrator: str) -> TrajectoryComparison:
    per_sample = sorted((r for r in rows if r["kind"] == "sample"), key=lambda r: r["sample"])
    per_node = sorted((r for r in rows if r["kind"] == "node"), key=lambda r: r["node"])
    first = rows[0]
    return TrajectoryComparison(
        times=np.array([r["time"] for r in per_node]), mean_sq_per_node=np.array([r["mean_sq"] for r in per_node]),
        endpoint=np.array([r["endpoint"] for r in per_sample]), mean_traj=np.array([r["mean_traj"] for r in per_sample]),
        pearson_r=first["pearson_r"], r2=first["r2"], slope=first["slope"], intercept=first["intercept"],
        teacher_nfe=int(first["teacher_nfe"]), student_nfe=int(first["student_nfe"]),
        teacher_steps=int(first["teacher_steps"]), student_steps=int(first["student_steps"]),
        teacher_integrator=integrator,
    )


def _to_rows(pair: StagePair, comparison: TrajectoryComparison) -> list[dict]:
    scalars = {name: getattr(comparison, name) for name in _SCALARS}
    return [{"key": pair.key, "stage": pair.stage, "teacher_integrator": comparison.teacher_integrator, **scalars, **row}
            for row in comparison.rows()]


def compare_pair(pair: StagePair, samples: int, device, amp_dtype) -> TrajectoryComparison:
    """Integrate the pair from the same ``samples`` prior draws (the student stage's config gives the
    model, data shape and Kac process)."""
    import torch

    from kacdist.config.loader import load_saved_config
    from kacdist.eval.trajectory import compare_trajectories
    from kacdist.kac import KacProcess
    from kacdist.sampling import prior_noise
    from kacdist.stages.common import model_from_state
    from kacdist.train.distill import guided_teacher, student_teacher

    cfg = load_saved_config(pair.student_checkpoint.parent.parent / "config.yaml")
    process = KacProcess(cfg.kac.a, cfg.kac.c, cfg.kac.g, cfg.kac.sampler)
    shape = (cfg.dataset.channels, cfg.dataset.resolution, cfg.dataset.resolution)
    x1 = prior_noise(process, shape, list(range(samples))).to(device)
    y = (torch.arange(samples) % cfg.dataset.num_classes).to(device) if cfg.dataset.num_classes else None

    def network(path: Path):
        return model_from_state(cfg, torch.load(path, map_location=device, weights_only=True), device)

    teacher_net = network(pair.teacher_checkpoint)
    if pair.source.get("kind") == "teacher":
        null_label = getattr(teacher_net, "null_label", None) if cfg.dataset.num_classes else None
        teacher = guided_teacher(teacher_net, float(pair.source["guidance"]), null_label, amp_dtype)
    else:
        teacher = student_teacher(teacher_net, amp_dtype)
    student = student_teacher(network(pair.student_checkpoint), amp_dtype)
    return compare_trajectories(lambda x, t: teacher(x, t, y), lambda x, t: student(x, t, y), x1,
                                int(pair.source["teacher_steps"]), int(pair.source["student_steps"]),
                                str(pair.source["teacher_integrator"]))


def stage_trajectories(root: Path, report_dir: Path, stages: list[StageData], samples: int, device,
                       amp_dtype=None) -> tuple[list[TrajectoryResult], list[tuple[str, str]]]:
    """The discrepancies of every finished distillation stage against its teacher, from the cache where it
    holds the same checkpoints, and the stages left out with the reason. ``samples`` = 0: none."""
    if samples <= 0:
        return [], []
    pairs, skipped = stage_pairs(root, stages, samples)
    if not pairs:
        return [], skipped
    cached: dict[str, list[dict]] = {}
    for row in read_parquet_rows(report_dir / CACHE):
        cached.setdefault(row["key"], []).append(row)
    results, rows = [], []
    for pair in pairs:
        hit = cached.get(pair.key)
        if hit:
            comparison = _from_rows(hit, str(pair.source["teacher_integrator"]))
        else:
            try:
                comparison = compare_pair(pair, samples, device, amp_dtype)
            except ValueError as err:  # e.g. teacher steps not a multiple of the student's
                skipped.append((pair.stage, str(err)))
                continue
            log.info("%s vs %s: trajectory discrepancy over %d samples, endpoint-vs-mean r = %.3f",
                     pair.stage, pair.teacher, samples, comparison.pearson_r)
        results.append(TrajectoryResult(pair, comparison, cached=bool(hit)))
        rows += hit or _to_rows(pair, comparison)
    if not all(r.cached for r in results) or set(cached) != {r.pair.key for r in results}:
        import pyarrow as pa
        import pyarrow.parquet as pq

        with atomic_output(report_dir / CACHE) as temp:  # only the current pairs: stale keys are dropped
            pq.write_table(pa.Table.from_pylist(rows), temp)
    return results, skipped
