"""Checkpoints: atomic writes that survive a crash mid-write, keep-last-K, fallback to an older readable
file, weights_only loading."""

import os
import subprocess
import sys
import textwrap

import torch

from kacdist.train.checkpoint import list_checkpoints, load_latest_checkpoint, save_checkpoint


def _state(v: float) -> dict:
    return {"model": {"w": torch.full((4,), v)}, "step": int(v), "config": "a: 1\n"}


def test_keep_last_k_and_latest(tmp_path):
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, _state(step), keep=3)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4, 5]
    assert (tmp_path / "LATEST").read_text() == "ckpt-000000005.pt"
    state, path = load_latest_checkpoint(tmp_path)
    assert state["step"] == 5 and path.name == "ckpt-000000005.pt"


def test_crash_during_save_keeps_the_last_good_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 1, _state(1.0), keep=3)
    # a child process starts writing checkpoint 2 and is killed in the middle of torch.save
    code = textwrap.dedent(
        f"""
        import os, torch
        from kacdist.train import checkpoint as ck
        real_save = torch.save
        def dying_save(obj, fh):
            fh.write(b"half a checkpoint")
            fh.flush()
            os._exit(9)
        torch.save = dying_save
        ck.save_checkpoint(ck.Path({str(tmp_path)!r}), 2, {{"step": 2}}, keep=3)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == 9
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    assert (tmp_path / "LATEST").read_text() == "ckpt-000000001.pt"
    state, _ = load_latest_checkpoint(tmp_path)
    assert torch.equal(state["model"]["w"], torch.full((4,), 1.0))
    save_checkpoint(tmp_path, 3, _state(3.0), keep=3)  # the next save clears the stray temp file
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_unreadable_newest_falls_back_to_older(tmp_path, caplog):
    save_checkpoint(tmp_path, 1, _state(1.0), keep=3)
    save_checkpoint(tmp_path, 2, _state(2.0), keep=3)
    with open(tmp_path / "ckpt-000000002.pt", "r+b") as fh:
        fh.truncate(40)
    state, path = load_latest_checkpoint(tmp_path)
    assert state["step"] == 1 and path.name == "ckpt-000000001.pt"
    assert "ckpt-000000002.pt is unreadable" in caplog.text


def test_loading_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"step": 9, "payload": Evil()}, tmp_path / "ckpt-000000009.pt")
    save_checkpoint(tmp_path, 1, _state(1.0), keep=5)
    state, path = load_latest_checkpoint(tmp_path)  # weights_only=True rejects step 9 and falls back
    assert state["step"] == 1


def test_empty_dir_has_no_checkpoint(tmp_path):
    assert load_latest_checkpoint(tmp_path / "missing") is None
