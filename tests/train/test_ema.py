"""EMA: warmed-up decay, exact average of a known weight sequence, state round trip."""

import torch
from torch import nn

from kacdist.train.ema import EMA


def test_ema_tracks_the_warmed_up_average():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.99)
    expected = 0.0
    for step in range(200):
        with torch.no_grad():
            model.weight.fill_(float(step))
        decay = min(0.99, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * step
        ema.update(model, step)
    assert abs(float(ema.model.weight) - expected) < 1e-3
    assert ema.decay_at(0) == 0.1 and ema.decay_at(10**6) == 0.99
    # after 200 steps the initial weights carry almost no weight (unlike a plain 0.99 average from step 0)
    assert float(ema.model.weight) > 150


def test_state_round_trip():
    model = nn.Linear(3, 2)
    ema = EMA(model, 0.9)
    other = EMA(nn.Linear(3, 2), 0.9)
    other.load_state_dict(ema.state_dict())
    for a, b in zip(ema.model.parameters(), other.model.parameters()):
        assert torch.equal(a, b)
