"""provenance.json: one attempt per (re)start of a stage, with the commit, packages, hardware, command and
SLURM job; never a secret from the environment."""

import json
import subprocess

from kacdist.track.provenance import git_state, read_provenance, record_provenance


def test_each_attempt_is_appended_with_code_packages_hardware_and_slurm_job(tmp_path, monkeypatch):
    stage = tmp_path / "run" / "teacher"
    first = record_provenance(stage, "teacher")
    assert first["slurm"] is None
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    second = record_provenance(stage, "teacher")
    attempts = read_provenance(stage)
    assert [a["started_at"] for a in attempts] == [first["started_at"], second["started_at"]]
    assert attempts[1]["slurm"] == {"job_id": "4242", "restart_count": "1"}
    assert attempts[1]["versions"]["kacdist"] and attempts[1]["versions"]["torch"].startswith("2.13")
    hw = attempts[1]["hardware"]
    assert hw["cpu_count"] >= 1 and hw["gpu_count"] == len(hw["gpus"])
    assert attempts[1]["git"]["commit"] is None or len(attempts[1]["git"]["commit"]) == 40


def test_no_environment_secret_reaches_the_file(tmp_path, monkeypatch):
    secret = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    record_provenance(tmp_path, "eval")
    assert secret not in (tmp_path / "provenance.json").read_text()


def test_git_state_reports_a_dirty_tree(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("one")
    git("add", "a.txt")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    clean = git_state(tmp_path)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (tmp_path / "a.txt").write_text("two")
    assert git_state(tmp_path)["dirty"] is True
    assert git_state(tmp_path / "not-a-repo-dir-that-does-not-exist")["commit"] is None


def test_an_unreadable_file_reads_as_no_attempts(tmp_path):
    (tmp_path / "provenance.json").write_text("{torn")
    assert read_provenance(tmp_path) == []
    record_provenance(tmp_path, "sample")  # and is replaced by a good one
    assert len(json.loads((tmp_path / "provenance.json").read_text())["attempts"]) == 1
