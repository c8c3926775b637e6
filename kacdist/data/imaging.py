"""Source-image preprocessing and encoding for the converters.

Every converter turns whatever its source holds into a square image of the target resolution in one of
two modes ("RGB" or "L") and encodes it as PNG, JPEG or WebP. Keeping the geometry here, as small named
functions, makes each dataset's recipe (ADM's LSUN crop, the 140-pixel CelebA crop) one readable line in
its converter and lets tests check the arithmetic directly.
"""

from __future__ import annotations

import io
from typing import Final

from PIL import Image

IMAGE_FORMATS: Final = ("png", "jpg", "webp")
"""Encodings a shard may hold; the name is also the tar member extension."""


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert to "RGB" or "L"; transparent pixels are composited over white.

    Plain ``convert("RGB")`` drops alpha and exposes whatever colour the transparent pixels happen to
    store (often black), which would teach a generator arbitrary backgrounds.
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"image mode must be 'RGB' or 'L', not {mode!r}")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image if image.mode == mode else image.convert(mode)


def center_crop(image: Image.Image, crop: int) -> Image.Image:
    """Square crop of side ``crop`` around the image centre (offsets rounded like torchvision's CenterCrop)."""
    width, height = image.size
    if crop > min(width, height):
        raise ValueError(f"cannot crop {crop}x{crop} from a {width}x{height} image")
    left = int(round((width - crop) / 2.0))
    top = int(round((height - crop) / 2.0))
    return image.crop((left, top, left + crop, top + crop))


def resize_short_side_then_center_crop(
    image: Image.Image, size: int, resample: Image.Resampling = Image.Resampling.BOX
) -> Image.Image:
    """Scale so the short side is ``size``, then take the central ``size`` x ``size`` square.

    With the default BOX filter this is the recipe of ADM's LSUN preparation script (guided-diffusion
    ``datasets/lsun_bedroom.py``), so FIDs against ADM's reference batches compare like with like.
    """
    width, height = image.size
    scale = size / min(width, height)
    new_width = max(size, int(round(width * scale)))
    new_height = max(size, int(round(height * scale)))
    resized = image.resize((new_width, new_height), resample=resample)
    left = (new_width - size) // 2
    top = (new_height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def encode_image(image: Image.Image, image_format: str, quality: int = 95) -> bytes:
    """Encode to PNG (lossless), JPEG (4:4:4 chroma, ``quality``) or WebP (lossy, ``quality``).

    JPEG keeps full chroma resolution because 4:2:0 subsampling visibly blurs colour edges at 32-64 px,
    exactly the detail a generator is scored on.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image format must be one of {IMAGE_FORMATS}, not {image_format!r}")
    buffer = io.BytesIO()
    if image_format == "png":
        image.save(buffer, format="PNG")
    elif image_format == "jpg":
        image.save(buffer, format="JPEG", quality=quality, subsampling=0)
    else:
        image.save(buffer, format="WEBP", quality=quality)
    return buffer.getvalue()

