"""The ADM UNet: conditioning, zero initialisation, gradients, bf16 autocast, checkpointing, config checks.

All networks here are small (8x8 or 16x16, 32-64 channels) so the whole file runs in seconds on 2 cores.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kacdist.models import UNet, UNetConfig, build_unet
from kacdist.models.unet import AttentionBlock, ResBlock, norm_groups, timestep_embedding

NUM_CLASSES = 3


@pytest.fixture(autouse=True)
def one_thread():
    # the test machine is shared: 2 OpenMP threads on a busy 2-core box are several times slower than 1
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_cfg(**overrides) -> UNetConfig:
    """8x8, two levels (8 and 4), attention at 4 and in the middle, 3 classes: about 0.2M parameters."""
    base = dict(
        image_size=8,
        in_channels=2,
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(1,),
        num_head_channels=32,
        dropout=0.0,
        num_classes=NUM_CLASSES,
        use_scale_shift_norm=True,
        resblock_updown=True,
    )
    base.update(overrides)
    return UNetConfig(**base)


def perturb_(model: torch.nn.Module, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    """Give every parameter (zero-initialised ones included) a random offset, so all paths carry signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


def inputs(cfg: UNetConfig, batch: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.rand(batch, generator=g)
    y = torch.arange(batch) % (cfg.num_classes + 1) if cfg.num_classes else None
    return x, t, y


VARIANTS = [
    pytest.param(dict(), id="scaleshift-updown"),
    pytest.param(dict(resblock_updown=False), id="scaleshift-convresample"),
    pytest.param(dict(resblock_updown=False, conv_resample=False), id="scaleshift-poolnearest"),
    pytest.param(dict(use_scale_shift_norm=False), id="addnorm-updown"),
    pytest.param(dict(num_classes=None, channel_mult=(1, 2, 2), attention_levels=(0, 2)), id="uncond-3lvl"),
]


# ------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("overrides", VARIANTS)
def test_output_shape_dtype_and_dependence_on_x(overrides):
    cfg = small_cfg(**overrides)
    model = perturb_(build_unet(cfg))
    x, t, y = inputs(cfg)
    out = model(x, t, y)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.abs().max() > 0
    out2 = model(x + 0.5 * torch.randn_like(x), t, y)
    assert not torch.allclose(out, out2)


def test_out_channels_and_non_square_batch_size():
    cfg = small_cfg(out_channels=5)
    model = perturb_(build_unet(cfg))
    x, t, y = inputs(cfg, batch=3)
    assert model(x, t, y).shape == (3, 5, 8, 8)


def test_scalar_t_broadcasts():
    cfg = small_cfg()
    model = perturb_(build_unet(cfg))
    x, _, y = inputs(cfg)
    assert torch.allclose(model(x, torch.tensor(0.3), y), model(x, torch.full((4,), 0.3), y))


def test_bad_inputs_are_refused():
    cfg = small_cfg()
    model = build_unet(cfg)
    x, t, y = inputs(cfg)
    with pytest.raises(ValueError, match=r"x must be \(B, 2, H, W\)"):
        model(x[:, :1], t, y)
    with pytest.raises(ValueError, match="t must have shape"):
        model(x, t[:2], y)
    with pytest.raises(ValueError, match="y must have shape"):
        model(x, t, y[:2])
    with pytest.raises(ValueError, match="integer labels"):
        model(x, t, y.float())
    with pytest.raises(ValueError, match="null_label"):
        model(x, t, None)


# ----------------------------------------------------------------------------------- zero initialisation


@pytest.mark.parametrize("overrides", VARIANTS)
def test_fresh_model_outputs_exactly_zero(overrides):
    cfg = small_cfg(**overrides)
    model = build_unet(cfg)
    x, t, y = inputs(cfg)
    out = model(x, t, y)
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(x))


def test_zero_init_covers_exactly_the_output_convolutions():
    model = build_unet(small_cfg())
    zero = {n for n, p in model.named_parameters() if not p.detach().any()}
    res_out = {n for n in zero if ".out_layers.3." in n}
    attn_out = {n for n in zero if ".proj_out." in n}
    final = {"out.2.weight", "out.2.bias"}
    assert final <= zero
    assert len(res_out) == 2 * sum(isinstance(m, ResBlock) for m in model.modules())
    assert len(attn_out) == 2 * sum(isinstance(m, AttentionBlock) for m in model.modules())
    # everything else that is zero is a bias (conv/linear/GroupNorm biases are 0 only by chance: GN's are 0)
    others = zero - res_out - attn_out - final
    assert all(n.endswith(".bias") for n in others), sorted(others)
    # and the non-output convolutions are not zero
    assert model.input_blocks[0][0].weight.detach().abs().sum() > 0


def test_training_escapes_zero_init():
    """From ADM's zero init, one Adam step moves only the final conv; after three, every parameter has moved."""
    torch.manual_seed(0)
    cfg = small_cfg()
    model = build_unet(cfg)
    x, t, _ = inputs(cfg, batch=8)
    y = torch.arange(8) % (NUM_CLASSES + 1)  # every label, the null label included
    target = torch.randn_like(x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}

    def moved():
        return {n for n, p in model.named_parameters() if not torch.equal(p.detach(), start[n])}

    for step in range(3):
        opt.zero_grad()
        F.mse_loss(model(x, t, y), target).backward()
        opt.step()
        if step == 0:
            assert moved() == {"out.2.weight", "out.2.bias"}
    assert moved() == set(start)


# ------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("overrides", VARIANTS)
def test_gradients_reach_every_parameter(overrides):
    cfg = small_cfg(**overrides)
    model = perturb_(build_unet(cfg))
    x, t, _ = inputs(cfg, batch=8)
    y = torch.arange(8) % (cfg.num_classes + 1) if cfg.num_classes else None
    F.mse_loss(model(x, t, y), torch.randn_like(x)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# ------------------------------------------------------------------------------------------ conditioning


def test_class_conditioning_and_null_label():
    cfg = small_cfg()
    model = perturb_(build_unet(cfg))
    assert model.null_label == NUM_CLASSES and model.is_conditional and model.num_classes == NUM_CLASSES
    assert model.label_emb.num_embeddings == NUM_CLASSES + 1
    x, t, _ = inputs(cfg)
    outs = [model(x, t, torch.full((4,), label)) for label in range(NUM_CLASSES + 1)]
    for i in range(len(outs)):
        assert torch.isfinite(outs[i]).all()
        for j in range(i):
            assert (outs[i] - outs[j]).abs().max() > 1e-4, (i, j)
    # the null row is the one used for label == null_label
    with torch.no_grad():
        model.label_emb.weight[model.null_label].zero_()
    base = model(x, t, torch.full((4,), model.null_label))
    with torch.no_grad():
        model.label_emb.weight[model.null_label].add_(1.0)
    assert not torch.allclose(base, model(x, t, torch.full((4,), model.null_label)))
    with pytest.raises(IndexError):
        model(x, t, torch.full((4,), NUM_CLASSES + 1))


def test_per_sample_labels_are_independent():
    cfg = small_cfg()
    model = perturb_(build_unet(cfg)).eval()
    x, t, _ = inputs(cfg)
    y = torch.tensor([0, 1, 2, 3])
    full = model(x, t, y)
    for i in range(4):
        assert torch.allclose(full[i : i + 1], model(x[i : i + 1], t[i : i + 1], y[i : i + 1]), atol=1e-5)


def test_unconditional_model_ignores_y():
    cfg = small_cfg(num_classes=None)
    model = perturb_(build_unet(cfg))
    assert model.label_emb is None and not model.is_conditional and model.null_label == 0
    x, t, _ = inputs(cfg)
    out = model(x, t)
    assert torch.equal(out, model(x, t, torch.tensor([0, 5, 7, 100])))
    assert torch.equal(out, model(x, t, None))


def test_time_conditioning_and_time_scale():
    cfg = small_cfg()
    model = perturb_(build_unet(cfg))
    x, _, y = inputs(cfg)
    a = model(x, torch.full((4,), 0.2), y)
    assert not torch.allclose(a, model(x, torch.full((4,), 0.25), y))
    scaled = build_unet(cfg.replace(time_scale=1000.0))
    scaled.load_state_dict(model.state_dict())
    # time_scale multiplies t before the sinusoid, and nothing else
    assert torch.allclose(scaled(x, torch.full((4,), 0.2e-3), y), a, atol=1e-5)


def test_timestep_embedding_is_raw_t_sinusoid():
    t = torch.tensor([0.0, 0.5, 1.0])
    emb = timestep_embedding(t, 8)
    assert emb.shape == (3, 8) and emb.dtype == torch.float32
    assert torch.equal(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.tensor([10000 ** (-k / 4) for k in range(4)])
    assert torch.allclose(emb[1], torch.cat([torch.cos(0.5 * freqs), torch.sin(0.5 * freqs)]), atol=1e-6)
    assert timestep_embedding(t, 7).shape == (3, 7) and torch.all(timestep_embedding(t, 7)[:, -1] == 0)
    # bf16 times are embedded in float32
    assert timestep_embedding(t.bfloat16(), 8).dtype == torch.float32


# ------------------------------------------------------------------------------------------ components


def test_attention_block_matches_explicit_multihead_softmax():
    torch.manual_seed(0)
    block = AttentionBlock(64, 16)  # 4 heads of width 16
    perturb_(block)
    x = torch.randn(2, 64, 3, 5)
    out = block(x)
    b, c, T = 2, 64, 15
    h = block.norm(x.reshape(b, c, T))
    qkv = block.qkv(h).reshape(b, 4, 3, 16, T)  # per head: [q | k | v]
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    w = torch.softmax(torch.einsum("bhct,bhcs->bhts", q, k) / math.sqrt(16), dim=-1)
    a = torch.einsum("bhts,bhcs->bhct", w, v).reshape(b, c, T)
    expected = x.reshape(b, c, T) + block.proj_out(a)
    assert torch.allclose(out, expected.reshape_as(x), atol=1e-5)
    assert block.num_heads == 4


@pytest.mark.parametrize("channels,groups", [(32, 32), (64, 32), (96, 32), (16, 16), (3, 3), (48, 24), (1, 1)])
def test_norm_groups(channels, groups):
    assert norm_groups(channels) == groups


# -------------------------------------------------------------------------------------------- precision


def test_bf16_autocast_cpu_runs_and_agrees_with_fp32():
    cfg = small_cfg()
    model = perturb_(build_unet(cfg))
    x, t, y = inputs(cfg)
    ref = model(x, t, y)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = model(x, t, y)
        loss = F.mse_loss(out, torch.zeros_like(out))
    loss.backward()
    assert out.dtype == torch.float32  # returned in x's dtype
    rel = (out - ref).norm() / ref.norm()
    assert 0 < rel < 3e-2, rel.item()  # > 0: autocast really ran in bf16
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_bf16_weights_and_inputs():
    cfg = small_cfg()
    model = perturb_(build_unet(cfg))
    x, t, y = inputs(cfg)
    ref = model(x, t, y)
    out = model.to(torch.bfloat16)(x.bfloat16(), t, y)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).norm() / ref.norm() < 5e-2


# ------------------------------------------------------------------------------------------ checkpointing


def test_gradient_checkpointing_gives_same_outputs_and_gradients():
    cfg = small_cfg(dropout=0.2)  # dropout on: the recomputation must replay the same masks
    plain = perturb_(build_unet(cfg)).train()
    ckpt = build_unet(cfg.replace(use_checkpoint=True)).train()
    ckpt.load_state_dict(plain.state_dict())
    x, t, y = inputs(cfg, batch=8)
    y = torch.arange(8) % (NUM_CLASSES + 1)
    target = torch.randn_like(x)

    calls = []
    # a pre-hook: the non-reentrant recomputation stops early, once it has rebuilt the saved tensors
    ckpt.middle_block.register_forward_pre_hook(lambda *_: calls.append(1))
    results = []
    for model in (plain, ckpt):
        torch.manual_seed(123)
        out = model(x, t, y)
        F.mse_loss(out, target).backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert len(calls) == 2  # forward + recomputation in backward: checkpointing really happened
    (out_a, grads_a), (out_b, grads_b) = results
    assert torch.allclose(out_a, out_b, atol=1e-6)
    for name, g in grads_a.items():
        assert torch.allclose(g, grads_b[name], rtol=1e-4, atol=1e-6), name

    calls.clear()
    with torch.no_grad():
        ckpt(x, t, y)
    assert len(calls) == 1  # no checkpointing without autograd


def test_checkpointing_under_bf16_autocast():
    cfg = small_cfg()
    plain = perturb_(build_unet(cfg))
    ckpt = build_unet(cfg.replace(use_checkpoint=True))
    ckpt.load_state_dict(plain.state_dict())
    x, t, y = inputs(cfg)
    grads = []
    for model in (plain, ckpt):
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            model(x, t, y).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-5)


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "overrides,field,allowed",
    [
        (dict(image_size=0), "image_size", ">= 1"),
        (dict(attention_levels=(2,)), "attention_levels", "2 is not a level; allowed values are 0..1"),
        (dict(attention_levels=(-1,)), "attention_levels", "allowed values are 0..1"),
        (dict(attention_levels=(1.0,)), "attention_levels", "tuple of level indices"),
        (dict(dropout=-0.1), "dropout", "[0, 1)"),
        (dict(dropout=1.0), "dropout", "[0, 1)"),
        (dict(num_head_channels=48), "num_head_channels", "divisor of"),
        (dict(num_head_channels=0), "num_head_channels", ">= 1"),
        (dict(channel_mult=()), "channel_mult", "non-empty tuple"),
        (dict(channel_mult=(1, 0)), "channel_mult", "integers >= 1"),
        (dict(num_classes=0), "num_classes", "None (unconditional) or an integer >= 1"),
        (dict(time_scale=0.0), "time_scale", "> 0"),
        (dict(time_scale=float("nan")), "time_scale", "> 0"),
        (dict(model_channels=0), "model_channels", ">= 1"),
        (dict(num_res_blocks=0), "num_res_blocks", ">= 1"),
        (dict(in_channels=2.0), "in_channels", "integer"),
        (dict(use_checkpoint="yes"), "use_checkpoint", "True or False"),
        (dict(out_channels=0), "out_channels", ">= 1"),
    ],
)
def test_invalid_configs_are_refused_naming_the_field(overrides, field, allowed):
    cfg = small_cfg(**overrides)
    for action in (cfg.validate, lambda: build_unet(cfg), lambda: UNet(cfg)):
        with pytest.raises(ValueError) as info:
            action()
        message = str(info.value)
        assert f"UNetConfig.{field} " in message and allowed in message, message


def test_config_lists_become_tuples_and_replace_checks_names():
    cfg = UNetConfig(channel_mult=[1, 2], attention_levels=[1], image_size=32)
    assert cfg.channel_mult == (1, 2) and cfg.attention_levels == (1,) and cfg.attention_resolutions == (16,)
    cfg.validate()
    hash(cfg)
    with pytest.raises(ValueError, match=r"unknown UNetConfig field\(s\) \['dropuot'\].*dropout"):
        cfg.replace(dropuot=0.1)


def test_default_config_is_valid_and_builds():
    cfg = UNetConfig()
    assert cfg.validate() is cfg
    assert cfg.time_scale == 1.0 and cfg.num_head_channels == 64 and cfg.num_classes is None
    with torch.device("meta"):
        assert build_unet(cfg).num_parameters() > 0


@pytest.mark.parametrize("size", [7, 10, 28])
def test_any_image_size_runs_padded_inside_and_returns_its_own_size(size):
    """Sides that do not halve down to the last level are zero-padded right and bottom and cropped back."""
    cfg = small_cfg(image_size=size, channel_mult=(1, 2, 2))  # 3 levels: multiples of 4 run as they are
    assert cfg.padded_size == -(-size // 4) * 4 and cfg.attention_resolutions == (cfg.padded_size // 2,)
    model = perturb_(build_unet(cfg)).eval()
    x, t, y = inputs(cfg)
    out = model(x, t, y)
    assert out.shape == x.shape
    with torch.no_grad():  # the crop keeps exactly the network's output on the padded input
        padded = torch.nn.functional.pad(x, (0, cfg.padded_size - size, 0, cfg.padded_size - size))
        assert torch.equal(model(padded, t, y)[..., :size, :size], out)
