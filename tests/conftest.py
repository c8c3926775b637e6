"""Every test runs in its own empty working directory: `runs_dir` defaults to the relative `runs`, and a
run a developer trained in the checkout (say the README's main job, `runs/digits`) owns its config, so a
test that loads a config must not find it (kacdist.config.run_config)."""

import pytest


@pytest.fixture(autouse=True)
def _own_working_directory(tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
