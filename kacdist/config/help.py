"""``kacdist --help``: the stages, the config groups and the keys people change most, each with its default.

Nothing here is written twice: a stage's description is the first ``# `` comment line of
``configs/stage/<stage>.yaml``, a group's choices are the files of ``configs/<group>/`` and its default the
``groups:`` of ``configs/defaults.yaml``, a key's default is the schema dataclass's and its meaning the
schema's comment on that field (kacdist/config/schema.py). Where the group files chosen by default set a
key to something else (digits trains 80 kimg, not the schema's 200), the help says which file and what value.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from kacdist.config.loader import CONFIG_DIR, GROUPS, available
from kacdist.config.schema import RunConfig

COMMON_KEYS = (
    "run_name", "runs_dir", "train.total_kimg", "train.batch_size", "train.lr", "kac.a", "kac.c", "kac.g",
    "dataset.path", "dataset.resolution", "model.preset", "distill.ladder", "distill.total_kimg", "sample.steps",
    "sample.guidance", "sample.num_images", "eval.num_samples", "cluster.workers", "cluster.partition",
    "cluster.nodes", "cluster.gpus_per_node", "cluster.timeout_min", "wandb.mode", "report.run", "print_config",
)

# the loader's own tokens (kacdist.config.loader._parse): not schema keys, so their meaning is stated here
SHORTHANDS = (
    ("from=<stage or checkpoint>", "where a distillation stage starts: short for distill.init=..."),
    ("settings=<file.yaml>", "dotted overrides from a YAML file, e.g. the best.yaml a stage=tune sweep wrote"),
)

MEANING_CHARS = 100  # a meaning longer than this is cut at its first clause


def stage_descriptions(config_dir: Path = CONFIG_DIR) -> dict[str, str]:
    """Each stage file's first ``# `` comment line ("" when it has none)."""
    out = {}
    for stage in available("stage", config_dir):
        lines = (config_dir / "stage" / f"{stage}.yaml").read_text().splitlines()
        out[stage] = next((line[2:].strip() for line in lines if line.startswith("# ")), "")
    return out


def default_choices(config_dir: Path = CONFIG_DIR) -> dict[str, str]:
    path = config_dir / "defaults.yaml"
    return dict(OmegaConf.load(path)["groups"]) if path.exists() else {}


def _field_comments(cls: type) -> dict[str, str]:
    """A dataclass's field → its comment: the one at the end of its line, else the comment lines above it."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    out = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        text = comments.get(node.end_lineno, "")
        if not text:  # the block of whole-line comments right above the field
            block, row = [], node.lineno - 1
            while row >= 1 and lines[row - 1].lstrip().startswith("#"):
                block.insert(0, comments[row])
                row -= 1
            text = " ".join(block)
        out[node.target.id] = text
    return out


def _one_line(text: str) -> str:
    for separator in ("; ", ". ", ": "):
        if len(text) > MEANING_CHARS:
            text = text.split(separator)[0]
    return text


@lru_cache(maxsize=1)
def _schema() -> dict[str, tuple[Any, str]]:
    """Every dotted key of RunConfig → (its schema default, the one-line meaning from the schema's comments)."""
    out: dict[str, tuple[Any, str]] = {}

    def walk(cls: type, prefix: str) -> None:
        comments = _field_comments(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{prefix}{f.name}.")
            else:
                out[prefix + f.name] = (default, _one_line(comments.get(f.name, "")))

    walk(RunConfig, "")
    return out


def schema_default(key: str) -> Any:
    return _schema()[key][0]


def set_by_default_groups(key: str, config_dir: Path = CONFIG_DIR) -> tuple[str, Any] | None:
    """(``group=name``, value) of the last file chosen by default that sets ``key`` to other than the schema."""
    found = None
    layers = [("defaults.yaml", config_dir / "defaults.yaml")]
    layers += [(f"{g}={n}", config_dir / g / f"{n}.yaml") for g, n in default_choices(config_dir).items() if g in GROUPS]
    for origin, path in layers:
        if path.exists():
            value = OmegaConf.select(OmegaConf.load(path), key, default=None)
            if value is not None:
                found = (origin, OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)
    if found is None or found[1] == schema_default(key):
        return None
    return found


def format_value(value: Any) -> str:
    """A value as typed on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value or '""'
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def _table(rows: list[tuple[str, str]], indent: str = "  ") -> list[str]:
    width = max(len(left) for left, _ in rows)
    return [f"{indent}{left.ljust(width)}  {right}".rstrip() for left, right in rows]


def help_text(config_dir: Path = CONFIG_DIR) -> str:
    defaults = default_choices(config_dir)
    lines = [
        "usage: kacdist [stage=<stage>] [group=<choice> ...] [key=value ...]",
        "       (the same as: python jobs/launch.py ...)",
        "",
        "Everything is key=value; the whole configuration is checked before any work starts, and",
        "print_config=true prints it resolved and exits.",
        "",
        f"Stages (stage=...; default {defaults.get('stage', 'teacher')}):",
    ]
    lines += _table([(stage, text) for stage, text in stage_descriptions(config_dir).items()])
    lines += ["", "Config groups (group=choice; each merges configs/<group>/<choice>.yaml):"]
    lines += _table([(group, ", ".join(f"{c} (default)" if c == defaults.get(group) else c
                                        for c in available(group, config_dir))) for group in GROUPS])
    lines += ["", "Keys people change most (key=default: meaning; [what a group chosen by default sets instead]):"]
    rows = []
    for key in COMMON_KEYS:
        default, meaning = _schema()[key]
        override = set_by_default_groups(key, config_dir)
        if override is not None:
            meaning += f" [{override[0]}: {format_value(override[1])}]"
        rows.append((f"{key}={format_value(default)}", meaning))
    lines += _table(rows)
    lines += ["", "Shorthands:"]
    lines += _table(list(SHORTHANDS))
    lines += [
        "",
        "Every other key, with its meaning: README.md, section \"Stages and configuration\", and",
        "kacdist/config/schema.py. A misspelt key or choice is refused naming the valid ones.",
        "",
    ]
    return "\n".join(lines)
