"""Every test runs in its own empty working directory: `runs_dir` defaults to the relative `runs`, and a
run a developer trained in the checkout (say the README's main job, `runs/digits`) owns its config, so a
test that loads a config must not find it (kacdist.config.run_config).

wandb is disabled for every test through its own WANDB_MODE (which overrides wandb.mode), so that hundreds of
stage runs do not each start wandb's service; tests of the tracking itself (tests/track) unset it."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _own_working_directory(tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(autouse=True)
def _wandb_disabled(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")


@pytest.fixture(scope="session")
def digits():
    """The first 256 of scikit-learn's digits at 16x16 (each pixel doubled) in [-1, 1], with their labels: real
    data for the micro-UNet training tests. Shared read-only; a test that alters a batch clones it first."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images[:256] / 8.0 - 1.0).float()[:, None].repeat_interleave(2, 2).repeat_interleave(2, 3)
    return x, torch.from_numpy(d.target[:256]).long()


@pytest.fixture(scope="session")
def digits64(digits):
    """The first 64 of ``digits``, for the tests that train on one 64-image pass."""
    return digits[0][:64], digits[1][:64]
