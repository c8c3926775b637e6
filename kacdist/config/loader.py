"""Command line → validated RunConfig.

    python jobs/launch.py stage=teacher cluster=local dataset=digits train.total_kimg=100 kac.a=30

A token ``group=name`` (group in GROUPS) merges ``configs/<group>/<name>.yaml``; ``settings=<file.yaml>``
reads dotted overrides from a YAML file (e.g. the best Kac setting a ``stage=tune`` sweep wrote), placed
where the token stands; any other ``key=value`` is a dotted override. Order: schema defaults → configs/defaults.yaml → the group files chosen by default
(configs/defaults.yaml's ``groups``) → the group files named on the command line → dotted overrides; within
each kind in the order dataset, model, stage, cluster. So a dataset file sets the Kac parameters, model
preset and schedule of its data (Table B-1) over the default model, a ``model=`` on the command line beats
the dataset's preset, and dotted keys have the last word. Everything is validated before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kacdist.atomic import atomic_write_bytes
from kacdist.config.schema import RunConfig
from kacdist.config.validate import ConfigError, validate_config

GROUPS = ("dataset", "model", "stage", "cluster")
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def available(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def _load_yaml(path: Path) -> DictConfig:
    try:
        return OmegaConf.load(path)
    except Exception as err:  # yaml syntax errors carry line numbers; keep them
        raise ConfigError(f"cannot read {path}: {err}") from err


def _parse(argv: Sequence[str], config_dir: Path) -> tuple[dict, set, list[str]]:
    """(group choices, the groups named on the command line, dotted overrides)."""
    choices = dict(_load_yaml(config_dir / "defaults.yaml")["groups"]) if (config_dir / "defaults.yaml").exists() else {}
    overrides: list[str] = []
    named: set[str] = set()
    for token in argv:
        if token.startswith("-"):  # --help is answered before parsing (kacdist.cli); no other option exists
            raise ConfigError(f"cannot parse {token!r}: there are no options but --help; settings are group=name "
                              f"({', '.join(GROUPS)}) or dotted.key=value (kacdist --help lists them)")
        if "=" not in token:
            raise ConfigError(f"cannot parse {token!r}: use group=name ({', '.join(GROUPS)}) or dotted.key=value "
                              "(kacdist --help lists them)")
        key, value = token.split("=", 1)
        if key == "from":  # `from=<checkpoint or stage>`: where a distillation stage starts (DistillConfig.init)
            overrides.append(f"distill.init={value}")
        elif key == "settings":  # `settings=<file.yaml>`: dotted overrides from a file, in place
            overrides.extend(settings_overrides(Path(value).expanduser()))
        elif key in GROUPS:
            choices[key] = value
            named.add(key)
        else:
            overrides.append(token)
    return choices, named, overrides


def settings_overrides(path: Path) -> list[str]:
    """The dotted ``key=value`` overrides of a YAML settings file (nested mappings flattened)."""
    if not path.is_file():
        raise ConfigError(f"settings={path}: no such file")
    tree = OmegaConf.to_container(_load_yaml(path))
    if not isinstance(tree, dict):
        raise ConfigError(f"settings={path}: expected a mapping such as `kac: {{a: 25, c: 2, g: t}}`")
    out: list[str] = []

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out.append(f"{prefix}={OmegaConf.to_yaml(OmegaConf.create({'v': node})).split(':', 1)[1].strip()}")

    walk("", tree)
    return out


def _group_file(config_dir: Path, group: str, name: str) -> DictConfig:
    path = config_dir / group / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"{group}={name!r} does not exist; valid: {', '.join(available(group, config_dir))}")
    return _load_yaml(path)


def _merge(merged: DictConfig, origin: str, layer: DictConfig) -> DictConfig:
    try:
        return OmegaConf.merge(merged, layer)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{origin}: {str(err).splitlines()[0]} (full key: {getattr(err, 'full_key', '?')})") from err


def _fresh(choices: dict, named: set, overrides: list[str], config_dir: Path) -> DictConfig:
    merged = OmegaConf.structured(RunConfig)
    base = config_dir / "defaults.yaml"
    if base.exists():
        layer = _load_yaml(base)
        layer.pop("groups", None)
        merged = _merge(merged, str(base), layer)
    # group files chosen by default go first, those named on the command line after them: `dataset=cifar10`
    # then brings its own model preset over the default `model: tiny`, and `model=lightweight` beats the
    # dataset's preset; dotted keys on the command line come last of all
    order = [g for g in GROUPS if g not in named] + [g for g in GROUPS if g in named]
    for group in order:
        if choices.get(group) is not None:
            merged = _merge(merged, f"{group}={choices[group]}", _group_file(config_dir, group, choices[group]))
    return _merge(merged, "command line", OmegaConf.from_dotlist(overrides))


# what a group token names, as opposed to the defaults its file brings (a schedule, Table B-1's Kac): a later
# `dataset=folder` agrees with a run trained on it with other settings given on the command line
IDENTITY = {"dataset": ("name", "source", "path", "urls"), "model": ("preset",)}


def _continued(saved: Path, fresh: DictConfig, choices: dict, named: set, overrides: list[str], config_dir: Path) -> DictConfig:
    """The run's saved config with this command's own settings applied (kacdist.config.run_config)."""
    from kacdist.config.run_config import conflict_message, frozen_differences

    root = saved.parent
    run = _merge(OmegaConf.structured(RunConfig), str(saved), _saved_layer(saved))
    for group in ("dataset", "model"):
        if group in named:  # accepted when it names what the run has; never merged again
            layer = _group_file(config_dir, group, choices[group]).get(group) or {}
            for key in IDENTITY[group]:
                if key in layer and layer[key] not in ("", None) and layer[key] != run[group][key]:
                    raise ConfigError(conflict_message(root, f"{group}={choices[group]}", f"{group}.{key}", run[group][key], layer[key]))
    if "cluster" in named:
        run = _merge(run, f"cluster={choices['cluster']}", _group_file(config_dir, "cluster", choices["cluster"]))
    trial = _merge(run, "command line", OmegaConf.from_dotlist(overrides))
    for key, was, now in frozen_differences(run, trial):
        raise ConfigError(conflict_message(root, f"{key}={now}", key, was, now))
    for key in ("runs_dir", "run_name", "print_config"):  # where the run was found, and this command's own flag
        trial[key] = fresh[key]
    return trial


def _resolve(merged: DictConfig, choices: dict) -> RunConfig:
    from kacdist.config.dataset_card import DatasetCardError, complete_dataset

    if "stage" in choices:
        merged.stage = choices["stage"]
    cfg: RunConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    try:
        complete_dataset(cfg.dataset)
    except DatasetCardError as err:
        raise ConfigError(str(err)) from None
    if not cfg.run_name:
        cfg.run_name = cfg.dataset.name
    return cfg


def load_config(argv: Sequence[str], config_dir: Path = CONFIG_DIR) -> RunConfig:
    """Parse ``group=name`` and ``dotted.key=value`` tokens into a validated RunConfig object.

    A run that has trained continues from its saved config (kacdist.config.run_config)."""
    from kacdist.config.run_config import RUN_CONFIG, RunConfigConflict, check_finished_distill_stages, has_trained

    choices, named, overrides = _parse(argv, config_dir)
    fresh = _fresh(choices, named, overrides, config_dir)
    cfg = _resolve(fresh.copy(), choices)
    root = Path(cfg.runs_dir).expanduser() / cfg.run_name
    if (root / RUN_CONFIG).exists() and has_trained(root):
        fresh.run_name = cfg.run_name
        cfg = _resolve(_continued(root / RUN_CONFIG, fresh, choices, named, overrides, config_dir), choices)
    validate_config(cfg)
    if cfg.stage in ("distill", "ladder"):
        from kacdist.stages.distill import distill_stage_name

        dc = cfg.distill
        pairs = dc.rungs() if cfg.stage == "ladder" else [(dc.teacher_steps, dc.student_steps)]
        try:
            settings = OmegaConf.to_container(OmegaConf.structured(dc))
            check_finished_distill_stages(root, {distill_stage_name(t, s, dc.tag): {**settings, "total_kimg": dc.stage_kimg(s)}
                                                 for t, s in pairs})
        except RunConfigConflict as err:
            raise ConfigError(str(err)) from None
    return cfg


def save_run_config(cfg: RunConfig) -> Path:
    """Save ``cfg`` as its run's config (``runs/<run>/config.yaml``). ``load_config`` has already refused any
    change of what the run trained with, so this records the free settings the latest training stage used:
    rerunning that command without them resumes with the same ones."""
    from kacdist.config.run_config import RUN_CONFIG

    path = Path(cfg.runs_dir).expanduser() / cfg.run_name / RUN_CONFIG
    save_config(cfg, path)
    return path


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: RunConfig, path: Path) -> None:
    """Write the resolved config atomically (temp file + rename). It holds no secrets: the schema has none."""
    atomic_write_bytes(path, to_yaml(cfg).encode())


# keys that were renamed: a config saved by an earlier kacdist still loads (old name -> new name)
RENAMED = {("cluster", "cpus_per_task"): ("cluster", "cpus_per_node")}


def _saved_layer(path: Path) -> DictConfig:
    """A saved config, with renamed keys under their new names."""
    layer = _load_yaml(path)
    for (section, old), (new_section, new) in RENAMED.items():
        if section in layer and old in layer[section]:
            value = layer[section].pop(old)
            layer.setdefault(new_section, {})
            if new not in layer[new_section]:
                layer[new_section][new] = value
    return layer


def load_saved_config(path: Path) -> RunConfig:
    merged = OmegaConf.merge(OmegaConf.structured(RunConfig), _saved_layer(path))
    return OmegaConf.to_object(merged)  # type: ignore[return-value]
