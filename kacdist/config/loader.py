"""Command line → validated RunConfig.

    python jobs/launch.py stage=teacher cluster=local dataset=digits train.total_kimg=100 kac.a=30

A token ``group=name`` (group in GROUPS) merges ``configs/<group>/<name>.yaml``; any other ``key=value``
is a dotted override. Order: schema defaults → configs/defaults.yaml → dataset → model → stage → cluster →
overrides, so a dataset file may set the Kac parameters and the model preset it wants and the command line
has the last word. Everything is validated before any work starts.
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


def load_config(argv: Sequence[str], config_dir: Path = CONFIG_DIR) -> RunConfig:
    """Parse ``group=name`` and ``dotted.key=value`` tokens into a validated RunConfig object."""
    choices = dict(_load_yaml(config_dir / "defaults.yaml")["groups"]) if (config_dir / "defaults.yaml").exists() else {}
    overrides: list[str] = []
    for token in argv:
        if "=" not in token or token.startswith("-"):
            raise ConfigError(f"cannot parse {token!r}: use group=name ({', '.join(GROUPS)}) or dotted.key=value")
        key, value = token.split("=", 1)
        if key == "from":  # `from=<checkpoint or stage>`: where a distillation stage starts (DistillConfig.init)
            overrides.append(f"distill.init={value}")
        elif key in GROUPS:
            choices[key] = value
        else:
            overrides.append(token)
    merged = OmegaConf.structured(RunConfig)
    layers = []
    base = config_dir / "defaults.yaml"
    if base.exists():
        layer = _load_yaml(base)
        layer.pop("groups", None)
        layers.append((str(base), layer))
    for group in ("dataset", "model", "stage", "cluster"):
        name = choices.get(group)
        if name is None:
            continue
        path = config_dir / group / f"{name}.yaml"
        if not path.exists():
            raise ConfigError(f"{group}={name!r} does not exist; valid: {', '.join(available(group, config_dir))}")
        layers.append((str(path), _load_yaml(path)))
    layers.append(("command line", OmegaConf.from_dotlist(overrides)))
    for origin, layer in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as err:
            raise ConfigError(f"{origin}: {str(err).splitlines()[0]} (full key: {getattr(err, 'full_key', '?')})") from err
    if "stage" in choices:
        merged.stage = choices["stage"]
    cfg: RunConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    validate_config(cfg)
    return cfg


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: RunConfig, path: Path) -> None:
    """Write the resolved config atomically (temp file + rename). It holds no secrets: the schema has none."""
    atomic_write_bytes(path, to_yaml(cfg).encode())


def load_saved_config(path: Path) -> RunConfig:
    merged = OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.load(path))
    return OmegaConf.to_object(merged)  # type: ignore[return-value]
