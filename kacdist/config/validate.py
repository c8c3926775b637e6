"""Range and choice checks on a RunConfig: each error names the key, the value and what is allowed.

Run before any work starts (and before any job is submitted), so a bad value never costs a queue wait.
"""

from __future__ import annotations

import math

from kacdist.config.schema import DistillConfig, RunConfig
from kacdist.kac.integrators import INTEGRATORS
from kacdist.kac.sampler import SAMPLERS
from kacdist.kac.schedules import SCHEDULES

STAGES = ("teacher", "distill", "ladder", "sample", "eval", "kac_demo", "status", "cancel", "tune", "report")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
SOURCES = ("digits", "shards")
WANDB_MODES = ("disabled", "offline", "online")
CLUSTERS = ("local", "slurm")


class ConfigError(ValueError):
    """A configuration that must not run."""


def _positive(key: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{key}={value!r} is invalid: must be a positive number")


def _nonnegative(key: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{key}={value!r} is invalid: must be >= 0")


def _choice(key: str, value: object, allowed: tuple[str, ...] | list[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is invalid: allowed values are {', '.join(map(str, allowed))}")


def _fraction(key: str, value: float, upper_open: bool = False) -> None:
    ok = 0 <= value < 1 if upper_open else 0 <= value <= 1
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: must lie in [0, 1{')' if upper_open else ']'}")


def validate_config(cfg: RunConfig) -> None:
    _choice("stage", cfg.stage, STAGES)
    if not cfg.run_name or "/" in cfg.run_name:
        raise ConfigError(f"run_name={cfg.run_name!r} is invalid: must be a non-empty name without '/'")
    _positive("kac.a", cfg.kac.a)
    _positive("kac.c", cfg.kac.c)
    _choice("kac.g", cfg.kac.g, sorted(SCHEDULES))
    _choice("kac.sampler", cfg.kac.sampler, SAMPLERS)
    d = cfg.dataset
    _choice("dataset.source", d.source, SOURCES)
    if d.source == "shards" and not d.urls:
        raise ConfigError("dataset.urls is empty: dataset.source=shards needs dataset.path=<a directory written by a "
                          "data_tools converter> or dataset.urls=<shard path, glob, brace list or pipe: URL>")
    if isinstance(d.resolution, bool) or not isinstance(d.resolution, int) or d.resolution < 4:
        raise ConfigError(f"dataset.resolution={d.resolution!r} is invalid: an image side of at least 4 pixels (any size; "
                          "the network pads it inside, docs/models.md)")
    _choice("dataset.channels", d.channels, [1, 3])
    _nonnegative("dataset.num_classes", d.num_classes)
    _nonnegative("dataset.num_workers", d.num_workers)
    if cfg.model.dropout is not None:
        _fraction("model.dropout", cfg.model.dropout, upper_open=True)
    t = cfg.train
    _positive("train.total_kimg", t.total_kimg)
    _positive("train.batch_size", t.batch_size)
    _positive("train.lr", t.lr)
    _nonnegative("train.weight_decay", t.weight_decay)
    _fraction("train.warmup_frac", t.warmup_frac)
    _fraction("train.flat_frac", t.flat_frac)
    if t.warmup_frac + t.flat_frac > 1:
        raise ConfigError(f"train.warmup_frac + train.flat_frac = {t.warmup_frac + t.flat_frac:g} is invalid: must be <= 1")
    _positive("train.grad_clip", t.grad_clip)
    _fraction("train.ema_decay", t.ema_decay, upper_open=True)
    _fraction("train.label_dropout", t.label_dropout, upper_open=True)
    _positive("train.checkpoint_every_kimg", t.checkpoint_every_kimg)
    _positive("train.keep_checkpoints", t.keep_checkpoints)
    _positive("train.log_every_kimg", t.log_every_kimg)
    _nonnegative("train.sample_every_kimg", t.sample_every_kimg)
    _nonnegative("train.eval_every_kimg", t.eval_every_kimg)
    _positive("train.eval_samples", t.eval_samples)
    _nonnegative("train.early_stop_patience", t.early_stop_patience)
    _choice("train.precision", t.precision, PRECISIONS)
    _choice("train.device", t.device, DEVICES)
    _nonnegative("train.threads", t.threads)
    from kacdist.train.device import COMPILE_MODES, compile_problem

    _choice("train.compile", t.compile, COMPILE_MODES)
    if t.compile != "none":
        problem = compile_problem(t.device)
        if problem:
            raise ConfigError(problem)
    _validate_cluster(cfg)
    _validate_parallel(cfg)
    _validate_tune(cfg)
    s = cfg.sample
    _choice("sample.integrator", s.integrator, INTEGRATORS)
    _positive("sample.steps", s.steps)
    _nonnegative("sample.guidance", s.guidance)
    _positive("sample.num_images", s.num_images)
    _positive("sample.batch_size", s.batch_size)
    for label in s.labels:
        if not 0 <= label < max(d.num_classes, 1):
            raise ConfigError(f"sample.labels contains {label}: classes are 0..{d.num_classes - 1}")
    _validate_distill(cfg)
    e = cfg.eval
    _positive("eval.num_samples", e.num_samples)
    _positive("eval.reference_images", e.reference_images)
    for name in e.integrators:
        _choice("eval.integrators[]", name, INTEGRATORS)
    for steps in e.steps:
        _positive("eval.steps[]", steps)
    for w in e.guidance:
        _nonnegative("eval.guidance[]", w)
    _choice("wandb.mode", cfg.wandb.mode, WANDB_MODES)
    from kacdist.track.wandb_run import check_wandb  # WANDB_MODE and, for online mode, a login, before any work

    check_wandb(cfg)
    if not cfg.sample.source or "/" in cfg.sample.source:
        raise ConfigError(f"sample.source={cfg.sample.source!r} is invalid: a stage name such as teacher or distill-100-20")
    _validate_model(cfg)


def _validate_model(cfg: RunConfig) -> None:
    """The network of model.preset at the data's shape builds: refused here, naming the keys, never by a
    traceback after the run has started."""
    from kacdist.models.presets import PRESETS, get_preset

    _choice("model.preset", cfg.model.preset, sorted(PRESETS))
    d = cfg.dataset
    overrides = dict(image_size=d.resolution, in_channels=d.channels, num_classes=d.num_classes or None)
    if cfg.model.dropout is not None:
        overrides["dropout"] = cfg.model.dropout
    try:
        get_preset(cfg.model.preset, **overrides)
    except ValueError as err:
        raise ConfigError(
            f"model.preset={cfg.model.preset} cannot be built for dataset.resolution={d.resolution}, "
            f"dataset.channels={d.channels}, dataset.num_classes={d.num_classes}: {err}") from None


def derived_workers(cfg: RunConfig) -> int:
    """The Ray Train workers of a training stage: ``cluster.workers`` if given; under SLURM with 0, the
    allocation's (one per GPU; one per node on CPU nodes when there are several; else 0, in-process)."""
    cl = cfg.cluster
    if cl.workers or cl.kind != "slurm":
        return cl.workers
    if cl.gpus_per_node:
        total = cl.nodes * cl.gpus_per_node
        return total if total > 1 else 0
    return cl.nodes if cl.nodes > 1 else 0


def _validate_cluster(cfg: RunConfig) -> None:
    """Values invalid in themselves; whether the cluster has such a partition is checked at submission."""
    cl = cfg.cluster
    _choice("cluster.kind", cl.kind, CLUSTERS)
    for key in ("nodes", "cpus_per_node", "timeout_min", "signal_delay_s"):
        value = getattr(cl, key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"cluster.{key}={value!r} is invalid: must be a positive whole number")
    for key in ("gpus_per_node", "mem_gb", "max_requeues"):
        value = getattr(cl, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"cluster.{key}={value!r} is invalid: must be a whole number >= 0")
    if cl.signal_delay_s >= cl.timeout_min * 60:
        raise ConfigError(f"cluster.signal_delay_s={cl.signal_delay_s} is invalid: the stop signal must come before the "
                          f"time limit (cluster.timeout_min={cl.timeout_min} is {cl.timeout_min * 60} s)")
    if cl.ray_port and not 1024 <= cl.ray_port <= 65535:
        raise ConfigError(f"cluster.ray_port={cl.ray_port} is invalid: 0 (derived from the job id) or a port in 1024..65535")
    if cl.kind != "slurm":
        return
    slots = cl.nodes * cl.gpus_per_node
    if cl.gpus_per_node and cl.workers and cl.workers != slots:
        raise ConfigError(
            f"cluster.workers={cl.workers} is invalid with cluster.nodes={cl.nodes} x cluster.gpus_per_node="
            f"{cl.gpus_per_node}: one worker per GPU, so cluster.workers={slots} (or 0 to derive it)")
    if not cl.gpus_per_node and cl.workers > cl.nodes * cl.cpus_per_node:
        raise ConfigError(
            f"cluster.workers={cl.workers} is more than the {cl.nodes * cl.cpus_per_node} CPUs the job asks for "
            f"(cluster.nodes x cluster.cpus_per_node); each CPU worker needs a core")
    if cl.nodes > 1 and derived_workers(cfg) % cl.nodes:
        raise ConfigError(f"cluster.workers={cl.workers} does not spread evenly over cluster.nodes={cl.nodes}")
    for key in cl.sbatch_extra:
        if key.startswith("-") or key in ("signal", "requeue", "dependency", "output", "error"):
            raise ConfigError(f"cluster.sbatch_extra.{key} is invalid: give option names without dashes; signal, requeue, "
                              "dependency and the log paths are set by kacdist (cluster.signal_delay_s, cluster.log_dir)")


def _validate_parallel(cfg: RunConfig) -> None:
    """Workers, engine and ZeRO stage; whether the machine has the cores or GPUs is checked at launch."""
    from kacdist.train.engine import ENGINES, ZERO_STAGES

    t, cl = cfg.train, cfg.cluster
    if isinstance(cl.workers, bool) or cl.workers < 0:
        raise ConfigError(f"cluster.workers={cl.workers!r} is invalid: 0 (in this process) or the number of Ray Train workers")
    if cl.max_failures < -1:
        raise ConfigError(f"cluster.max_failures={cl.max_failures!r} is invalid: >= 0, or -1 for unlimited restarts")
    _positive("cluster.collective_timeout_s", cl.collective_timeout_s)
    _choice("train.engine", t.engine, ("auto",) + ENGINES)
    if t.zero_stage == 3:
        raise ConfigError(
            "train.zero_stage=3 is not supported: ZeRO-3 partitions the parameters themselves, while the EMA, the "
            "frozen distillation teacher and rank-independent checkpoints need whole parameters on every worker, "
            "and for UNets far below 1B parameters it only adds communication; use 0, 1 or 2")
    _choice("train.zero_stage", t.zero_stage, ZERO_STAGES)
    if t.zero_stage and t.engine == "torch":
        raise ConfigError(f"train.zero_stage={t.zero_stage} needs train.engine=deepspeed (or auto with cluster.workers>=1)")
    if t.zero_stage and t.engine == "auto" and derived_workers(cfg) == 0:
        raise ConfigError(f"train.zero_stage={t.zero_stage} with cluster.workers=0 needs train.engine=deepspeed")
    _positive("train.rng_block", t.rng_block)
    workers = max(derived_workers(cfg), 1)
    batches = []
    if cfg.stage == "teacher":
        batches.append(("train.batch_size", t.batch_size))
    if cfg.stage in ("distill", "ladder"):
        batches.append(("distill.batch_size", cfg.distill.batch_size))
    for key, value in batches:
        if value % workers:
            raise ConfigError(
                f"{key}={value} is not divisible by cluster.workers={workers}: it is the global batch and each worker "
                f"takes {key}/workers images; use a multiple of {workers}")


def _validate_tune(cfg: RunConfig) -> None:
    tc = cfg.tune
    _choice("tune.space", tc.space, ("paper", "random"))
    for text in tc.settings:
        parts = str(text).split("/")
        try:
            a, c, g = float(parts[0]), float(parts[1]), parts[2].strip()
        except (IndexError, ValueError):
            raise ConfigError(f"tune.settings entry {text!r} is invalid: write a/c/g such as 25/2/t") from None
        if len(parts) != 3 or not (a > 0 and c > 0):
            raise ConfigError(f"tune.settings entry {text!r} is invalid: a and c must be positive, as in 25/2/t")
        _choice("tune.settings[] g", g, sorted(SCHEDULES))
    if not tc.schedules:
        raise ConfigError("tune.schedules is empty: give at least one of " + ", ".join(sorted(SCHEDULES)))
    for g in tc.schedules:
        _choice("tune.schedules[]", g, sorted(SCHEDULES))
    _positive("tune.trials", tc.trials)
    for key in ("a_min", "a_max", "c_min", "c_max", "trial_kimg", "report_every_kimg", "grace_kimg"):
        _positive(f"tune.{key}", getattr(tc, key))
    if tc.a_min > tc.a_max or tc.c_min > tc.c_max:
        raise ConfigError(f"tune ranges are empty: a in [{tc.a_min:g}, {tc.a_max:g}], c in [{tc.c_min:g}, {tc.c_max:g}]")
    if tc.report_every_kimg > tc.trial_kimg or tc.grace_kimg > tc.trial_kimg:
        raise ConfigError(f"tune.report_every_kimg={tc.report_every_kimg:g} and tune.grace_kimg={tc.grace_kimg:g} must not "
                          f"exceed tune.trial_kimg={tc.trial_kimg:g}")
    if tc.reduction_factor < 2:
        raise ConfigError(f"tune.reduction_factor={tc.reduction_factor} is invalid: must be >= 2")
    _positive("tune.max_concurrent", tc.max_concurrent)
    _nonnegative("tune.cpus_per_trial", tc.cpus_per_trial)
    _nonnegative("tune.gpus_per_trial", tc.gpus_per_trial)


def _validate_ladder_from(dc: DistillConfig) -> None:
    """distill.ladder_from: keys are student step counts; for each one this ladder trains, the value must be a
    count the ladder reaches before it. A count the ladder does not train is ignored (as in kimg_factor), so a
    preset's branch does not stand in the way of a shorter ladder."""
    ladder = [int(n) for n in dc.ladder]
    for key, source in dc.ladder_from.items():
        if not (key.isdigit() and int(key) >= 1):
            raise ConfigError(f"distill.ladder_from has the key {key!r}: keys are student step counts (>= 1), "
                              "e.g. distill.ladder_from.1=4")
        if int(key) not in ladder[1:]:
            continue
        earlier = ladder[:ladder.index(int(key))]
        if source not in earlier:
            raise ConfigError(f"distill.ladder_from.{key}={source} is invalid: must be a step count that "
                              f"distill.ladder={ladder} reaches before {key} ({', '.join(map(str, earlier))})")


def _validate_distill(cfg: RunConfig) -> None:
    from kacdist.train.distill import TEACHER_INTEGRATORS, X_SOURCES, DistillConfigError, substeps

    dc = cfg.distill
    try:
        if cfg.stage == "ladder":
            if len(dc.ladder) < 2:
                raise ConfigError(f"distill.ladder={list(dc.ladder)} is invalid: needs at least two step counts, e.g. [100, 20, 4, 2, 1]")
            for hi, lo in zip(dc.ladder, dc.ladder[1:]):
                substeps(hi, lo)
            _validate_ladder_from(dc)  # a count reached earlier is a multiple of every later one
        else:
            substeps(dc.teacher_steps, dc.student_steps)
    except DistillConfigError as err:
        raise ConfigError(str(err)) from None
    _choice("distill.teacher_integrator", dc.teacher_integrator, ("auto",) + TEACHER_INTEGRATORS)
    _choice("distill.x_source", dc.x_source, X_SOURCES)
    _nonnegative("distill.guidance", dc.guidance)
    if "/" in dc.tag:
        raise ConfigError(f"distill.tag={dc.tag!r} is invalid: must not contain '/'")
    _positive("distill.total_kimg", dc.total_kimg)
    for steps, factor in dc.kimg_factor.items():
        if not (steps.isdigit() and int(steps) >= 1):
            raise ConfigError(f"distill.kimg_factor has the key {steps!r}: keys are student step counts (>= 1), "
                              "e.g. distill.kimg_factor.1=4")
        _positive(f"distill.kimg_factor.{steps}", factor)
    _positive("distill.batch_size", dc.batch_size)
    _positive("distill.lr", dc.lr)
    _fraction("distill.ema_decay", dc.ema_decay, upper_open=True)
    _fraction("distill.warmup_frac", dc.warmup_frac)
    _fraction("distill.flat_frac", dc.flat_frac)
    if dc.warmup_frac + dc.flat_frac > 1:
        raise ConfigError(f"distill.warmup_frac + distill.flat_frac = {dc.warmup_frac + dc.flat_frac:g} is invalid: must be <= 1")
    _positive("distill.checkpoint_every_kimg", dc.checkpoint_every_kimg)
    _positive("distill.log_every_kimg", dc.log_every_kimg)
    _nonnegative("distill.sample_every_kimg", dc.sample_every_kimg)
