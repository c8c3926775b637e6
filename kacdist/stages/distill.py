"""stage=distill (one endpoint-distillation stage) and stage=ladder (100→20→4→2→1, DistillKac §5, App. B.5).

A stage directory is runs/<run>/distill-<T>-<S>[-<tag>]/ with the teacher's shape (config.yaml,
checkpoints/, metrics.parquet, samples/, DONE) plus source.json naming the checkpoint it started from. Each
stage finds its input when it starts, by reading the previous stage's DONE (never a path fixed at submission):
a T-step model comes from the finished stage that produced one (distill-*-T[-tag]) or, for the first
rung, from the guided teacher. A finished stage is reused, not retrained; rerunning resumes.

Rank 0 records each attempt of a stage in its provenance.json and tracks the stage as one wandb run of job
type distill (``kacdist.track``), grouped with the run's teacher.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from kacdist.atomic import atomic_write_bytes
from kacdist.config.loader import save_config, to_yaml
from kacdist.config.schema import DistillConfig, RunConfig
from kacdist.kac import KacProcess
from kacdist.sampling import generate, image_grid, save_png
from kacdist.stages.common import run_root, stage_dir
from kacdist.track.wandb_run import track_stage
from kacdist.train.checkpoint import load_latest_checkpoint
from kacdist.train.device import autocast_dtype, compiled, resolve_device
from kacdist.train.distill import guided_teacher, student_teacher, substeps, train_distill
from kacdist.train.loop import LoopResult, LoopSettings, read_done
from kacdist.train.workers import Workers

log = logging.getLogger(__name__)


class StageInputError(FileNotFoundError):
    """The model a distillation stage starts from is missing or ambiguous."""


def distill_stage_name(teacher_steps: int, student_steps: int, tag: str = "") -> str:
    return f"distill-{teacher_steps}-{student_steps}" + (f"-{tag}" if tag else "")


@dataclass
class StageInput:
    checkpoint: Path
    state: dict  # the loaded checkpoint
    kind: str  # "teacher" (the guided Kac flow) or "student" (an earlier DistillKac stage)
    stage: str  # the stage directory name it came from, or "" for an explicit path
    steps: int  # the step count the model is meant to be sampled with


def _finished_checkpoint(run_dir: Path) -> tuple[dict, Path]:
    done = read_done(run_dir)
    if done is None:
        raise StageInputError(f"{run_dir} has not finished (no DONE): run that stage first")
    found = load_latest_checkpoint(run_dir / "checkpoints")
    if found is None:
        raise StageInputError(f"{run_dir} is marked DONE but has no readable checkpoint under {run_dir / 'checkpoints'}")
    return found


def _describe(state: dict, checkpoint: Path, stage: str, default_steps: int) -> StageInput:
    meta = state.get("distill")
    if meta:
        return StageInput(checkpoint, state, "student", stage, int(meta["student_steps"]))
    return StageInput(checkpoint, state, "teacher", stage, default_steps)


def resolve_stage_input(cfg: RunConfig, teacher_steps: int | None = None, init: str | None = None) -> StageInput:
    """The model a ``teacher_steps`` distillation stage starts from (see ``DistillConfig.init``)."""
    dc = cfg.distill
    teacher_steps = dc.teacher_steps if teacher_steps is None else teacher_steps
    init = dc.init if init is None else init
    root = run_root(cfg)
    if init and (Path(init).suffix == ".pt" or Path(init).is_file()):
        path = Path(init).expanduser()
        if not path.is_file():
            raise StageInputError(f"distill.init={init!r}: no such checkpoint file")
        state = torch.load(path, map_location="cpu", weights_only=True)
        return _describe(state, path, "", teacher_steps)
    if init:
        if not (root / init).is_dir():
            have = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            raise StageInputError(f"distill.init={init!r}: no stage directory {root / init}; this run has: {', '.join(have) or 'nothing yet'}")
        state, path = _finished_checkpoint(root / init)
        return _describe(state, path, init, teacher_steps)
    suffix = f"-{dc.tag}" if dc.tag else ""
    pattern = re.compile(rf"distill-\d+-{teacher_steps}{re.escape(suffix)}")
    candidates = sorted(p for p in root.iterdir() if pattern.fullmatch(p.name) and (p / "DONE").exists()) if root.is_dir() else []
    if len(candidates) == 1:
        state, path = _finished_checkpoint(candidates[0])
        return _describe(state, path, candidates[0].name, teacher_steps)
    if len(candidates) > 1:
        raise StageInputError(
            f"several finished stages produce a {teacher_steps}-step model ({', '.join(p.name for p in candidates)}); "
            "choose one with from=<stage>"
        )
    if teacher_steps == dc.ladder[0]:
        state, path = _finished_checkpoint(stage_dir(cfg, "teacher"))
        return _describe(state, path, "teacher", teacher_steps)
    raise StageInputError(
        f"no finished stage produces a {teacher_steps}-step model in {root} (looked for distill-*-{teacher_steps}{suffix}"
        f" and, for {dc.ladder[0]} steps, the teacher): run that stage first or pass from=<stage or checkpoint>"
    )


def distill_settings(cfg: RunConfig, name: str) -> LoopSettings:
    dc, tc = cfg.distill, cfg.train
    return LoopSettings(
        total_kimg=dc.total_kimg, batch_size=dc.batch_size, lr=dc.lr, weight_decay=tc.weight_decay,
        warmup_frac=dc.warmup_frac, flat_frac=dc.flat_frac, grad_clip=tc.grad_clip, ema_decay=dc.ema_decay,
        checkpoint_every_kimg=dc.checkpoint_every_kimg, keep_checkpoints=tc.keep_checkpoints,
        log_every_kimg=dc.log_every_kimg, sample_every_kimg=dc.sample_every_kimg, seed=dc.seed,
        rng_block=tc.rng_block, name=name,
    )


def _snapshot(cfg: RunConfig, out: Path, student_steps: int):
    process = KacProcess(cfg.kac.a, cfg.kac.c, cfg.kac.g, cfg.kac.sampler)
    shape = (cfg.dataset.channels, cfg.dataset.resolution, cfg.dataset.resolution)
    from kacdist.stages.sample import sample_labels

    def snapshot(model: torch.nn.Module, step: int) -> None:
        device = next(model.parameters()).device
        n = min(100, cfg.sample.num_images)
        result = generate(model, process, shape, list(range(n)), sample_labels(cfg, n), "euler", student_steps, 1.0,
                          cfg.sample.batch_size, device, autocast_dtype(cfg.train.precision, device))
        out.mkdir(parents=True, exist_ok=True)
        save_png(image_grid(result.uint8()), out / f"grid-{step:09d}.png")

    return snapshot


def run_distill(cfg: RunConfig, teacher_steps: int | None = None, student_steps: int | None = None,
                init: str | None = None, workers: Workers | None = None) -> LoopResult:
    """One stage: distil a teacher_steps model into a student_steps student (or resume, or reuse).

    ``workers``: this process's place among data-parallel workers (None: the only one). Every worker
    holds the frozen teacher; the student goes through the training engine."""
    from kacdist.train.teacher import build_model, resolve_engine

    w = workers if workers is not None else Workers()
    dc = cfg.distill
    teacher_steps = dc.teacher_steps if teacher_steps is None else teacher_steps
    student_steps = dc.student_steps if student_steps is None else student_steps
    n = substeps(teacher_steps, student_steps)
    name = distill_stage_name(teacher_steps, student_steps, dc.tag)
    out = stage_dir(cfg, name)
    done = read_done(out)
    if done is not None:
        if w.is_main:
            log.info("%s already finished at step %d (%s): reused", name, done.step, done.checkpoint)
        return done
    source = resolve_stage_input(cfg, teacher_steps, init)
    if source.steps != teacher_steps:
        raise StageInputError(
            f"{name}: {source.checkpoint} is a {source.steps}-step {source.kind}, not a {teacher_steps}-step model; "
            f"set distill.teacher_steps={source.steps} or choose another from="
        )
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = w.device if w.device is not None else resolve_device(cfg.train.device)
    amp = autocast_dtype(cfg.train.precision, device)
    # Alg. 1 line 2: teacher and student both start from the same (EMA) weights; the teacher stays frozen
    teacher_net = build_model(cfg).to(device)
    teacher_net.load_state_dict(source.state["ema"])
    student = build_model(cfg).to(device)
    student.load_state_dict(source.state["ema"])
    null_label = getattr(teacher_net, "null_label", None) if cfg.dataset.num_classes else None
    teacher_net = compiled(teacher_net, cfg.train.compile)
    if source.kind == "teacher":
        teacher = guided_teacher(teacher_net, dc.guidance, null_label, amp)
        integrator = "ab2" if dc.teacher_integrator == "auto" else dc.teacher_integrator
    else:
        teacher = student_teacher(teacher_net, amp)
        integrator = "euler" if dc.teacher_integrator == "auto" else dc.teacher_integrator
    out.mkdir(parents=True, exist_ok=True)
    # the stage's own config records its length as total_kimg (factor folded in), so status, the report and a
    # later run read it as it is
    stage_cfg = replace(cfg, stage="distill", distill=replace(dc, teacher_steps=teacher_steps, student_steps=student_steps,
                                                                total_kimg=dc.stage_kimg(student_steps), kimg_factor={}))
    record = {"checkpoint": str(source.checkpoint), "kind": source.kind, "stage": source.stage,
              "teacher_steps": teacher_steps, "student_steps": student_steps, "substeps": n,
              "teacher_integrator": integrator, "guidance": dc.guidance if source.kind == "teacher" else None,
              "x_source": dc.x_source}
    if w.is_main:
        from kacdist.track.provenance import record_provenance

        record_provenance(out, name)
        save_config(stage_cfg, out / "config.yaml")
        atomic_write_bytes(out / "source.json", json.dumps(record, indent=2).encode())
        log.info("%s: %s from %s, N = %d %s substeps, x from %s", name, source.kind, source.checkpoint, n, integrator, dc.x_source)
    settings = distill_settings(stage_cfg, name)
    settings.extra_state = {"distill": {k: v for k, v in record.items() if v is not None}}
    from kacdist.train.batches import make_batches

    def batches(start_step: int):  # built by the loop once the resume step is known
        return make_batches(cfg.dataset, dc.batch_size // w.world_size, dc.seed, start_step, w.rank, w.world_size, device)

    process = KacProcess(cfg.kac.a, cfg.kac.c, cfg.kac.g, cfg.kac.sampler)
    with track_stage(stage_cfg, out, name, job_type="distill", enabled=w.is_main) as tracking:
        result = train_distill(
            settings, out, student, teacher, process, batches, to_yaml(stage_cfg), device,
            teacher_steps=teacher_steps, student_steps=student_steps, integrator=integrator, x_source=dc.x_source,
            amp_dtype=amp, snapshot=_snapshot(cfg, out / "samples", student_steps),
            workers=w, engine=resolve_engine(cfg), zero_stage=cfg.train.zero_stage, compile_mode=cfg.train.compile,
            on_metrics=tracking.send_committed if tracking else None,
        )
    if w.is_main:
        log.info("%s %s: step %d, %.1f kimg, checkpoint %s", name, result.status, result.step, result.kimg, result.checkpoint)
    return result


def run_ladder(cfg: RunConfig, workers: Workers | None = None) -> list[LoopResult]:
    """The multi-stage ladder (default 100→20→4→2→1): the teacher (trained first unless finished or
    ``distill.init`` names another start), then each stage's teacher is the previous stage's student, or the
    earlier rung's that ``distill.ladder_from`` names. The same stage list as one SLURM job per stage
    (``kacdist.cluster.slurm.stage_plan``). Training only; ``eval.after_ladder`` is run by the caller
    (``kacdist.stages.dispatch``). Returns the distillation results."""
    if not cfg.distill.init:
        from kacdist.stages.teacher import run_teacher

        run_teacher(replace(cfg, stage="teacher"), workers)
    return [run_distill(cfg, hi, lo, init, workers=workers) for hi, lo, init in ladder_rungs(cfg.distill)]


def ladder_rungs(dc: DistillConfig) -> list[tuple[int, int, str]]:
    """The ladder's stages as (teacher_steps, student_steps, init): the first rung, and any rung that distils
    the ladder's first count (``distill.ladder_from``), starts from ``distill.init``; every other rung from the
    stage whose student has its teacher's step count."""
    producer = {lo: distill_stage_name(hi, lo, dc.tag) for hi, lo in dc.rungs()}
    return [(hi, lo, dc.init if hi == dc.ladder[0] else producer[hi]) for hi, lo in dc.rungs()]
