"""The ADM UNet of openai/guided-diffusion, as a Kac-flow velocity network.

DistillKac (App. B.1) trains "the UNet architecture from OpenAI's guided-diffusion repository"; this is a
re-implementation of that network for this project, written from its published description and structure:

* a stem convolution, then per resolution level ``num_res_blocks`` residual blocks (optionally each followed
  by multi-head self-attention), and a downsampling step between levels; a middle block of
  ResBlock → attention → ResBlock; a mirrored decoder with ``num_res_blocks + 1`` residual blocks per level,
  each fed the concatenation of the running features and one stored encoder activation; GroupNorm → SiLU →
  zero-initialised 3x3 convolution at the output;
* residual blocks: GroupNorm → SiLU → conv, the time(+class) embedding injected either as a bias or, with
  ``use_scale_shift_norm``, as ``norm(h)·(1 + scale) + shift``, then GroupNorm → SiLU → dropout →
  zero-initialised conv, plus a 1x1 (or identity) skip. With ``resblock_updown`` the resampling between
  levels is itself a residual block that resamples (nearest / 2x2 average pool) between its first norm and
  first conv; otherwise it is a strided 3x3 conv / nearest-upsample + 3x3 conv (``conv_resample``, ADM's
  default) or a bare average pool / nearest upsample;
* attention: GroupNorm → 1x1 qkv projection → softmax attention with ``channels // num_head_channels``
  heads of width ``num_head_channels`` → zero-initialised 1x1 output projection, added to the input;
* the time embedding is ADM's sinusoidal embedding (cos | sin, max period 10000, ``model_channels`` wide)
  followed by Linear → SiLU → Linear to ``4·model_channels``; a class embedding is added to it.

Project-specific choices (documented in docs/models.md):

* Time is the raw Kac time ``t ∈ [0, 1]`` multiplied by ``time_scale`` (default 1.0) before the sinusoid. The
  reference Kac-flow code (and hence the paper's numbers) feeds raw t, with no ×1000 scaling. ADM itself was
  built for integer diffusion steps 0..999, for which its frequencies 1 … 1e-4 span the whole range; with raw t
  only the fastest quarter of the frequencies turn by more than 0.1 rad over [0, 1], the rest are nearly
  constant (the time MLP copes; this is how the reference trains).
  ``time_scale=1000`` restores ADM's range; it is a different model (checkpoints do not transfer).
* The class embedding has ``num_classes + 1`` rows; row ``num_classes`` (``model.null_label``) is the "null"
  label used for classifier-free guidance (label dropout in training, ``y = null_label`` for the
  unconditional velocity at sampling). ``num_classes=None`` is an unconditional model: y is optional and
  ignored, and ``null_label`` is 0 so guidance code can pass labels blindly.
* GroupNorm uses 32 groups, or the largest divisor of the channel count below 32 when that does not divide
  it (e.g. 16 channels → 16 groups); it is computed in float32 and cast back, as ADM does, so it is stable
  under bf16 autocast. The output is returned in the dtype of ``x`` (float32 under autocast for a float32 x).
* Any image size. Attention is placed by level index (``attention_levels``: 0 is the full resolution), so a
  preset keeps its architecture, and its parameter count, at whatever resolution the data has. A side that
  is not a multiple of 2^(levels - 1) is zero-padded on the right and bottom to the next multiple before the
  stem and the output is cropped back: ``tiny`` (2 levels) takes 28x28 as it is (28 -> 14), ``lightweight``
  (4 levels) runs 28x28 data at 32x32 (levels 32, 16, 8, 4) and returns 28x28.
* ``use_checkpoint`` recomputes each encoder/middle/decoder block in the backward pass
  (``torch.utils.checkpoint``, non-reentrant, RNG state preserved so dropout masks agree) whenever gradients
  are being recorded.

Parameter names follow ADM's layout (``time_embed``, ``label_emb``, ``input_blocks``, ``middle_block``,
``output_blocks``, ``out``), which keeps state dicts readable for anyone who knows that code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

MAX_PERIOD = 10000.0
NORM_GROUPS = 32


# --------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class UNetConfig:
    """Hyperparameters of the ADM UNet. Defaults are ADM's (guided-diffusion ``model_and_diffusion_defaults``)
    where the project has no reason to differ. ``attention_levels`` are level indices (0: the full
    resolution, 1: after one downsampling, ...), not ADM's pixel sizes, so a configuration means the same
    network at any ``image_size``; ``attention_resolutions`` gives the pixel sizes they fall on."""

    image_size: int = 32
    in_channels: int = 3
    model_channels: int = 128
    channel_mult: Tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_levels: Tuple[int, ...] = (1, 2)
    num_head_channels: int = 64
    dropout: float = 0.0
    num_classes: Optional[int] = None
    use_scale_shift_norm: bool = True
    resblock_updown: bool = False
    conv_resample: bool = True
    time_scale: float = 1.0
    use_checkpoint: bool = False
    out_channels: Optional[int] = None  # None: same as in_channels (a velocity has the shape of x)

    def __post_init__(self) -> None:
        # config loaders (omegaconf, YAML) hand over lists; keep the dataclass hashable and immutable
        for name in ("channel_mult", "attention_levels"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, tuple(value))

    # -- derived quantities ------------------------------------------------------------------------

    @property
    def num_levels(self) -> int:
        return len(self.channel_mult)

    @property
    def padded_size(self) -> int:
        """``image_size`` rounded up to a multiple of 2^(levels - 1), the size the network runs at."""
        factor = 2 ** (self.num_levels - 1)
        return -(-self.image_size // factor) * factor

    @property
    def resolutions(self) -> Tuple[int, ...]:
        """Feature-map side length at each level, highest first (e.g. 32, 16, 8, 4)."""
        return tuple(self.padded_size // 2**i for i in range(self.num_levels))

    @property
    def attention_resolutions(self) -> Tuple[int, ...]:
        """Feature-map sizes (pixels) of the attention levels at this image size (e.g. 16, 8, 4)."""
        return tuple(self.resolutions[level] for level in self.attention_levels)

    @property
    def output_channels(self) -> int:
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    def replace(self, **changes) -> "UNetConfig":
        """A copy with some fields changed; unknown field names raise ValueError listing the valid ones."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown UNetConfig field(s) {unknown}; valid fields: {sorted(names)}")
        return replace(self, **changes)

    # -- validation ----------------------------------------------------------------------------------

    def validate(self) -> "UNetConfig":
        """Raise ValueError naming the offending field and what it may be. Returns self for chaining."""

        def bad(name: str, allowed: str) -> ValueError:
            return ValueError(f"UNetConfig.{name} = {getattr(self, name)!r} is invalid: {allowed}")

        def pos_int(name: str, minimum: int = 1) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise bad(name, f"must be an integer >= {minimum}")

        pos_int("image_size")
        pos_int("in_channels")
        pos_int("model_channels")
        pos_int("num_res_blocks")
        pos_int("num_head_channels")
        if self.out_channels is not None:
            pos_int("out_channels")
        cm = self.channel_mult
        if (
            not isinstance(cm, tuple)
            or len(cm) == 0
            or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in cm)
        ):
            raise bad("channel_mult", "must be a non-empty tuple of integers >= 1, e.g. (1, 2, 2, 2)")
        al = self.attention_levels
        if not isinstance(al, tuple) or any(isinstance(v, bool) or not isinstance(v, int) for v in al):
            raise bad("attention_levels", "must be a tuple of level indices (0 = full resolution)")
        for level in al:
            if not 0 <= level < len(cm):
                raise bad("attention_levels", f"{level} is not a level; allowed values are 0..{len(cm) - 1} (one per channel_mult entry)")
        reached = self.resolutions
        # every attention layer needs channels divisible by the head width (the middle block always has one)
        for level, r in enumerate(reached):
            ch = self.model_channels * cm[level]
            needs_attention = level in al or level == len(cm) - 1
            if needs_attention and ch % self.num_head_channels != 0:
                raise bad(
                    "num_head_channels",
                    f"must divide the channel count {ch} of the attention layers at {r}x{r} "
                    f"(allowed: a divisor of {ch})",
                )
        if not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool):
            raise bad("dropout", "must be a number in [0, 1)")
        if not (0.0 <= float(self.dropout) < 1.0):
            raise bad("dropout", "must be in [0, 1)")
        if self.num_classes is not None and (
            isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1
        ):
            raise bad("num_classes", "must be None (unconditional) or an integer >= 1")
        ts = self.time_scale
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or ts <= 0:
            raise bad("time_scale", "must be a finite number > 0 (1.0: raw t in [0, 1], as the reference)")
        for name in ("use_scale_shift_norm", "resblock_updown", "conv_resample", "use_checkpoint"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be True or False")
        return self


# --------------------------------------------------------------------------------------------- layers


def norm_groups(channels: int, max_groups: int = NORM_GROUPS) -> int:
    """32 groups, or the largest divisor of ``channels`` below 32 when 32 does not divide it."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back to the input dtype (stable under bf16/fp16)."""

    def __init__(self, channels: int) -> None:
        super().__init__(norm_groups(channels), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # group_norm is not a lower-precision op under autocast (CPU or CUDA), so float32 inputs stay float32
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


def zero_(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = MAX_PERIOD) -> torch.Tensor:
    """ADM's sinusoidal embedding of (possibly fractional) times t: (B,) -> (B, dim) float32, [cos | sin]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class Downsample(nn.Module):
    """Halve the resolution: a stride-2 3x3 conv (``use_conv``) or a 2x2 average pool."""

    def __init__(self, channels: int, use_conv: bool, out_channels: Optional[int] = None) -> None:
        super().__init__()
        out_channels = out_channels or channels
        if use_conv:
            self.op = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)
        else:
            if out_channels != channels:
                raise ValueError("average-pool downsampling cannot change the channel count")
            self.op = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour, then a 3x3 conv if ``use_conv``."""

    def __init__(self, channels: int, use_conv: bool, out_channels: Optional[int] = None) -> None:
        super().__init__()
        out_channels = out_channels or channels
        if not use_conv and out_channels != channels:
            raise ValueError("upsampling without a conv cannot change the channel count")
        self.conv = nn.Conv2d(channels, out_channels, 3, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.conv is not None else x


class ResBlock(nn.Module):
    """ADM residual block conditioned on the embedding; optionally resamples (``up``/``down``)."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: Optional[int] = None,
        use_scale_shift_norm: bool = True,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.h_upd(h)
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the spatial positions, residual, zero-initialised output projection."""

    def __init__(self, channels: int, num_head_channels: int) -> None:
        super().__init__()
        if channels % num_head_channels:
            raise ValueError(f"channels {channels} not divisible by num_head_channels {num_head_channels}")
        self.num_heads = channels // num_head_channels
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, c, *spatial = x.shape
        x_flat = x.reshape(b, c, -1)
        length = x_flat.shape[-1]
        qkv = self.qkv(self.norm(x_flat))  # (B, 3C, T), laid out per head as [q | k | v] (ADM "legacy" order)
        qkv = qkv.reshape(b * self.num_heads, 3 * (c // self.num_heads), length)
        q, k, v = (u.transpose(1, 2) for u in qkv.chunk(3, dim=1))  # (B·H, T, ch)
        if q.is_cuda:
            h = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ / sqrt(ch)) v, fused on the GPU
        else:
            # the same product spelled out: for these (B·H, T, ch) shapes torch's CPU SDPA takes its math path
            # with -inf checks, about 4x slower per call (tiny at 28x28: the whole forward 1.09x; docs/models.md)
            h = torch.bmm(torch.bmm(q, k.transpose(1, 2)).mul_(q.shape[-1] ** -0.5).softmax(dim=-1), v)
        h = h.transpose(1, 2).reshape(b, c, length)
        return (x_flat + self.proj_out(h)).reshape(b, c, *spatial)


class EmbedSequential(nn.Sequential):
    """A sequence of layers where residual blocks also receive the embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, (ResBlock, AttentionBlock)) else layer(x)
        return x


# ---------------------------------------------------------------------------------------------- model


class UNet(nn.Module):
    """``model(x, t, y) -> velocity``: x (B, C, H, W) float, t (B,) float in [0, 1] (a scalar is broadcast),
    y (B,) long labels in [0, num_classes] (num_classes = the null label), or None for an unconditional
    model. Returns a tensor shaped like x, in x's dtype."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.use_checkpoint = cfg.use_checkpoint
        mc, ted = cfg.model_channels, cfg.time_embed_dim
        attn_at = set(cfg.attention_levels)

        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        self.label_emb = nn.Embedding(cfg.num_classes + 1, ted) if cfg.num_classes is not None else None

        def resblock(cin: int, cout: int, **kw) -> ResBlock:
            return ResBlock(cin, ted, cfg.dropout, cout, cfg.use_scale_shift_norm, **kw)

        ch = mc * cfg.channel_mult[0]
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        skip_channels = [ch]
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [resblock(ch, mc * mult)]
                ch = mc * mult
                if level in attn_at:
                    layers.append(AttentionBlock(ch, cfg.num_head_channels))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_channels.append(ch)
            if level != cfg.num_levels - 1:
                down = resblock(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch, cfg.conv_resample)
                self.input_blocks.append(EmbedSequential(down))
                skip_channels.append(ch)

        self.middle_block = EmbedSequential(
            resblock(ch, ch), AttentionBlock(ch, cfg.num_head_channels), resblock(ch, ch)
        )

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [resblock(ch + skip_channels.pop(), mc * mult)]
                ch = mc * mult
                if level in attn_at:
                    layers.append(AttentionBlock(ch, cfg.num_head_channels))
                if level and i == cfg.num_res_blocks:
                    layers.append(resblock(ch, ch, up=True) if cfg.resblock_updown else Upsample(ch, cfg.conv_resample))
                self.output_blocks.append(EmbedSequential(*layers))
        assert not skip_channels
        self._factor = 2 ** (cfg.num_levels - 1)

        self.out = nn.Sequential(
            GroupNorm32(ch), nn.SiLU(), zero_(nn.Conv2d(ch, cfg.output_channels, 3, padding=1))
        )

    # -- public attributes -----------------------------------------------------------------------------

    @property
    def num_classes(self) -> Optional[int]:
        return self.cfg.num_classes

    @property
    def is_conditional(self) -> bool:
        return self.cfg.num_classes is not None

    @property
    def null_label(self) -> int:
        """Index of the "null" class (classifier-free guidance); 0 for an unconditional model (ignored)."""
        return self.cfg.num_classes if self.cfg.num_classes is not None else 0

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # -- forward ------------------------------------------------------------------------------------------

    def _block(self, block: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(block, h, emb, use_reentrant=False)
        return block(h, emb)

    def embed(self, t: torch.Tensor, y: Optional[torch.Tensor], batch: int) -> torch.Tensor:
        """The (B, 4·model_channels) conditioning vector from time and label."""
        t = torch.as_tensor(t, device=self.time_embed[0].weight.device)
        if t.dim() == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t must have shape ({batch},) or be a scalar; got {tuple(t.shape)}")
        temb = timestep_embedding(t * self.cfg.time_scale, self.cfg.model_channels)
        emb = self.time_embed(temb.to(self.time_embed[0].weight.dtype))
        if self.label_emb is not None:
            if y is None:
                raise ValueError(
                    "this model is class-conditional: pass y, using model.null_label "
                    f"({self.null_label}) for the unconditional velocity"
                )
            if y.shape != (batch,):
                raise ValueError(f"y must have shape ({batch},); got {tuple(y.shape)}")
            if y.dtype.is_floating_point or y.dtype == torch.bool:
                raise ValueError(f"y must hold integer labels; got dtype {y.dtype}")
            emb = emb + self.label_emb(y.long())
        return emb

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"x must be (B, {self.cfg.in_channels}, H, W); got {tuple(x.shape)}")
        emb = self.embed(t, y, x.shape[0])
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self._factor, -width % self._factor
        h = F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x  # zeros right and bottom (module docstring)
        stack = []
        for block in self.input_blocks:
            h = self._block(block, h, emb)
            stack.append(h)
        h = self._block(self.middle_block, h, emb)
        for block in self.output_blocks:
            h = self._block(block, torch.cat([h, stack.pop().to(h.dtype)], dim=1), emb)
        return self.out(h)[..., :height, :width].to(x.dtype)


def build_unet(cfg: UNetConfig) -> UNet:
    """Validate ``cfg`` and build the network (weights on the current default device, ADM initialisation)."""
    return UNet(cfg.validate())


__all__ = [
    "AttentionBlock",
    "ResBlock",
    "UNet",
    "UNetConfig",
    "build_unet",
    "norm_groups",
    "timestep_embedding",
]
