"""The teacher loop: resume equivalence, finished runs do nothing, NaN stop keeps the last good checkpoint,
sampling determinism across batch sizes. Uses a very small real UNet and real digits data."""

import json

import pytest
import torch

from kacdist.config import load_config
from kacdist.kac import KacProcess
from kacdist.sampling import generate
from kacdist.train.batches import InMemoryBatches
from kacdist.train.checkpoint import list_checkpoints
from kacdist.train.teacher import NonFiniteLossError, build_model, train_teacher

MICRO = ["model.preset=tiny", "train.batch_size=16", "train.total_kimg=0.128", "train.checkpoint_every_kimg=0.064",
         "train.log_every_kimg=0.032", "train.threads=1"]


def _micro_model(cfg):
    from kacdist.models.presets import get_preset
    from kacdist.models.unet import build_unet

    torch.manual_seed(0)
    return build_unet(get_preset("tiny", image_size=16, in_channels=1, num_classes=10, model_channels=8,
                                 num_head_channels=8, num_res_blocks=1))


def _run(cfg, run_dir, digits, crash_at=None):
    x, y = digits

    def crash(step, path):
        if crash_at is not None and step == crash_at:
            raise KeyboardInterrupt("simulated preemption right after a checkpoint")

    return train_teacher(cfg, run_dir, model=_micro_model(cfg),
                         batches=InMemoryBatches(x, y, cfg.train.batch_size, cfg.train.seed), on_checkpoint=crash)


def test_resume_is_bit_identical_to_a_straight_run(tmp_path, digits):
    cfg = load_config(MICRO + [f"runs_dir={tmp_path}"])
    straight = _run(cfg, tmp_path / "straight", digits)
    assert straight.status == "finished" and straight.step == 8
    with pytest.raises(KeyboardInterrupt):
        _run(cfg, tmp_path / "resumed", digits, crash_at=4)
    assert [s for s, _ in list_checkpoints(tmp_path / "resumed" / "checkpoints")] == [4]
    resumed = _run(cfg, tmp_path / "resumed", digits)
    assert resumed.status == "finished" and resumed.step == 8
    a = torch.load(straight.checkpoint, weights_only=True)
    b = torch.load(resumed.checkpoint, weights_only=True)
    for key in ("model", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    # rerunning a finished run does nothing
    again = _run(cfg, tmp_path / "resumed", digits)
    assert again.status == "already_done" and again.step == 8
    assert json.loads((tmp_path / "resumed" / "DONE").read_text())["step"] == 8


class PoisonedBatches(InMemoryBatches):
    """Real digits, but the batch of one step carries a NaN pixel (a corrupt decode that slipped through)."""

    def __init__(self, *args, poison_step, **kwargs):
        super().__init__(*args, **kwargs)
        self.poison_step = poison_step

    def batch(self, step):
        x, y = super().batch(step)
        if step == self.poison_step:
            x = x.clone()
            x[0, 0, 0, 0] = float("nan")
        return x, y


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, digits):
    cfg = load_config(MICRO + [f"runs_dir={tmp_path}"])
    x, y = digits
    with pytest.raises(NonFiniteLossError, match=r"at step 6 .*Last good checkpoint: .*ckpt-000000004\.pt"):
        train_teacher(cfg, tmp_path / "run", model=_micro_model(cfg),
                      batches=PoisonedBatches(x, y, cfg.train.batch_size, cfg.train.seed, poison_step=6))
    ckpts = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [s for s, _ in ckpts] == [4]
    state = torch.load(ckpts[0][1], weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (tmp_path / "run" / "DONE").exists()


def test_sampling_is_per_image_deterministic_across_batch_sizes(digits):
    cfg = load_config(MICRO)
    model = _micro_model(cfg)
    with torch.no_grad():  # make the zero-initialised output layer non-trivial
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    process = KacProcess(25.0, 2.0, "t")
    seeds = [11, 12, 13, 14, 15, 16, 17]
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6])
    a = generate(model, process, (1, 16, 16), seeds, labels, "ab2", 4, 1.2, batch_size=7)
    b = generate(model, process, (1, 16, 16), seeds, labels, "ab2", 4, 1.2, batch_size=3)
    c = generate(model, process, (1, 16, 16), seeds[2:4], labels[2:4], "ab2", 4, 1.2, batch_size=2)
    assert a.nfe == b.nfe == 4
    assert torch.allclose(a.images, b.images, atol=1e-5)
    assert torch.allclose(a.images[2:4], c.images, atol=1e-5)
    assert not torch.allclose(a.images[0], a.images[1])


def test_early_stopping_after_patience_without_improvement(tmp_path, digits):
    cfg = load_config(MICRO + [f"runs_dir={tmp_path}", "train.eval_every_kimg=0.016", "train.early_stop_patience=2",
                               "train.sample_every_kimg=0.064"])
    x, y = digits
    scripted = iter([5.0, 4.0, 4.5, 4.6, 3.0, 2.0])  # best at the 2nd evaluation, then two worse ones
    seen, snaps = [], []

    def monitor(model, step):
        seen.append(step)
        return next(scripted)

    result = train_teacher(cfg, tmp_path / "run", model=_micro_model(cfg),
                           batches=InMemoryBatches(x, y, cfg.train.batch_size, cfg.train.seed),
                           monitor=monitor, snapshot=lambda m, step: snaps.append(step))
    assert result.status == "early_stopped" and result.step == 4 and seen == [1, 2, 3, 4]
    assert json.loads((tmp_path / "run" / "DONE").read_text())["status"] == "early_stopped"
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [4]
    assert snaps == [4]  # the periodic grid of step 4, not repeated at the end
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "run" / "metrics.parquet").to_pylist()
    assert [r["fd"] for r in rows if r.get("fd") is not None] == [5.0, 4.0, 4.5, 4.6]


def test_stage_snapshot_writes_a_sample_grid(tmp_path):
    from PIL import Image

    from kacdist.stages.teacher import _snapshot

    cfg = load_config(MICRO + [f"runs_dir={tmp_path}", "sample.steps=2", "sample.num_images=20"])
    _snapshot(cfg)(_micro_model(cfg), 7)
    grid = Image.open(tmp_path / "digits" / "teacher" / "samples" / "grid-000000007.png")
    assert grid.size == (10 * 17 + 1, 2 * 17 + 1)
