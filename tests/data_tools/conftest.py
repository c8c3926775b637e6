"""Real source datasets in the formats the converters read, built in tmp_path from bundled photos and digits.

(This directory has no ``__init__.py`` on purpose: without a ``tests/__init__.py`` a package here would be
imported under the name ``data_tools`` and shadow the real converters package.)
"""

from __future__ import annotations

import hashlib
import pickle
import shutil
from pathlib import Path

import lmdb
import numpy as np
import pytest
import skimage.data
from sklearn.datasets import load_digits

from tests.data_tools.converter_sources import CIFAR_CLASS_NAMES, encode, photos


def _private_copy(template: Path, tmp_path: Path) -> Path:
    """Sources are built once per session; each test gets its own copy to add broken files to."""
    return Path(shutil.copytree(template, tmp_path / template.name))


@pytest.fixture(scope="session")
def photo_folder_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sources") / "folder"
    images = photos()
    layout = {
        "cats/chelsea.png": (images["chelsea"], "PNG"),
        "cats/close_up.jpg": (images["chelsea"][50:250, 100:400], "JPEG"),
        "scenes/astronaut.png": (images["astronaut"], "PNG"),
        "scenes/coffee.jpg": (images["coffee"], "JPEG"),
        "scenes/rocket.webp": (images["rocket"], "WEBP"),
        "scenes/more/cells.png": (images["immunohistochemistry"], "PNG"),
        "scenes/more/camera.png": (skimage.data.camera(), "PNG"),
    }
    for relative, (array, image_format) in layout.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(array, image_format, **({"quality": 95} if image_format != "PNG" else {})))
    (root / "scenes" / "notes.txt").write_text("not an image, ignored by suffix")
    return root


@pytest.fixture()
def photo_folder(photo_folder_template: Path, tmp_path: Path) -> Path:
    """Two class folders (one nested sub-folder) of real photos in PNG, JPEG and WebP, plus a grey image."""
    return _private_copy(photo_folder_template, tmp_path)


@pytest.fixture(scope="session")
def lsun_lmdb_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    path = tmp_path_factory.mktemp("sources") / "bedroom_train_lmdb"
    values: dict[str, bytes] = {}
    for index, (name, array) in enumerate(photos().items()):
        image_format = "JPEG" if name == "coffee" else "WEBP"
        data = encode(array, image_format, quality=90)
        key = hashlib.sha1(f"{index}-{name}".encode()).hexdigest()
        values[key] = data
    environment = lmdb.open(str(path), map_size=1 << 26)
    with environment.begin(write=True) as transaction:
        for key, data in values.items():
            transaction.put(key.encode("ascii"), data)
    environment.close()
    return path, values


@pytest.fixture()
def lsun_lmdb(lsun_lmdb_template: tuple[Path, dict[str, bytes]], tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """An LSUN-style lmdb: hex sha1 keys, WebP values of varied sizes (one JPEG, as in older exports)."""
    template, values = lsun_lmdb_template
    return _private_copy(template, tmp_path), dict(values)


@pytest.fixture(scope="session")
def cifar_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("sources") / "cifar-10-batches-py"
    directory.mkdir()
    rng = np.random.default_rng(1)
    pictures = list(photos().values())
    targets = load_digits().target
    counter = 0

    def batch(count: int, label: bytes) -> dict[bytes, object]:
        nonlocal counter
        rows, labels, names = [], [], []
        for _ in range(count):
            picture = pictures[counter % len(pictures)]
            top, left = (int(rng.integers(0, side - 32)) for side in picture.shape[:2])
            tile = picture[top : top + 32, left : left + 32]
            rows.append(tile.transpose(2, 0, 1).reshape(-1))
            labels.append(int(targets[counter]))
            names.append(f"tile_{counter}.png".encode())
            counter += 1
        return {b"batch_label": label, b"labels": labels, b"data": np.stack(rows).astype(np.uint8), b"filenames": names}

    for number in range(1, 6):
        content = batch(4, f"training batch {number} of 5".encode())
        (directory / f"data_batch_{number}").write_bytes(pickle.dumps(content, protocol=2))
    (directory / "test_batch").write_bytes(pickle.dumps(batch(6, b"testing batch 1 of 1"), protocol=2))
    meta = {b"label_names": [name.encode() for name in CIFAR_CLASS_NAMES], b"num_cases_per_batch": 4, b"num_vis": 3072}
    (directory / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return directory


@pytest.fixture()
def cifar_dir(cifar_template: Path, tmp_path: Path) -> Path:
    """CIFAR-10 python batches (Python-2 style: byte-string keys, protocol 2): 5 x 4 train, 6 test images.

    Images are 32x32 tiles of real photos; labels are scikit-learn digits targets (0..9).
    """
    return _private_copy(cifar_template, tmp_path)


@pytest.fixture(scope="session")
def celeba_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sources") / "celeba"
    image_dir = root / "img_align_celeba"
    image_dir.mkdir(parents=True)
    pictures = list(photos().values())
    partition_lines = []
    for number in range(1, 10):
        picture = pictures[number % len(pictures)]
        offset = 10 * number
        crop = picture[offset : offset + 218, offset : offset + 178]
        (image_dir / f"{number:06d}.jpg").write_bytes(encode(crop, "JPEG", quality=95))
        partition_lines.append(f"{number:06d}.jpg {0 if number <= 5 else 1 if number <= 7 else 2}")
    partition_lines.insert(7, "000010.jpg 1")
    (root / "list_eval_partition.txt").write_text("\n".join(partition_lines) + "\n")
    return root


@pytest.fixture()
def celeba_dir(celeba_template: Path, tmp_path: Path) -> Path:
    """``img_align_celeba/`` with nine 178x218 JPEG crops of photos and a partition file (5 train, 2 valid,
    2 test) that also lists one image missing on disk (000010.jpg, valid)."""
    return _private_copy(celeba_template, tmp_path)
