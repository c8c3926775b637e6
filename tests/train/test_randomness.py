"""Per-image randomness: a worker's draws are its slice of the whole global batch's draws, for any split of
the batch over workers (aligned with the blocks or not), including draws made through the Kac sampler."""

import pytest
import torch

from kacdist.kac import KacProcess
from kacdist.train.randomness import StepDraws, mix_seed


def _teacher_draws(draws: StepDraws, x0: torch.Tensor):
    """The draws of the teacher loss, in its order: t, the Kac target, the label-dropout uniforms."""
    process = KacProcess(25.0, 2.0, "t")
    t = draws.rand()
    x_t, u = draws.per_block(lambda g, x, tt: process.target(x, tt, generator=g), draws.pad(x0), t)
    drop = draws.rand()
    return [draws.local(v) for v in (t, x_t, u, drop)]


@pytest.mark.parametrize("block", [1, 4, 5, 32])
@pytest.mark.parametrize("workers", [2, 3, 4])
def test_a_workers_draws_are_its_slice_of_the_global_batchs(block, workers):
    batch = 12
    x0 = torch.rand(batch, 1, 4, 4) * 2 - 1
    whole = _teacher_draws(StepDraws(seed=7, step=11, first=0, count=batch, block=block), x0)
    share = batch // workers
    for rank in range(workers):
        part = _teacher_draws(StepDraws(7, 11, rank * share, share, block), x0[rank * share:(rank + 1) * share])
        for a, b in zip(whole, part):
            assert torch.equal(a[rank * share:(rank + 1) * share], b)


def test_draws_change_with_seed_step_and_image():
    base = StepDraws(0, 0, 0, 8, 4).rand()
    assert not torch.equal(base, StepDraws(1, 0, 0, 8, 4).rand())
    assert not torch.equal(base, StepDraws(0, 1, 0, 8, 4).rand())
    assert not torch.equal(base[:4], base[4:])  # two blocks, two streams
    assert torch.equal(base, StepDraws(0, 0, 0, 8, 4).rand())
    assert len({mix_seed(s, k, b) for s in range(4) for k in range(50) for b in range(50)}) == 4 * 50 * 50


def test_integer_draws_and_padding():
    draws = StepDraws(3, 5, first=6, count=4, block=4)  # images 6..9: blocks 1 and 2, span 8, offset 2
    assert draws.span == 8 and draws.offset == 2 and not draws.aligned
    k = draws.randint(5)
    assert k.shape == (8,) and int(k.min()) >= 0 and int(k.max()) < 5
    x = torch.arange(4.0)
    padded = draws.pad(x)
    assert padded.tolist() == [0, 0, 0, 1, 2, 3, 0, 0] and torch.equal(draws.local(padded), x)
    with pytest.raises(ValueError):
        StepDraws(0, 0, 0, 0, 4)
