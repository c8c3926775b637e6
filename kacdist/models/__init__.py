"""Velocity networks: the ADM UNet (openai/guided-diffusion architecture) and its named presets."""

from .presets import PRESETS, get_preset
from .unet import UNet, UNetConfig, build_unet

__all__ = ["PRESETS", "UNet", "UNetConfig", "build_unet", "get_preset"]
