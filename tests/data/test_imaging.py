"""Crop/resize geometry and encodings used by the converters, on real photos."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image

from kacdist.data.decode import SampleDecodeError, decode_label, decode_pixels, image_member
from kacdist.data.imaging import center_crop, encode_image, resize_short_side_then_center_crop, to_mode


def test_center_crop_uses_celeba_offsets() -> None:
    photo = Image.fromarray(skimage.data.astronaut()).resize((178, 218))
    cropped = center_crop(photo, 140)
    assert cropped.size == (140, 140)
    expected = np.asarray(photo)[39 : 39 + 140, 19 : 19 + 140]
    assert np.array_equal(np.asarray(cropped), expected)
    with pytest.raises(ValueError, match="cannot crop"):
        center_crop(photo, 200)


def test_short_side_resize_then_centre_square_on_a_landscape_photo() -> None:
    coffee = Image.fromarray(skimage.data.coffee())  # 600 x 400
    result = resize_short_side_then_center_crop(coffee, 64)
    assert result.size == (64, 64)
    scaled = np.asarray(coffee.resize((96, 64), resample=Image.Resampling.BOX))
    assert np.array_equal(np.asarray(result), scaled[:, 16:80])


def test_encodings_round_trip() -> None:
    tile = skimage.data.chelsea()[100:164, 200:264]
    image = Image.fromarray(tile)
    assert np.array_equal(decode_pixels(encode_image(image, "png"), 3), tile)
    for image_format in ("jpg", "webp"):
        decoded = decode_pixels(encode_image(image, image_format, quality=95), 3).astype(int)
        assert decoded.shape == tile.shape
        assert np.abs(decoded - tile).mean() < 4.0
    assert Image.open(io.BytesIO(encode_image(image, "jpg"))).format == "JPEG"


def test_transparency_is_composited_on_white() -> None:
    logo = Image.fromarray(skimage.data.logo())  # RGBA with transparent corners
    rgb = np.asarray(to_mode(logo, "RGB"))
    alpha = skimage.data.logo()[:, :, 3]
    assert (rgb[alpha == 0] == 255).all()
    assert to_mode(logo, "L").mode == "L"


def test_decode_helpers_reject_bad_members() -> None:
    grey = decode_pixels(encode_image(Image.fromarray(skimage.data.camera()[:32, :32]), "png"), 1)
    assert grey.shape == (32, 32, 1)
    assert decode_pixels(encode_image(Image.fromarray(skimage.data.camera()[:32, :32]), "png"), 3).shape == (32, 32, 3)
    with pytest.raises(SampleDecodeError, match="does not decode"):
        decode_pixels(b"\x89PNG garbage", 3)
    with pytest.raises(SampleDecodeError, match="no image member"):
        image_member({"cls": b"1"})
    with pytest.raises(SampleDecodeError, match="decimal"):
        decode_label({"cls": b"one"})
    assert decode_label({}) == -1
