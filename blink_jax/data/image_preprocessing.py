"""LLaVA-1.5 image preprocessing on the host: decode, pad-to-square or crop, resize, normalise.

Two named modes (BLINK_SPEC §1):
- "pad" (default): the original LLaVA-1.5 `image_aspect_ratio="pad"` used for the published numbers:
  pad to square with the CLIP mean colour, then resize to the model's size. Equals HF
  `LlavaImageProcessor(do_pad=True)`.
- "crop": what the `llava-hf` checkpoints' `CLIPImageProcessor` does: resize the shortest side, then
  centre-crop. Equals HF `CLIPImageProcessor` with the checkpoint's settings.
"""

from __future__ import annotations

import io
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MODES = ("pad", "crop")

ImageLike = Union[Image.Image, np.ndarray, bytes, str]


def load_image(source: ImageLike, name: str | None = None) -> Image.Image:
  """Decodes a path, encoded bytes, an HWC uint8 array or a PIL image into an RGB PIL image.

  Raises ValueError naming the input when it is not a readable image.
  """
  label = name or (source if isinstance(source, str) else type(source).__name__)
  if isinstance(source, Image.Image):
    return source.convert("RGB")
  if isinstance(source, np.ndarray):
    grey = source.ndim == 2 or (source.ndim == 3 and source.shape[-1] == 1)
    if source.dtype != np.uint8 or not (grey or (source.ndim == 3 and source.shape[-1] in (3, 4))):
      raise ValueError(f"image {label}: array of shape {source.shape} dtype {source.dtype}; "
                       "expected uint8 HW (grey) or HWC with 1, 3 or 4 channels")
    return Image.fromarray(source.reshape(source.shape[:2]) if grey else source).convert("RGB")
  try:
    if isinstance(source, (bytes, bytearray)):
      img = Image.open(io.BytesIO(source))
    else:
      from etils import epath
      img = Image.open(io.BytesIO(epath.Path(source).read_bytes()))
    img.load()
  except FileNotFoundError as e:
    raise ValueError(f"image {label}: file not found") from e
  except (UnidentifiedImageError, OSError, SyntaxError) as e:
    raise ValueError(f"image {label}: not a readable image file ({e})") from e
  return img.convert("RGB")


def _pad_to_square(img: Image.Image) -> Image.Image:
  w, h = img.size
  if w == h:
    return img
  side = max(w, h)
  background = tuple(int(m * 255) for m in CLIP_MEAN)
  out = Image.new("RGB", (side, side), background)
  out.paste(img, ((side - w) // 2, (side - h) // 2))
  return out


def _resize_shortest_side(img: Image.Image, size: int) -> Image.Image:
  w, h = img.size
  short, long = (w, h) if w <= h else (h, w)
  new_short, new_long = size, int(size * long / short)
  new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
  return img.resize((new_w, new_h), resample=Image.Resampling.BICUBIC)


def _center_crop(arr: np.ndarray, size: int) -> np.ndarray:
  h, w = arr.shape[:2]
  top, left = (h - size) // 2, (w - size) // 2
  return arr[top:top + size, left:left + size]


def preprocess_image(image: ImageLike, size: int = 336, mode: str = "pad") -> np.ndarray:
  """One image -> float32 [size, size, 3], CLIP-normalised (NHWC for the vision tower)."""
  if mode not in MODES:
    raise ValueError(f"preprocessing mode {mode!r}; expected one of {MODES}")
  img = load_image(image)
  if mode == "pad":
    img = _pad_to_square(img)
  arr = np.asarray(_resize_shortest_side(img, size))
  arr = _center_crop(arr, size)
  x = (arr.astype(np.float64) * (1.0 / 255.0)).astype(np.float32)
  return (x - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
