"""Builders of real source images shared by the converter tests (imported by conftest and tests).

A plain module with a unique name rather than ``conftest``: several test directories may have a
``conftest.py``, and importing one by that name could pick up another's.
"""

from __future__ import annotations

import io
from pathlib import Path

import lmdb
import numpy as np
import skimage.data
from PIL import Image

CIFAR_CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def encode(array: np.ndarray, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def photos() -> dict[str, np.ndarray]:
    return {
        "astronaut": skimage.data.astronaut(),
        "coffee": skimage.data.coffee(),
        "chelsea": skimage.data.chelsea(),
        "rocket": skimage.data.rocket(),
        "immunohistochemistry": skimage.data.immunohistochemistry(),
        "colorwheel": skimage.data.colorwheel(),
    }


def add_lmdb_value(path: Path, key: str, data: bytes) -> None:
    environment = lmdb.open(str(path), map_size=1 << 26)
    with environment.begin(write=True) as transaction:
        transaction.put(key.encode("ascii"), data)
    environment.close()
