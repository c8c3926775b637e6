"""Small builders of real test images shared by the data tests."""

from __future__ import annotations

import io

import numpy as np
import skimage.data
from PIL import Image


def photo_tiles(side: int, count: int) -> list[np.ndarray]:
    """``count`` RGB tiles of ``side`` pixels cut from skimage's bundled photos (deterministic positions)."""
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    rng = np.random.default_rng(0)
    tiles = []
    for index in range(count):
        photo = photos[index % len(photos)]
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        tiles.append(np.ascontiguousarray(photo[top : top + side, left : left + side]))
    return tiles


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
