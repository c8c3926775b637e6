"""A run directory owns its config.

Every command that runs a training stage of ``runs/<run>`` saves its resolved config there (``config.yaml``,
``kacdist.cluster.execute``). Once a stage of the run has trained (a checkpoint or DONE exists), a later
command starts from that saved config and applies only what it says itself:

* dotted keys change what they name; a key in ``FROZEN`` (the data, the Kac process, the model and the
  teacher's optimisation) that differs from the run's value is refused, naming the key, the run's value and
  how to start a new run instead; repeating the run's value is fine;
* ``dataset=`` / ``model=`` tokens are not merged again: they are accepted when what they name (the
  dataset's name, source, path or shards; the model preset) is the run's, and refused like a key otherwise; ``stage=`` and ``cluster=`` apply as usual;
* everything else stays free: ``cluster.*``, ``runs_dir``, ``sample.*``, ``eval.*``, ``wandb.*``, the
  execution knobs of ``train`` (``FREE_TRAIN``), and ``distill.*`` — except that the settings a finished
  distillation stage trained with (``DISTILL_TRAINED``) are checked against that stage's own saved config.

A run whose stages have not trained yet is not bound: its saved config is replaced by the next command's.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

FREE_DATASET = {"cache_dir", "num_workers"}
FREE_TRAIN = {"engine", "zero_stage", "threads", "compile", "precision", "device", "log_every_kimg", "checkpoint_every_kimg", "keep_checkpoints",
              "sample_every_kimg", "eval_every_kimg", "eval_samples", "early_stop_patience"}
DISTILL_TRAINED = ("total_kimg", "batch_size", "lr", "ema_decay", "warmup_frac", "flat_frac", "guidance", "x_source",
                   "teacher_integrator", "seed")
RUN_CONFIG = "config.yaml"


class RunConfigConflict(ValueError):
    """A command asks a run for something that contradicts what the run has trained with."""


def frozen(key: str) -> bool:
    """Whether a dotted key is fixed once the run has trained."""
    section, _, rest = key.partition(".")
    if section in ("kac", "model"):
        return True
    if section == "dataset":
        return rest.split(".")[0] not in FREE_DATASET
    if section == "train":
        return rest.split(".")[0] not in FREE_TRAIN
    return False


def has_trained(run_root: Path) -> bool:
    """A stage of the run has written a checkpoint (or finished)."""
    return run_root.is_dir() and any(
        any(d.glob("checkpoints/ckpt-*.pt")) or (d / "DONE").exists() for d in run_root.iterdir() if d.is_dir())


def _flat(node, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def frozen_differences(before: DictConfig, after: DictConfig) -> list[tuple[str, object, object]]:
    a = _flat(OmegaConf.to_container(before, resolve=True))
    b = _flat(OmegaConf.to_container(after, resolve=True))
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if frozen(k) and a.get(k) != b.get(k)]


def conflict_message(run_root: Path, what: str, key: str, run_value, new_value) -> str:
    return (f"{what} would change {key} from {run_value!r} (what run {run_root} has trained with) to {new_value!r}. "
            f"Drop it to continue this run, or start a new run for it: run_name=<new name> (or another runs_dir)")


def check_finished_distill_stages(run_root: Path, expected: dict[str, dict]) -> None:
    """A finished distillation stage is reused as it is: refuse settings it did not train with. ``expected``:
    stage name → the distill settings the command would train it with (``total_kimg`` = that stage's length)."""
    for name, distill in expected.items():
        saved = run_root / name / "config.yaml"
        if not (run_root / name / "DONE").exists() or not saved.exists():
            continue
        trained = OmegaConf.to_container(OmegaConf.load(saved), resolve=True).get("distill", {})
        for key in DISTILL_TRAINED:
            if key in trained and trained[key] != distill.get(key):
                what = (f"{distill.get(key)!r} kimg for stage {name} (distill.total_kimg × distill.kimg_factor)"
                        if key == "total_kimg" else f"distill.{key}={distill.get(key)!r}")
                raise RunConfigConflict(
                    f"{what}: stage {name} of run {run_root} has finished with "
                    f"distill.{key}={trained[key]!r} and is reused as it is; drop the key, distil a variant beside it "
                    f"with distill.tag=<name>, or start a new run with run_name=<new name>")
