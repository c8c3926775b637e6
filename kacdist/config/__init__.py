"""Typed run configuration: dataclass schemas validated by omegaconf, YAML groups, CLI overrides."""

from kacdist.config.loader import GROUPS, ConfigError, load_config, save_config
from kacdist.config.schema import RunConfig

__all__ = ["GROUPS", "ConfigError", "RunConfig", "load_config", "save_config"]
