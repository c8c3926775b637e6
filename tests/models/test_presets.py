"""UNet presets: DistillKac Tables B-1 / B-3 field by field, exact parameter counts, output shapes.

Parameter counts and shapes of the large presets are computed on the meta device (no memory, no compute);
real-weight forward passes of the paper-size networks are marked slow.
"""

from __future__ import annotations

import pytest
import torch

from kacdist.models import PRESETS, build_unet, get_preset
from kacdist.models.presets import UnknownPresetError


@pytest.fixture(autouse=True)
def one_thread():
    # the test machine is shared: 2 OpenMP threads on a busy 2-core box are several times slower than 1
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Measured from the built models (meta device). The paper states no parameter counts.
EXPECTED_PARAMS = {
    "cifar10": 322_655_747,
    "celeba64": 278_583_939,
    "lsun_bedroom256": 552_807_171,
    "lightweight": 39_572_227,
    "tiny": 493_025,
}

# What the paper's tables state (B-1: cifar10, celeba64, lsun_bedroom256; B-3: lightweight).
PAPER = {
    "cifar10": dict(
        image_size=32, model_channels=256, num_res_blocks=3, dropout=0.0, num_head_channels=64,
        channel_mult=(1, 2, 2, 3), attention_resolutions=(16, 8, 4), use_scale_shift_norm=True, resblock_updown=True,
    ),
    "celeba64": dict(
        image_size=64, model_channels=192, num_res_blocks=3, dropout=0.0, num_head_channels=64,
        channel_mult=(1, 2, 3, 4), attention_resolutions=(32, 16), use_scale_shift_norm=True, resblock_updown=True,
    ),
    "lsun_bedroom256": dict(
        image_size=256, model_channels=256, num_res_blocks=2, dropout=0.1, num_head_channels=64,
        channel_mult=(1, 1, 2, 2, 4, 4), attention_resolutions=(32, 16, 8), use_scale_shift_norm=True,
        resblock_updown=True,
    ),
    "lightweight": dict(
        image_size=64, model_channels=128, num_res_blocks=2, dropout=0.1, num_head_channels=64,
        channel_mult=(1, 2, 2, 2), attention_resolutions=(16,), use_scale_shift_norm=False, resblock_updown=True,
    ),
}

# Not stated by the paper: CIFAR-10 is class-conditional (CFG, §5.1), the rest unconditional; RGB; raw t.
UNSTATED = {
    "cifar10": dict(num_classes=10, in_channels=3, time_scale=1.0, use_checkpoint=False, out_channels=None),
    "celeba64": dict(num_classes=None, in_channels=3, time_scale=1.0, use_checkpoint=False, out_channels=None),
    "lsun_bedroom256": dict(num_classes=None, in_channels=3, time_scale=1.0, use_checkpoint=False, out_channels=None),
    "lightweight": dict(num_classes=None, in_channels=3, time_scale=1.0, use_checkpoint=False, out_channels=None),
}


def test_preset_names():
    assert set(PRESETS) == {"cifar10", "celeba64", "lsun_bedroom256", "lightweight", "tiny"}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_presets_match_the_paper_tables(name):
    cfg = PRESETS[name]
    for key, value in {**PAPER[name], **UNSTATED[name]}.items():
        assert getattr(cfg, key) == value, (name, key)


def test_tiny_preset_is_a_small_conditional_digits_model():
    cfg = PRESETS["tiny"]
    assert (cfg.image_size, cfg.in_channels, cfg.num_classes) == (16, 1, 10)
    assert cfg.model_channels == 32 and cfg.num_res_blocks == 2 and cfg.attention_levels == (1,)
    assert cfg.attention_resolutions == (8,)
    assert cfg.num_head_channels == 32 and cfg.use_scale_shift_norm and cfg.resblock_updown
    assert 300_000 <= EXPECTED_PARAMS["tiny"] <= 500_000


def _meta_model(name):
    with torch.device("meta"):
        return build_unet(PRESETS[name])


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_counts(name):
    model = _meta_model(name)
    assert model.num_parameters() == EXPECTED_PARAMS[name]
    assert model.num_parameters(trainable_only=True) == EXPECTED_PARAMS[name]


def test_lsun_preset_has_adm_lsun_size():
    # ADM's LSUN bedroom network (same fields, plus learned variance: 6 output channels) is the ~552M model of
    # Dhariwal & Nichol; without the variance head the count differs only by the final conv's 3 extra outputs.
    with torch.device("meta"):
        learned_sigma = build_unet(get_preset("lsun_bedroom256", out_channels=6))
    assert learned_sigma.num_parameters() - EXPECTED_PARAMS["lsun_bedroom256"] == 256 * 3 * 9 + 3
    assert 550e6 < EXPECTED_PARAMS["lsun_bedroom256"] < 555e6


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_output_shapes_on_meta_device(name):
    cfg = PRESETS[name]
    model = _meta_model(name)
    with torch.device("meta"):
        x = torch.empty(2, cfg.in_channels, cfg.image_size, cfg.image_size)
        y = torch.zeros(2, dtype=torch.long) if cfg.num_classes else None
        out = model(x, torch.empty(2), y)
    assert out.shape == x.shape


def _real_forward(name, batch):
    cfg = PRESETS[name]
    torch.manual_seed(0)
    model = build_unet(cfg).eval()
    with torch.no_grad():  # make the zero-initialised final conv read out the trunk, so the check means something
        model.out[-1].weight.normal_(0, 0.01)
    x = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size)
    t = torch.rand(batch)
    y = torch.full((batch,), model.null_label) if cfg.num_classes else None
    with torch.no_grad():
        out = model(x, t, y)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.abs().max() > 0
    return model, out


@pytest.mark.parametrize("name", ["tiny", "lightweight"])
def test_real_forward_small_presets(name):
    _real_forward(name, 2 if name == "tiny" else 1)


@pytest.mark.slow
@pytest.mark.parametrize("name,batch", [("cifar10", 2), ("celeba64", 1), ("lsun_bedroom256", 1)])
def test_real_forward_paper_presets(name, batch):
    model, _ = _real_forward(name, batch)
    assert model.num_parameters() == EXPECTED_PARAMS[name]


def test_tiny_trains_one_step_on_a_batch():
    cfg = PRESETS["tiny"]
    model = build_unet(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    x = torch.randn(16, 1, 16, 16)
    target = torch.randn_like(x)
    y = torch.arange(16) % (cfg.num_classes + 1)
    losses = []
    for _ in range(4):
        loss = torch.nn.functional.mse_loss(model(x, torch.rand(16), y), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_get_preset_overrides_and_validates():
    cfg = get_preset("tiny", num_classes=None, dropout=0.1)
    assert cfg.num_classes is None and cfg.dropout == 0.1 and cfg.image_size == 16
    assert PRESETS["tiny"].num_classes == 10 and PRESETS["tiny"].dropout == 0.0  # presets are not mutated
    assert get_preset("cifar10") == PRESETS["cifar10"]
    # attention sits at the same levels at any size, so a preset keeps its parameter count
    assert get_preset("cifar10", image_size=64).attention_resolutions == (32, 16, 8)
    assert get_preset("cifar10", image_size=36).padded_size == 40
    with pytest.raises(ValueError, match=r"UNetConfig\.attention_levels .*allowed values are 0\.\.3"):
        get_preset("cifar10", attention_levels=(4,))
    with pytest.raises(ValueError, match=r"unknown UNetConfig field\(s\) \['num_class'\]; valid fields: .*num_classes"):
        get_preset("tiny", num_class=3)


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(UnknownPresetError) as info:
        get_preset("cifar100")
    message = str(info.value)
    assert "cifar100" in message
    for name in PRESETS:
        assert name in message
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)


def test_throughput_benchmark_runs():
    from kacdist.models.benchmark import main, measure_training_throughput

    result = measure_training_throughput(PRESETS["tiny"], batch=4, steps=2, warmup=1, name="tiny")
    assert result.params == EXPECTED_PARAMS["tiny"] and len(result.step_times) == 2
    assert result.images_per_s > 0 and "493,025 parameters" in result.summary()
    main(["tiny", "--batch", "2", "--steps", "1", "--warmup", "0", "--set", "num_classes=None"])


@pytest.mark.parametrize("name", ["tiny", "lightweight"])
@pytest.mark.parametrize("size", [16, 28, 32, 64])
def test_small_presets_build_at_common_data_sizes_with_their_parameter_count(name, size):
    with torch.device("meta"):
        model = build_unet(get_preset(name, image_size=size))
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[name]
