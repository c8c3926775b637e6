"""The configuration schema. Every duration is counted in training images (kimg) or steps, never epochs.

Config files and command-line overrides are merged onto these dataclasses, so a misspelt key fails with
omegaconf's "Key 'lrr' not in 'TrainConfig'. Did you mean: 'lr'?" and a wrong type fails naming the key.
Ranges and choices are checked by ``kacdist.config.validate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional


@dataclass
class KacConfig:
    """Kac forward process (DistillKac Table B-1): CIFAR-10 (25, 2) g=t; CelebA-64 and LSUN (3000, 20) g=t²."""

    a: float = 25.0  # rate of the Poisson direction flips (the damping)
    c: float = 2.0  # speed: |K_s| <= c·s
    g: str = "t"  # time change g(t): t or t2 (t²)
    sampler: str = "envelope"


@dataclass
class DatasetConfig:
    name: str = ""  # "": the dataset card's name (or "digits")
    # "digits": scikit-learn's digits, written once to WebDataset shards in cache_dir (the embedded default);
    # "shards": WebDataset shards at ``urls`` (paths, globs, brace lists or pipe: commands)
    source: str = "digits"
    # a dataset directory written by data_tools (dataset.json + manifest + shards): the shape, the classes and
    # the training shards are read from its card (kacdist.config.dataset_card)
    path: str = ""
    urls: str = ""  # "": the training shards named by the card at ``path``
    resolution: Optional[int] = None  # None: the card's; any size (docs/models.md, "Any image size")
    channels: Optional[int] = None  # None: the card's (1 grey, 3 RGB)
    num_classes: Optional[int] = None  # None: the card's (labelled data trains class-conditional); 0: unconditional
    class_names: List[str] = field(default_factory=list)  # from the card, for reports
    hflip: bool = False  # horizontal flips: wrong for digits, text, most medical and satellite data
    cache_dir: str = "~/.cache/kacdist"
    # held in memory: batches are then a pure function of (seed, step), which makes resumed runs bit-identical
    # to straight ones; None: in memory when the decoded training split fits in dataset.in_memory_limit_mib
    in_memory: Optional[bool] = None
    in_memory_limit_mib: int = 2048
    num_workers: int = 0


@dataclass
class ModelConfig:
    preset: str = "tiny"  # the UNet preset (kacdist.models.presets, docs/models.md)
    dropout: Optional[float] = None  # None: the preset's value
    use_checkpoint: bool = False


@dataclass
class TrainConfig:
    total_kimg: float = 200.0  # training length in thousands of images
    batch_size: int = 128  # the global batch, whatever the number of workers
    lr: float = 2e-4  # AdamW's peak learning rate
    weight_decay: float = 0.01
    warmup_frac: float = 0.02  # then flat, then cosine: 2% / 58% / 40% (DistillKac App. B.1)
    flat_frac: float = 0.58
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    label_dropout: float = 0.1  # probability of the null label, for classifier-free guidance
    checkpoint_every_kimg: float = 50.0
    keep_checkpoints: int = 3
    log_every_kimg: float = 5.0
    sample_every_kimg: float = 0.0  # 0: only at the end
    eval_every_kimg: float = 0.0  # 0: only at the end
    eval_samples: int = 1000
    early_stop_patience: int = 0  # evaluations without FD improvement before stopping; 0: never stop early
    seed: int = 0
    # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16. On a CPU bf16 pays only with bf16 instructions
    # (avx512_bf16 or AMX: 1.4-1.9x faster for tiny); elsewhere it is emulated, 10-50x slower (README)
    precision: str = "auto"
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads (per worker); 0: torch's default in-process, cores / workers under Ray
    # torch.compile: none | inference (the frozen networks: sampling, evaluation, a distillation's teacher) | all
    # (also the network being trained). Each new shape compiles once, 30-60 s on a CPU, then comes from the
    # disk cache in seconds; on 2 CPU cores tiny samples 1.2-1.35x faster compiled, trains no faster (README)
    compile: str = "none"
    # how an optimizer step is taken (kacdist.train.engine): torch (plain AdamW; DDP with several workers) or
    # deepspeed; auto: torch with cluster.workers=0, deepspeed with >= 1 (README, distributed benchmark)
    engine: str = "auto"
    zero_stage: int = 0  # DeepSpeed ZeRO stage 0, 1 or 2 (optimizer state / gradients partitioned over workers)
    # images per random stream: an image's t, noise, label dropout are drawn from the stream of (seed, step,
    # global index // rng_block), so the draws do not depend on the number of workers (kacdist.train.randomness)
    rng_block: int = 32


@dataclass
class SampleConfig:
    integrator: str = "ab2"
    steps: int = 100  # integrator steps from t = 1 to 0
    guidance: float = 1.2  # classifier-free guidance w: 0 unconditional, 1 conditional, > 1 guided
    num_images: int = 100  # images to draw
    labels: List[int] = field(default_factory=list)  # empty: cycle through the classes
    seed: int = 0
    batch_size: int = 256
    use_ema: bool = True
    checkpoint: str = ""  # empty: the latest checkpoint of sample.source
    source: str = "teacher"  # the stage whose EMA weights are sampled: teacher or distill-<T>-<S>[-<tag>]
    # a DistillKac student (a checkpoint with a "distill" record) is sampled as it was trained: Euler, its
    # own step count, w = 1; false keeps integrator/steps/guidance as given (experiments off its grid)
    as_trained: bool = True


@dataclass
class DistillConfig:
    """Endpoint distillation (DistillKac §4, Alg. 1; App. B.5). A stage distils a ``teacher_steps`` model into a
    ``student_steps`` student in runs/<run>/distill-<teacher_steps>-<student_steps>[-<tag>]."""

    # where teacher and student weights come from (both start from it): "" = the finished stage that
    # produced a teacher_steps model (the guided teacher when teacher_steps = ladder[0]), "teacher",
    # a stage name such as "distill-100-20", or a checkpoint path. `from=...` on the command line sets it.
    init: str = ""
    teacher_steps: int = 100
    student_steps: int = 20
    ladder: List[int] = field(default_factory=lambda: [100, 20, 4, 2, 1])  # stage=ladder: each count distilled into the next
    # a rung that skips back: the student of k steps distils the earlier rung's model of ladder_from[k] steps
    # instead of the previous rung's, e.g. distill.ladder_from.1=4 gives 100→20→4→2 and 4→1
    ladder_from: Dict[str, int] = field(default_factory=dict)  # keys are student step counts as text
    # the teacher's substep integrator; auto: ab2 for the guided teacher, euler for an earlier student (whose
    # own sampler is Euler on its grid, so N Euler substeps reproduce it exactly)
    teacher_integrator: str = "auto"
    guidance: float = 1.2  # w of the guided teacher (eq. 6); students learn the guided velocity, sampled with w = 1
    x_source: str = "forward"  # forward | student_rollout | teacher_rollout (kacdist.train.distill)
    tag: str = ""  # appended to the stage directory, to compare variants within one run
    total_kimg: float = 20.0  # length of one distillation stage in thousands of images
    # per-stage lengths (DistillKac §5: multi-stage schedules allow per-stage settings): the stage whose student
    # takes k steps trains total_kimg × kimg_factor[k] (1 where k is absent); e.g. distill.kimg_factor.1=4: the
    # 1-step student trains 4× longer. Shortening total_kimg shortens every stage alike
    kimg_factor: Dict[str, float] = field(default_factory=dict)  # keys are step counts as text (OmegaConf's dotted keys)
    batch_size: int = 128
    lr: float = 1e-4
    ema_decay: float = 0.999
    warmup_frac: float = 0.02
    flat_frac: float = 0.58
    checkpoint_every_kimg: float = 10.0
    log_every_kimg: float = 2.0
    sample_every_kimg: float = 0.0
    seed: int = 0

    def rungs(self) -> list[tuple[int, int]]:
        """The ladder's stages as (teacher_steps, student_steps), in training order."""
        return [(int(self.ladder_from.get(str(lo), hi)), lo) for hi, lo in zip(self.ladder, self.ladder[1:])]

    def stage_kimg(self, student_steps: int) -> float:
        """The length in kimg of the stage that distils into a ``student_steps``-step student."""
        return float(self.total_kimg) * float(self.kimg_factor.get(str(student_steps), 1.0))


@dataclass
class EvalConfig:
    num_samples: int = 898  # images per evaluated setting (digits protocol: the size of the odd half)
    integrators: List[str] = field(default_factory=lambda: ["euler", "midpoint", "ab2"])
    steps: List[int] = field(default_factory=lambda: [100, 50, 20, 10, 4, 2, 1])
    guidance: List[float] = field(default_factory=lambda: [1.2, 0.0])
    seeds: List[int] = field(default_factory=lambda: [0])
    inception: bool = False  # digits: add the standard Inception FID (slow on CPU) beside the classifier FD
    # dataset.source=shards (Inception FID): the reference statistics are those of the first reference_images
    # images in shard order (50,000 for FID@50k; cached per name, count and model fingerprint); the next
    # num_samples real images give the real-vs-real floor
    reference_images: int = 10_000
    after_teacher: bool = False  # stage=teacher runs this evaluation when training has finished
    students: bool = True  # also evaluate every finished distill-* stage of the run (Euler on its own grid, w = 1)
    after_ladder: bool = False  # stage=ladder runs this evaluation when the last stage has finished


@dataclass
class WandbConfig:
    """Experiment tracking (kacdist.track): one wandb run per stage, grouped by run, job type = stage.

    offline (default): files under <run>/<stage>/wandb, no account needed, ``wandb sync`` later; online: needs a
    login (``wandb login`` or WANDB_API_KEY); disabled: nothing. The API key is read by wandb from its own
    settings or the environment, never from or into a config. Every row also goes to metrics.parquet.
    wandb's own WANDB_MODE environment variable, when set, overrides ``mode`` (the test suite sets it to
    disabled); online without a login is refused when the config is validated."""

    mode: str = "offline"  # offline | online | disabled
    project: str = "kacdist"
    entity: str = ""


@dataclass
class ReportConfig:
    """stage=report: a self-contained HTML page of a run (kacdist.report)."""

    run: str = ""  # a run directory; "": runs_dir/run_name
    after_stage: bool = True  # teacher / distill / ladder / eval write the run's report when they finish
    # paired teacher/student trajectories for the discrepancy plots (paper Fig. B-2/B-3); 0: none
    trajectory_samples: int = 64


@dataclass
class ClusterConfig:
    """Where stages run: here (``local``) or each as its own SLURM job (``slurm``, kacdist.cluster.slurm).

    The SLURM keys describe one job's allocation; facts of a cluster (does the partition exist?) are checked
    when a job is submitted, so ``print_config=true`` works anywhere."""

    kind: str = "local"  # local | slurm
    # data-parallel training workers: 0 = the stage in this process (no Ray); N >= 1 = N Ray Train workers
    # (one per GPU, or CPU workers over gloo); train.batch_size and distill.batch_size are global batches.
    # Under SLURM, 0 means: derived from the allocation (nodes x gpus_per_node; one CPU worker per node when
    # nodes > 1 without GPUs; in-process on one CPU node)
    workers: int = 0
    max_failures: int = 1  # Ray Train restarts of the worker group after a failure (-1: unlimited)
    collective_timeout_s: int = 1800  # a collective waiting longer (a dead or hung peer) fails the step
    partition: str = ""  # "": the cluster's default partition
    account: str = ""
    qos: str = ""
    nodes: int = 1  # nodes of one SLURM job
    gpus_per_node: int = 0  # GPUs of each node (0: a CPU job)
    cpus_per_node: int = 2  # CPUs the job holds on each node (one task per node)
    mem_gb: int = 0  # memory per node; 0: the cluster's default
    timeout_min: int = 60  # the job's time limit; at the limit the stage checkpoints and is requeued
    # USR2 arrives this long before the time limit (and at preemption): enough for the step in flight and one
    # checkpoint (measured in the README, "SLURM"); SLURM's scheduler may deliver it up to ~60 s late
    signal_delay_s: int = 180
    max_requeues: int = 20  # requeues after a time limit before the stage gives up (preemptions do not count)
    sbatch_extra: Dict[str, str] = field(default_factory=dict)  # more #SBATCH options, e.g. {constraint: h100}
    setup: List[str] = field(default_factory=list)  # shell lines run before the stage (module load, exports)
    log_dir: str = ""  # "": <run>/slurm (submitit's pickles and each job's stdout/stderr, per job id)
    ray_port: int = 0  # Ray head port across nodes; 0: 20000 + job id mod 20000, so jobs on one node differ


@dataclass
class TuneConfig:
    """stage=tune: a Ray Tune search over the Kac process (a, c, g) with teachers trained by the project's
    loop for ``trial_kimg`` each, scored every ``report_every_kimg`` by the teacher's monitor (classifier FD
    on digits, Inception FID on shards; ``train.eval_samples`` samples, the same sampling seeds for all),
    weak trials stopped by ASHA (kacdist.cluster.tune)."""

    # paper: DistillKac Table B-2's grid (12 settings, filtered by ``schedules``); random: ``trials`` settings
    # log-uniform in [a_min, a_max] x [c_min, c_max] for each schedule
    space: str = "paper"
    # explicit settings "a/c/g" (e.g. [25/2/t, 3000/20/t2]): when given, they are the sweep (space unused)
    settings: List[str] = field(default_factory=list)
    schedules: List[str] = field(default_factory=lambda: ["t", "t2"])
    trials: int = 12
    a_min: float = 5.0
    a_max: float = 6000.0
    c_min: float = 1.0
    c_max: float = 20.0
    proposal: bool = True  # also train the data-driven proposal (kacdist.tune.proposal) as a trial
    trial_kimg: float = 8.0
    report_every_kimg: float = 2.0
    grace_kimg: float = 2.0  # ASHA: no trial is stopped before this
    reduction_factor: int = 2  # ASHA: the best 1/reduction_factor go on at each rung
    max_concurrent: int = 1  # trials at once
    cpus_per_trial: int = 0  # 0: the cores / max_concurrent
    gpus_per_trial: float = 0.0
    spread_seeds: List[int] = field(default_factory=lambda: [1, 2])  # the winner trained again with these seeds
    seed: int = 0  # of the random space


@dataclass
class RunConfig:
    stage: str = "teacher"
    run_name: str = ""  # "": the dataset's name
    runs_dir: str = "runs"  # where runs live: <runs_dir>/<run_name>/
    print_config: bool = False  # print the resolved configuration and exit
    kac: KacConfig = field(default_factory=KacConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
