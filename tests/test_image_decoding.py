"""Image decoding: every PIL mode by its real range (16-bit scaled, not clipped), oversized images
decoded at a reduced scale (JPEG) or refused with a named ImageError, never a crash."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from blink_jax.data.image_preprocessing import ImageError, load_image, preprocess_image


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
  buf = io.BytesIO()
  img.save(buf, format=fmt, **kw)
  return buf.getvalue()


def _ramp16() -> np.ndarray:
  return np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grey_is_scaled_not_saturated(fmt):
  ramp = _ramp16()
  data = _encode(Image.fromarray(ramp), fmt)
  assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
  rgb = np.asarray(load_image(data))
  expected = np.round(ramp / 257.0).astype(np.uint8)
  assert rgb.shape == (64, 64, 3)
  np.testing.assert_array_equal(rgb[..., 0], expected)
  assert (rgb == 255).mean() < 0.01          # PIL's plain convert("RGB") gives 99.6% at 255
  np.testing.assert_array_equal(np.asarray(load_image(ramp)), rgb)   # uint16 arrays alike


def test_32_bit_and_float_grey():
  ramp = _ramp16().astype(np.int32)
  np.testing.assert_array_equal(np.asarray(load_image(Image.fromarray(ramp, mode="I")))[..., 0],
                                np.round(ramp / 257.0).astype(np.uint8))
  unit = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
  np.testing.assert_array_equal(np.asarray(load_image(Image.fromarray(unit, mode="F")))[..., 1],
                                np.round(unit * 255).astype(np.uint8))


def test_grey_rgba_cmyk_palette_match_pils_rgb_conversion():
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
  base = Image.fromarray(rgb)
  cases = {
      "L": base.convert("L"), "LA": base.convert("LA"), "RGBA": base.convert("RGBA"),
      "CMYK": base.convert("CMYK"), "P": base.convert("P", palette=Image.Palette.ADAPTIVE),
      "1": base.convert("1"),
  }
  for mode, img in cases.items():
    for fmt in ("PNG", "TIFF") if mode != "CMYK" else ("TIFF", "JPEG"):
      data = _encode(img, fmt)
      decoded = Image.open(io.BytesIO(data))
      got = np.asarray(load_image(data))
      assert got.shape == (24, 32, 3), (mode, fmt)
      np.testing.assert_array_equal(got, np.asarray(decoded.convert("RGB")), err_msg=f"{mode} {fmt}")


def _png_claiming(width: int, height: int) -> bytes:
  """A tiny PNG whose header claims width x height (a decompression bomb's shape, cheaply)."""
  data = bytearray(_encode(Image.new("L", (8, 8)), "PNG"))
  ihdr = data[12:29]  # b"IHDR" + 13 bytes
  ihdr[4:12] = struct.pack(">II", width, height)
  data[12:29] = ihdr
  data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
  return bytes(data)


def test_oversized_png_is_a_named_image_error_not_a_crash():
  bomb = _png_claiming(14000, 14000)
  with pytest.raises(ImageError, match=r"huge\.png: 14000x14000 = 196000000 pixels exceeds the limit"):
    preprocess_image(bomb, 56, name="huge.png")
  with pytest.raises(ImageError, match=r"exceeds the limit of 1000"):
    load_image(_encode(Image.new("RGB", (40, 40)), "PNG"), max_pixels=1000)


def test_oversized_jpeg_is_decoded_at_a_reduced_scale():
  rng = np.random.default_rng(1)
  big = Image.fromarray(rng.integers(0, 256, (1200, 1600, 3), dtype=np.uint8))
  data = _encode(big, "JPEG", quality=90)
  img = load_image(data, max_pixels=500_000, min_side=300)
  assert img.size == (400, 300)              # JPEG DCT scaling 1/4: shorter side still >= 300
  pixels = preprocess_image(data, 112, max_pixels=500_000)
  full = preprocess_image(data, 112)
  assert pixels.shape == (112, 112, 3) and np.abs(pixels - full).mean() < 0.1


def test_unreadable_inputs_are_image_errors():
  with pytest.raises(ImageError, match="not a readable image"):
    load_image(b"\x89PNG\r\n\x1a\n garbage")
  with pytest.raises(ImageError, match="file not found"):
    load_image("/nonexistent/x.jpg")
  with pytest.raises(ValueError, match="preprocessing mode 'padd'") as info:
    preprocess_image(np.zeros((8, 8, 3), np.uint8), mode="padd")
  assert not isinstance(info.value, ImageError)   # a setting, not an image: never skipped
