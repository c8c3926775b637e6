"""Turning one shard sample (a dict of tar members) into pixels and a label.

Shared by the training/evaluation streams and by ``verify`` so that "verify passed" means exactly "the
loader will accept every sample". Errors are raised as ordinary exceptions with a short reason; the caller
adds the shard and key when it reports them.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Final

import numpy as np
from PIL import Image, UnidentifiedImageError

from kacdist.data.imaging import to_mode

IMAGE_MEMBER_EXTENSIONS: Final = ("png", "jpg", "jpeg", "webp")
"""Tar member extensions read as the sample's image, in order of preference."""

_PIL_FORMAT_BY_EXTENSION: Final = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
LABEL_MEMBER_EXTENSION: Final = "cls"
UNLABELLED: Final = -1
"""Label returned for samples without a ``cls`` member."""


class SampleDecodeError(ValueError):
    """A sample's members are missing, malformed or do not decode."""


def image_member(members: Mapping[str, bytes]) -> tuple[str, bytes]:
    """The (extension, bytes) of the sample's image member."""
    for extension in IMAGE_MEMBER_EXTENSIONS:
        if extension in members:
            return extension, members[extension]
    raise SampleDecodeError(f"no image member (expected one of {IMAGE_MEMBER_EXTENSIONS}; has {sorted(members)})")


def decode_label(members: Mapping[str, bytes]) -> int:
    """The integer class stored as decimal text in ``cls``, or :data:`UNLABELLED` when there is none."""
    raw = members.get(LABEL_MEMBER_EXTENSION)
    if raw is None:
        return UNLABELLED
    try:
        label = int(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError) as error:
        raise SampleDecodeError(f"cls member is not a decimal integer: {raw[:20]!r}") from error
    if label < 0:
        raise SampleDecodeError(f"cls member is negative: {label}")
    return label


def _open_image(data: bytes, extension: str | None) -> Image.Image:
    """Open with the format the member extension names first: PIL otherwise probes every plugin, which
    costs more than decoding a 32x32 PNG. A member whose bytes are another format still opens, by probing."""
    expected = _PIL_FORMAT_BY_EXTENSION.get(extension or "")
    if expected is not None:
        try:
            return Image.open(io.BytesIO(data), formats=[expected])
        except UnidentifiedImageError:
            pass
    return Image.open(io.BytesIO(data))


def decode_pixels(data: bytes, channels: int, extension: str | None = None) -> np.ndarray:
    """Fully decode image bytes to a (H, W, channels) uint8 array.

    ``Image.open`` only parses the header; ``load()`` forces the whole decode so that a truncated or
    damaged payload fails here rather than later inside collation.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    try:
        with _open_image(data, extension) as image:
            image.load()
            converted = to_mode(image, "RGB" if channels == 3 else "L")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise SampleDecodeError(f"image does not decode: {error}") from error
    pixels = np.asarray(converted, dtype=np.uint8)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def decode_sample(members: Mapping[str, bytes], channels: int) -> tuple[np.ndarray, int]:
    """(pixels (H, W, C) uint8, label) of one sample."""
    extension, data = image_member(members)
    label = decode_label(members)
    return decode_pixels(data, channels, extension), label
