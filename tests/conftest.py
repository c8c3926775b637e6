"""Every test runs in its own empty working directory: `runs_dir` defaults to the relative `runs`, and a
run a developer trained in the checkout (say the README's main job, `runs/digits`) owns its config, so a
test that loads a config must not find it (kacdist.config.run_config).

wandb is disabled for every test through its own WANDB_MODE (which overrides wandb.mode), so that hundreds of
stage runs do not each start wandb's service; tests of the tracking itself (tests/track) unset it."""

import pytest


@pytest.fixture(autouse=True)
def _own_working_directory(tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(autouse=True)
def _wandb_disabled(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
