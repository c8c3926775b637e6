"""wandb tracking of a real tiny teacher stage, offline, read back from wandb's own files: one run per stage
kept across a crash and a preemption, every committed metrics row exactly once in wandb's history (replayed
steps neither dropped nor doubled), no API key anywhere, nothing when disabled, online refused without a login,
and no wandb process left behind."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from kacdist.config import ConfigError, load_config
from kacdist.stages.teacher import run_teacher
from kacdist.track.provenance import read_provenance
from kacdist.track.wandb_run import STATE_FILE
from kacdist.train.loop import StopRequested
from kacdist.train.workers import Workers
from tests.track.wandb_files import metrics_of, segments

KACDIST = str(Path(sys.executable).with_name("kacdist"))  # the console script of this environment
SECRET = "f00dfacecafe" + "0123456789abcdef" + "deadbeefbead"  # 40 characters, found nowhere else


def _args(tmp_path: Path) -> list[str]:
    # 8 steps of 16 images, a metrics row every step, a checkpoint every 2 steps
    return [
        "stage=teacher", f"runs_dir={tmp_path / 'runs'}", f"dataset.cache_dir={tmp_path / 'cache'}", "train.threads=1",
        "train.batch_size=16", "train.total_kimg=0.128", "train.checkpoint_every_kimg=0.032",
        "train.log_every_kimg=0.016", "eval.after_teacher=false", "sample.steps=4", "sample.num_images=4",
        "sample.batch_size=4",
    ]


def _wandb_children() -> list[int]:
    """Live wandb service processes started by this process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        if comm.startswith("wandb") and int(rest[1]) == os.getpid() and rest[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@contextlib.contextmanager
def _everything_printed(sink: list[str]):
    """This process's stdout and stderr at the file-descriptor level (what child processes such as wandb's
    service print too) and at the Python level, plus every log record at any level."""
    records = io.StringIO()
    handler = logging.StreamHandler(records)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as fds, tempfile.TemporaryFile("w+") as text:
        os.dup2(fds.fileno(), 1)
        os.dup2(fds.fileno(), 2)
        try:
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            root.removeHandler(handler)
            root.setLevel(level)
            fds.seek(0)
            text.seek(0)
            sink.extend([fds.read().decode(errors="replace"), text.read(), records.getvalue()])


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """A teacher stage in three attempts: a crash at step 4 (step 3's row logged but not yet committed), a stop
    request at step 5, then the rest; wandb offline with an API key in the environment."""
    tmp_path = tmp_path_factory.mktemp("tracked")
    printed: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("WANDB_MODE", raising=False)
        mp.setenv("WANDB_API_KEY", SECRET)
        mp.setenv("KACDIST_PROGRESS", "log")
        cfg = load_config(_args(tmp_path) + ["wandb.mode=offline"])

        def crash_at_4(event, step, rank):
            if event == "step" and step == 4:
                raise RuntimeError("simulated crash after step 3's metrics row")

        steps_done = []

        def count_steps(event, step, rank):
            steps_done.append(step)

        def stop_after_4() -> bool:  # asked before each step: step 5 completes, then the loop checkpoints and stops
            return bool(steps_done) and steps_done[-1] >= 4

        with _everything_printed(printed):
            with pytest.raises(RuntimeError, match="simulated crash"):
                run_teacher(cfg, Workers(hook=crash_at_4))
            with pytest.raises(StopRequested) as stopped:
                run_teacher(cfg, Workers(hook=count_steps, stop_requested=stop_after_4))
            result = run_teacher(cfg)
        left = _wandb_children()
    assert stopped.value.step == 5 and result.status == "finished" and result.step == 8
    return tmp_path / "runs" / "digits", printed, left


def test_one_offline_run_per_stage_kept_across_a_crash_and_a_preemption(interrupted_run):
    root, _, _ = interrupted_run
    stage = root / "teacher"
    state = json.loads((stage / STATE_FILE).read_text())
    found = segments(stage)
    assert len(found) == 3  # one offline-run folder per attempt
    assert {s.run_id for s in found} == {state["id"]} and state["last_step"] == 8
    assert all(s.group == "digits" and s.job_type == "teacher" and s.name == "digits/teacher" for s in found)
    assert all(s.finished for s in found)
    assert len(read_provenance(stage)) == 3


def test_wandb_history_holds_every_committed_metrics_row_exactly_once(interrupted_run):
    root, _, _ = interrupted_run
    stage = root / "teacher"
    history = [row for s in segments(stage) for row in s.history]
    table = pq.read_table(stage / "metrics.parquet").to_pylist()
    assert [r["step"] for r in table] == list(range(1, 9))
    # step 3 was logged by the crashed attempt but never committed: it was replayed, and reaches wandb once
    assert [r["_step"] for r in history] == [r["step"] for r in history] == list(range(1, 9))
    assert [metrics_of(r) for r in history] == [{k: v for k, v in r.items() if v is not None} for r in table]
    # the x-axis of every chart is kimg
    assert table[-1]["kimg"] == pytest.approx(0.128)


def test_the_api_key_appears_in_no_file_log_or_output(interrupted_run):
    root, printed, _ = interrupted_run
    assert "teacher step 8/8" in printed[2]  # the capture did see the run's log lines
    places = _key_places(root, printed)
    assert places == []
    # the search itself finds a key where there is one: in a zip member (a checkpoint is a zip) and a log
    planted = root.parent / "planted"
    planted.mkdir()
    with zipfile.ZipFile(planted / "ckpt.pt", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", f"header {SECRET} trailer")
    found = _key_places(planted, [f"log {SECRET}"])
    assert f"{planted / 'ckpt.pt'}:archive/data.pkl" in found and "captured output 0" in found


def _key_places(directory: Path, printed: list[str]) -> list[str]:
    """Where SECRET occurs: files under ``directory`` (raw bytes, zip members such as torch checkpoints,
    Parquet tables as values) and the captured output."""
    key = SECRET.encode()
    places = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.is_symlink()):
        data = path.read_bytes()
        if key in data:
            places.append(str(path))
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                places += [f"{path}:{name}" for name in z.namelist() if key in z.read(name)]
        if path.suffix == ".parquet" and SECRET in str(pq.read_table(path).to_pylist()):
            places.append(f"{path} (values)")
    places += [f"captured output {i}" for i, text in enumerate(printed) if SECRET in text]
    return places


def test_wandb_leaves_no_process_behind(interrupted_run):
    _, _, left = interrupted_run
    assert left == []


@pytest.mark.parametrize("where", ["config", "WANDB_MODE"])
def test_disabled_writes_no_wandb_files(where, tmp_path, monkeypatch):
    if where == "config":
        monkeypatch.delenv("WANDB_MODE")
    cfg = load_config(_args(tmp_path) + [f"wandb.mode={'disabled' if where == 'config' else 'offline'}",
                                         "train.total_kimg=0.016"])
    assert run_teacher(cfg).status == "finished"
    stage = tmp_path / "runs" / "digits" / "teacher"
    assert (stage / "metrics.parquet").exists()
    assert not (stage / "wandb").exists() and not (stage / STATE_FILE).exists()


def test_wandb_mode_variable_overrides_the_config_and_must_be_a_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "sideways")
    with pytest.raises(ConfigError, match="WANDB_MODE='sideways' is invalid"):
        load_config(_args(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert load_config(_args(tmp_path) + ["wandb.mode=online"]).wandb.mode == "online"  # no login needed
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", SECRET)  # a login: online is accepted (nothing is contacted yet)
    assert load_config(_args(tmp_path) + ["wandb.mode=online"]).wandb.mode == "online"


def test_online_without_a_login_is_refused_before_any_work(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path / "home"), NETRC=str(tmp_path / "no-netrc"))
    done = subprocess.run([KACDIST, "wandb.mode=online"] + _args(tmp_path), cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("config error: wandb.mode=online needs a wandb login and none was found")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr and done.stdout == ""
    assert not (tmp_path / "runs").exists()


def test_the_evaluation_table_is_an_eval_run_of_the_group(tmp_path, monkeypatch):
    from kacdist.track.wandb_run import log_eval_table

    monkeypatch.delenv("WANDB_MODE")
    cfg = load_config(["stage=eval", f"runs_dir={tmp_path / 'runs'}"])
    rows = [{"model": "teacher", "integrator": "ab2", "steps": 4, "guidance": 1.0, "seed": seed, "fd": fd}
            for seed, fd in ((0, 3.5), (1, 2.5))]
    rows.append({"model": "distill-4-2", "integrator": "euler", "steps": 2, "guidance": 1.0, "seed": 0, "fd": 5.0})
    eval_dir = tmp_path / "runs" / "digits" / "eval"
    log_eval_table(cfg, eval_dir, rows)
    (run,) = segments(eval_dir)
    assert (run.group, run.job_type, run.name) == ("digits", "eval", "digits/eval") and run.finished
    assert [metrics_of(r)["fd_vs_nfe/_type"] for r in run.history] == ["table-file"]
    table = json.loads((run.path / "files" / run.history[0]["fd_vs_nfe/path"]).read_text())
    assert [dict(zip(table["columns"], values)) for values in table["data"]] == rows
    assert run.summary["best_fd/teacher"] == 2.5 and run.summary["best_fd/distill-4-2"] == 5.0
    assert _wandb_children() == []
