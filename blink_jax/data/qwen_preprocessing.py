"""Qwen2.5-VL image preprocessing on the host, with static shapes: every image is resized to one of a
fixed set of visual grid buckets, so a stream of images compiles one program per bucket.

transformers' `Qwen2VLImageProcessor` resizes each image to its own `smart_resize` size (both sides
multiples of 28, the pixel count within [min_pixels, max_pixels], the aspect ratio kept as nearly as
rounding allows): one shape per distinct image size, which on a TPU is one compile each. Here an image
instead takes the bucket whose aspect ratio is nearest its own (then the larger one), and is resized
to it with the same bicubic resampling, rescaling and CLIP normalisation. `grid="native"` gives
transformers' own size (smart_resize), for parity and for users who accept a compile per size.

Buckets are (rows, columns) of merged visual tokens (28 x 28 pixels each). The default set (ours)
covers the aspect ratios 1:1, 4:3, 3:2, 16:9 and 2:1 in both orientations within 1024 visual tokens
(896 x 896 pixels for a square image; LLaVA-1.5 has 576): each side a multiple of 4, so the ViT's
4 x 4-token attention windows tile the grid without padding and Blink's p x p regions (p = 4) divide
it.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image

from blink_jax.data.image_preprocessing import (CLIP_MEAN, CLIP_STD, DEFAULT_MAX_PIXELS, ImageError, ImageLike,
                                               load_image)
from blink_jax.models.qwen2_5_vl_config import MAX_PIXELS, MIN_PIXELS

UNIT = 28                       # pixels a side of one merged visual token (patch 14 x merge 2)

DEFAULT_GRID_BUCKETS: tuple[tuple[int, int], ...] = (
    (32, 32),                   # 1:1
    (28, 36), (36, 28),         # 4:3 (1.29)
    (24, 36), (36, 24),         # 3:2
    (24, 40), (40, 24),         # 16:9 (1.67)
    (20, 40), (40, 20),         # 2:1
)


def smart_resize(height: int, width: int, factor: int = UNIT, min_pixels: int = MIN_PIXELS,
                 max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
  """transformers' smart_resize: (height, width) rounded to multiples of `factor`, scaled into
  [min_pixels, max_pixels] keeping the aspect ratio."""
  if max(height, width) / min(height, width) > 200:
    raise ImageError(f"an image of {height} x {width}: aspect ratio over 200 (transformers' limit)")
  h_bar = round(height / factor) * factor
  w_bar = round(width / factor) * factor
  if h_bar * w_bar > max_pixels:
    beta = math.sqrt((height * width) / max_pixels)
    h_bar = max(factor, math.floor(height / beta / factor) * factor)
    w_bar = max(factor, math.floor(width / beta / factor) * factor)
  elif h_bar * w_bar < min_pixels:
    beta = math.sqrt(min_pixels / (height * width))
    h_bar = math.ceil(height * beta / factor) * factor
    w_bar = math.ceil(width * beta / factor) * factor
  return h_bar, w_bar


def check_buckets(buckets: Sequence[Sequence[int]]) -> tuple[tuple[int, int], ...]:
  out = tuple((int(r), int(c)) for r, c in buckets)
  if not out or any(r < 1 or c < 1 for r, c in out):
    raise ValueError(f"grid buckets {list(buckets)}: expected (rows, columns) pairs of positive merged-token counts")
  return out


def choose_bucket(height: int, width: int, buckets: Sequence[tuple[int, int]] = DEFAULT_GRID_BUCKETS) -> tuple[int, int]:
  """The bucket whose aspect ratio (columns / rows) is nearest the image's (width / height), in log
  ratio; among equally near ones the largest."""
  aspect = math.log(width / height)
  return min(check_buckets(buckets), key=lambda b: (round(abs(math.log(b[1] / b[0]) - aspect), 9), -b[0] * b[1]))


def image_grid(height: int, width: int, grid: str | Sequence[tuple[int, int]] = DEFAULT_GRID_BUCKETS,
               min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
  """(rows, columns) of merged tokens an image of height x width pixels is resized to: its bucket, or
  with grid="native" its smart_resize size."""
  if isinstance(grid, str):
    if grid != "native":
      raise ValueError(f"grid {grid!r}: expected 'native' or a sequence of (rows, columns) buckets")
    h, w = smart_resize(height, width, UNIT, min_pixels, max_pixels)
    return h // UNIT, w // UNIT
  return choose_bucket(height, width, grid)


def preprocess_qwen_image(image: ImageLike, grid: str | Sequence[tuple[int, int]] = DEFAULT_GRID_BUCKETS, *,
                          name: str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                          min_resize_pixels: int = MIN_PIXELS, max_resize_pixels: int = MAX_PIXELS) -> np.ndarray:
  """One image -> float32 [rows x 28, columns x 28, 3], CLIP-normalised (NHWC for the vision tower);
  rows x columns from image_grid. `max_pixels` bounds what is decoded (image_preprocessing.load_image);
  min/max_resize_pixels are transformers' min_pixels / max_pixels for grid="native"."""
  img = load_image(image, name, max_pixels=max_pixels, min_side=UNIT)
  rows, cols = image_grid(img.height, img.width, grid, min_resize_pixels, max_resize_pixels)
  arr = np.asarray(img.resize((cols * UNIT, rows * UNIT), resample=Image.Resampling.BICUBIC))
  x = (arr.astype(np.float64) * (1.0 / 255.0)).astype(np.float32)
  return (x - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)

