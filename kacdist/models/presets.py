"""Named UNet configurations.

``cifar10``, ``celeba64`` and ``lsun_bedroom256`` are DistillKac Table B-1; ``lightweight`` is Table B-3 (the
small CelebA-64 UNet of the Kac (a, c) search, App. B.2); ``tiny`` is this project's CPU model for 16x16
digits. Parameter counts are in docs/models.md and pinned by tests/models/test_presets.py.

Fields the paper does not state, and what is used (ADM's default unless said otherwise):

* ``in_channels`` 3 (RGB data sets) and ``out_channels`` = ``in_channels`` (a velocity; ADM without learned sigma);
* ``num_classes``: 10 for CIFAR-10, which the paper trains class-conditionally with classifier-free guidance
  (§5.1), None (unconditional) for CelebA-64, LSUN Bedroom-256 and the lightweight CelebA search model;
* ``conv_resample`` True (ADM default; unused when ``resblock_updown`` is on, as in every paper preset);
* ``time_scale`` 1.0: raw t in [0, 1], as the reference Kac-flow code (not ADM's ×1000 step indices);
* ``use_checkpoint`` False (ADM default; a memory knob that does not change the function);
* ADM's "legacy" attention (q, k, v split per head) and ``num_heads_upsample`` = ``num_heads``: ADM defaults.

Table B-1's "Use AMP" (LSUN yes) and all training fields are training settings, not part of the network.
"""

from __future__ import annotations

from typing import Dict

from .unet import UNetConfig

PRESETS: Dict[str, UNetConfig] = {
    # DistillKac Table B-1, CIFAR-10 column (class-conditional: CFG is used on CIFAR-10, §5.1)
    "cifar10": UNetConfig(
        image_size=32,
        in_channels=3,
        model_channels=256,
        channel_mult=(1, 2, 2, 3),
        num_res_blocks=3,
        attention_levels=(1, 2, 3),  # 16, 8, 4 at 32x32
        num_head_channels=64,
        dropout=0.0,
        num_classes=10,
        use_scale_shift_norm=True,
        resblock_updown=True,
    ),
    # Table B-1, CelebA-64 column (unconditional, §5.1)
    "celeba64": UNetConfig(
        image_size=64,
        in_channels=3,
        model_channels=192,
        channel_mult=(1, 2, 3, 4),
        num_res_blocks=3,
        attention_levels=(1, 2),  # 32, 16 at 64x64
        num_head_channels=64,
        dropout=0.0,
        num_classes=None,
        use_scale_shift_norm=True,
        resblock_updown=True,
    ),
    # Table B-1, LSUN bedrooms-256 column (unconditional, §5.1; trained with AMP)
    "lsun_bedroom256": UNetConfig(
        image_size=256,
        in_channels=3,
        model_channels=256,
        channel_mult=(1, 1, 2, 2, 4, 4),
        num_res_blocks=2,
        attention_levels=(3, 4, 5),  # 32, 16, 8 at 256x256
        num_head_channels=64,
        dropout=0.1,
        num_classes=None,
        use_scale_shift_norm=True,
        resblock_updown=True,
    ),
    # Table B-3: the lightweight UNet of the (a, c) search on CelebA-64 (App. B.2), unconditional
    "lightweight": UNetConfig(
        image_size=64,
        in_channels=3,
        model_channels=128,
        channel_mult=(1, 2, 2, 2),
        num_res_blocks=2,
        attention_levels=(2,),  # 16 at 64x64
        num_head_channels=64,
        dropout=0.1,
        num_classes=None,
        use_scale_shift_norm=False,
        resblock_updown=True,
    ),
    # Not in the paper: a 16x16 single-channel, 10-class model (scikit-learn digits) that trains on a CPU in
    # minutes. Same ADM block structure as the others; 32 channels at both levels (16x16 and 8x8), one 32-wide
    # attention head at 8x8 and in the middle. channel_mult=(1, 2) would give 1,152,897 parameters at about
    # half the training speed; (1, 1) keeps it at 0.49M (see docs/models.md for measured images/s).
    "tiny": UNetConfig(
        image_size=16,
        in_channels=1,
        model_channels=32,
        channel_mult=(1, 1),
        num_res_blocks=2,
        attention_levels=(1,),  # 8 at 16x16
        num_head_channels=32,
        dropout=0.0,
        num_classes=10,
        use_scale_shift_norm=True,
        resblock_updown=True,
    ),
}

for _name, _cfg in PRESETS.items():  # a broken preset should fail at import, not in a job hours later
    _cfg.validate()


class UnknownPresetError(KeyError, ValueError):
    """An unknown preset name; a KeyError (a missing key) and a ValueError (a bad config value) alike."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def get_preset(name: str, **overrides) -> UNetConfig:
    """The preset ``name`` with some fields replaced (e.g. ``num_classes=None``, ``dropout=0.1``), validated.

    Unknown names raise UnknownPresetError (a KeyError and a ValueError) listing the valid presets; unknown or invalid fields raise ValueError naming
    the field.
    """
    if name not in PRESETS:
        raise UnknownPresetError(f"unknown UNet preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name].replace(**overrides).validate()


__all__ = ["PRESETS", "UnknownPresetError", "get_preset"]
