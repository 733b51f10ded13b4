"""LLaVA-1.5 image preprocessing on the host: decode, pad-to-square or crop, resize, normalise.

Two named modes (BLINK_SPEC §1):
- "pad" (default): the original LLaVA-1.5 `image_aspect_ratio="pad"` used for the published numbers:
  pad to square with the CLIP mean colour, then resize to the model's size. Equals HF
  `LlavaImageProcessor(do_pad=True)`.
- "crop": what the `llava-hf` checkpoints' `CLIPImageProcessor` does: resize the shortest side, then
  centre-crop. Equals HF `CLIPImageProcessor` with the checkpoint's settings.

Decoding: every PIL mode becomes RGB by its real range (16-bit images are scaled, not clipped, to 8
bits; RGBA, CMYK, palette and grey as PIL converts them, as LLaVA does). An image over `max_pixels` is
decoded at a reduced scale where the format allows it (JPEG's DCT scaling), otherwise refused.
Anything that makes an input unusable raises `ImageError` naming it, which jobs count as a skip;
a bad *setting* (an unknown mode) is a plain ValueError, which they do not.
"""

from __future__ import annotations

import io
import threading
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MODES = ("pad", "crop")
# PIL's own decompression-bomb limit; 8K (33 MP) images pass, a 14000 x 14000 PNG does not.
DEFAULT_MAX_PIXELS = 89_478_485

ImageLike = Union[Image.Image, np.ndarray, bytes, str]

# Image.open checks PIL's global bomb limit before we can look at the size; we apply our own limit
# (after a reduced-scale decode where possible), so the global one is lifted around open() only.
_OPEN_LOCK = threading.Lock()


class ImageError(ValueError):
  """An input image that cannot be used (missing, undecodable, too large); jobs skip and count it."""


def check_mode(mode: str) -> str:
  if mode not in MODES:
    raise ValueError(f"preprocessing mode {mode!r}; expected one of {MODES}")
  return mode


def _open(data: bytes) -> Image.Image:
  with _OPEN_LOCK:
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
      return Image.open(io.BytesIO(data))
    finally:
      Image.MAX_IMAGE_PIXELS = limit


def _scaled_uint8(arr: np.ndarray, top: float) -> np.ndarray:
  """Values in [0, top] -> uint8 [0, 255], rounded (the 8-bit view of a wider range)."""
  return np.round(np.clip(arr.astype(np.float64), 0, top) * (255.0 / top)).astype(np.uint8)


def _to_rgb(img: Image.Image) -> Image.Image:
  """RGB by the image's real range: 16-bit and 32-bit integer grey scaled to 8 bits, float grey
  read as [0, 1] (or [0, 255] when it exceeds 1); every other mode as PIL converts it."""
  if img.mode == "RGB":
    return img
  if img.mode.startswith("I;16") or img.mode == "I":
    arr = np.asarray(img)
    return Image.fromarray(_scaled_uint8(arr, max(65535.0, float(arr.max(initial=0))))).convert("RGB")
  if img.mode == "F":
    arr = np.asarray(img)
    return Image.fromarray(_scaled_uint8(arr, 1.0 if arr.max(initial=0) <= 1.0 else 255.0)).convert("RGB")
  return img.convert("RGB")


def _array_image(source: np.ndarray, label: str) -> Image.Image:
  grey = source.ndim == 2 or (source.ndim == 3 and source.shape[-1] == 1)
  if source.dtype not in (np.uint8, np.uint16) or not (grey or (source.ndim == 3 and source.shape[-1] in (3, 4))):
    raise ImageError(f"image {label}: array of shape {source.shape} dtype {source.dtype}; "
                     "expected uint8 or uint16 HW (grey) or HWC with 1, 3 or 4 channels")
  if source.dtype == np.uint16:
    source = _scaled_uint8(source, 65535.0)
  return Image.fromarray(source.reshape(source.shape[:2]) if grey else source).convert("RGB")


def load_image(source: ImageLike, name: str | None = None, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               min_side: int = 336) -> Image.Image:
  """Decodes a path, encoded bytes, an HWC uint8/uint16 array or a PIL image into an RGB PIL image.

  An encoded image of more than `max_pixels` is decoded at the smallest reduced scale that keeps its
  shorter side >= `min_side` where its format allows (JPEG), and refused otherwise (None: no limit).
  Raises ImageError naming the input when it cannot be used.
  """
  label = name or (source if isinstance(source, str) else type(source).__name__)
  if isinstance(source, Image.Image):
    return _to_rgb(source)
  if isinstance(source, np.ndarray):
    return _array_image(source, label)
  try:
    if isinstance(source, (bytes, bytearray)):
      data = bytes(source)
    else:
      from etils import epath
      data = epath.Path(source).read_bytes()
  except FileNotFoundError as e:
    raise ImageError(f"image {label}: file not found") from e
  except (OSError, ValueError) as e:
    raise ImageError(f"image {label}: cannot be read ({e})") from e
  try:
    img = _open(data)
    w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
      if img.format == "JPEG":
        scale = min(w, h) / min_side
        img.draft("RGB", (max(1, int(w / scale)), max(1, int(h / scale))))
      if img.size[0] * img.size[1] > max_pixels:
        raise ImageError(f"image {label}: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} "
                         f"(raise it with the job's max_image_pixels setting if this is intended)")
    img.load()
  except ImageError:
    raise
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise ImageError(f"image {label}: not a readable image file ({e})") from e
  return _to_rgb(img)


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


def preprocess_image(image: ImageLike, size: int = 336, mode: str = "pad", *, name: str | None = None,
                     max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
  """One image -> float32 [size, size, 3], CLIP-normalised (NHWC for the vision tower)."""
  check_mode(mode)
  img = load_image(image, name, max_pixels=max_pixels, min_side=size)
  if mode == "pad":
    img = _pad_to_square(img)
  arr = np.asarray(_resize_shortest_side(img, size))
  arr = _center_crop(arr, size)
  x = (arr.astype(np.float64) * (1.0 / 255.0)).astype(np.float32)
  return (x - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)


def square_view(image: ImageLike, mode: str = "pad") -> Image.Image:
  """The square the vision tower sees, at the image's own resolution: padded to its longer side
  (mode "pad") or its centred square of the shorter side ("crop"), un-normalised."""
  img = load_image(image)
  w, h = img.size
  if mode == "pad":
    side = max(w, h)
    sq = Image.new("RGB", (side, side), tuple(int(m * 255) for m in CLIP_MEAN))
    sq.paste(img, ((side - w) // 2, (side - h) // 2))
    return sq
  side = min(w, h)
  return img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))


def model_view(image: ImageLike, size: int, mode: str = "pad") -> Image.Image:
  """The image as the vision tower sees it (padded or cropped square), un-normalised."""
  sq = square_view(image, mode)
  return sq.resize((size, size), Image.Resampling.BICUBIC)
