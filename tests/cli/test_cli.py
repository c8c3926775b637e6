"""The ``kacdist`` console script as installed by ``pip install -e .`` (beside this Python), and
``python jobs/launch.py``: help, refused options, a run that does not exist, and the config errors they share.
Exit codes and output come from the installed script where it matters (help, a missing run), from
``kacdist.cli.main`` in this process elsewhere (the same function the script calls)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from kacdist.cli import main
from kacdist.config.loader import CONFIG_DIR, GROUPS, available
from kacdist.config.schema import ClusterConfig, DistillConfig, RunConfig, SampleConfig, TrainConfig
from kacdist.config.validate import STAGES

REPO = Path(__file__).resolve().parents[2]
KACDIST = Path(sys.executable).parent / "kacdist"


def kacdist(*args: str, command: list[str] | None = None) -> subprocess.CompletedProcess:
    """The installed script (or ``command``) with ``args``, its output captured."""
    return subprocess.run([*(command or [str(KACDIST)]), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def help_out() -> subprocess.CompletedProcess:
    return kacdist("--help")


def _help_default(text: str, key: str) -> str:
    """The default the help shows for ``key`` (``  key=value  meaning``)."""
    match = re.search(rf"^  {re.escape(key)}=(\S+)", text, re.MULTILINE)
    assert match, f"{key} missing from the help"
    return match.group(1)


def test_help_lists_stages_groups_and_schema_defaults(help_out):
    assert KACDIST.exists(), "pip install -e . installs the kacdist console script"
    assert help_out.returncode == 0 and help_out.stderr == ""
    text = help_out.stdout
    assert text.startswith("usage: kacdist")
    stages = text.split("Stages")[1].split("Config groups")[0]
    for stage in STAGES:  # every stage the validator accepts has a file, hence a description
        assert re.search(rf"^  {stage} +\S", stages, re.MULTILINE), f"stage {stage} has no description line"
    groups = text.split("Config groups")[1].split("Keys people change most")[0]
    for group in GROUPS:
        line = next(line for line in groups.splitlines() if line.startswith(f"  {group} "))
        assert all(choice in line for choice in available(group, CONFIG_DIR)), line
    assert "digits (default)" in groups and "tiny (default)" in groups and "local (default)" in groups
    # defaults come from the schema dataclasses
    assert float(_help_default(text, "train.lr")) == TrainConfig().lr
    assert float(_help_default(text, "train.total_kimg")) == TrainConfig().total_kimg
    assert int(_help_default(text, "sample.steps")) == SampleConfig().steps
    assert int(_help_default(text, "cluster.timeout_min")) == ClusterConfig().timeout_min
    assert _help_default(text, "distill.ladder") == "[" + ",".join(map(str, DistillConfig().ladder)) + "]"
    assert _help_default(text, "runs_dir") == RunConfig().runs_dir
    assert re.search(r"^  train\.total_kimg=\S+ .*\[dataset=digits: 80\]$", text, re.MULTILINE)  # what digits sets
    assert "from=<stage or checkpoint>" in text and "settings=<file.yaml>" in text and "README.md" in text


def test_launch_py_help_and_the_short_forms_give_the_same_text(help_out, capsys):
    for form in ("-h", "help"):
        assert main(["stage=teacher", form]) == 0 and capsys.readouterr().out == help_out.stdout
    launched = kacdist("stage=sample", "--help", command=[sys.executable, str(REPO / "jobs" / "launch.py")])
    assert launched.returncode == 0 and launched.stdout == help_out.stdout


def test_an_unknown_option_is_one_line_naming_help_and_the_key_value_form(capsys):
    assert main(["--bogus"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1
    assert "--help" in out.err and "dotted.key=value" in out.err


def test_a_missing_run_names_the_runs_that_exist(tmp_path, capsys):
    for name in ("a", "b"):
        (tmp_path / name / "teacher").mkdir(parents=True)
    out = kacdist("stage=sample", "run_name=nope", f"runs_dir={tmp_path}")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr == f"error: no run at {tmp_path / 'nope'}; runs in {tmp_path}: a, b\n"
    for stage in ("eval", "status", "cancel"):  # every stage that reads a run, checked in one place
        assert main([f"stage={stage}", "run_name=nope", f"runs_dir={tmp_path}"]) == 2
        assert capsys.readouterr().err == out.stderr
    # print_config does not need the run
    assert main(["stage=sample", "run_name=nope", f"runs_dir={tmp_path}", "print_config=true"]) == 0
    assert "run_name: nope" in capsys.readouterr().out
    # stage=report reads report.run when given; an empty runs_dir says how to make a first run
    empty = tmp_path / "empty"
    assert main(["stage=report", f"report.run={empty / 'gone'}", f"runs_dir={tmp_path}"]) == 2
    assert capsys.readouterr().err.startswith(f"error: no run at {empty / 'gone'}; no runs yet in {empty}: "
                                              "train one with stage=teacher")


def test_config_errors_keep_their_standard(capsys, monkeypatch):
    assert main(["stage=teacher", "dataset=cifar"]) == 2
    assert "dataset='cifar' does not exist; valid: celeba64, cifar10, digits, folder, lsun_bedroom256" in capsys.readouterr().err
    monkeypatch.setenv("KACDIST_PROGRESS", "loud")
    assert main(["stage=status"]) == 2
    assert capsys.readouterr().err == "config error: KACDIST_PROGRESS='loud' is invalid; choose one of bar, log, off\n"


def test_missing_inputs_are_one_line_errors_not_tracebacks(tmp_path, capsys):
    """Shards that do not exist, a stage not trained yet, a checkpoint path that is wrong: exit 2, one line."""
    runs = f"runs_dir={tmp_path}"
    shards = ["stage=teacher", "run_name=s", runs, "dataset.source=shards", "dataset.resolution=16", "dataset.channels=1",
              f"dataset.urls={tmp_path}/train-{{000000..000003}}.tar", "wandb.mode=disabled"]
    assert main(shards) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: shard pattern") and "4 missing file(s)" in err[-1]
    (tmp_path / "empty").mkdir()
    assert main(["stage=sample", "run_name=empty", runs]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: no checkpoint under")
    assert main(["stage=sample", "run_name=empty", runs, f"sample.checkpoint={tmp_path}/nope.pt"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: checkpoint {tmp_path}/nope.pt does not exist"
    assert main(["stage=distill", "run_name=empty", runs, "wandb.mode=disabled"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: ")
