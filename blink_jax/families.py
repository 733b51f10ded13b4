"""The base-model families blink-jax runs and the one switch between them: a checkpoint's config.json
`model_type` ("llava", "qwen2_5_vl"; a random preset's `family`) picks the Flax model, its config
reader and loader, its image preprocessing and its prompt template.

Preprocessing is named per family; "auto" is the family's default:
- llava: "pad" (default; LLaVA-1.5's pad-to-square, used for the published numbers) | "crop".
- qwen2_5_vl: "buckets" (default; the fixed grid buckets of data/qwen_preprocessing.py, one compiled
  program per bucket) | "native" (transformers' own smart_resize size: one program per image size)
  | a list of grid buckets "ROWSxCOLS,..." in merged tokens (28 px), e.g. "24x24,24x32,32x24" (or
  ";"-separated, where commas separate something else: lmms-eval's model_args).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
from PIL import Image

from blink_jax.convert import hf_llava, hf_qwen2_5_vl
from blink_jax.data import image_preprocessing, qwen_preprocessing
from blink_jax.data.image_preprocessing import model_view, square_view
from blink_jax.data.prompt import (IMAGE_PLACEHOLDER, QWEN_IMAGE_BLOCK, QWEN_IMAGE_PLACEHOLDER, qwen_chat_answer,
                                   qwen_chat_prompt, vicuna_v1_answer, vicuna_v1_prompt)
from blink_jax.models import llava_config, model_config, qwen2_5_vl_config
from blink_jax.models.llava import Llava
from blink_jax.models.qwen2_5_vl import Qwen2_5_VL


@dataclasses.dataclass(frozen=True)
class Family:
  """What differs between base-model families; LlavaFamily and QwenFamily fill in the methods."""
  name: str                                   # config.json's model_type
  model: type                                 # the Flax module (a VisionLanguageModel)
  config: type                                # its config dataclass
  read_config: Callable[..., Any]             # (ckpt_dir, **runtime) -> its config (from config.json and friends)
  load: Callable[..., tuple[Any, Any]]        # (ckpt_dir, partitioner=, dtype=, ...) -> (config, params)
  abstract_params: Callable[[Any], Any]       # config -> boxed param shapes
  prompt: Callable[[str], str]                # question -> the templated prompt with one image placeholder
  answer: Callable[[str], str]                # answer -> the assistant's reply as the model was trained to end it
  reply_prefix: str                           # what the reply starts with after the prompt (no end of turn)
  image_placeholder: str
  preprocessings: tuple[str, ...]             # named modes; the first is the default

  def preprocessing(self, name: str) -> str:
    """`name` checked for this family ("auto": its default)."""
    if name in ("auto", ""):
      return self.preprocessings[0]
    if name in self.preprocessings:
      return name
    raise ValueError(f"preprocessing mode {name!r} is not one of {self.name}'s: {self.preprocessings}")

  def training_preprocessing(self, name: str) -> str:
    """The preprocessing TokenSR training uses for `name`: one that gives every image the same shape
    (the train step is one compiled program)."""
    return self.preprocessing(name)

  def preprocess(self, image, cfg, preprocessing: str, **kw) -> np.ndarray:
    """One image -> float32 [H, W, 3] pixels for this family's vision encoder (kw: load_image's)."""
    raise NotImplementedError

  def resized_shape(self, height: int, width: int, cfg, preprocessing: str) -> tuple[int, int]:
    """(H, W) pixels `preprocess` gives an image of height x width."""
    raise NotImplementedError

  def largest_image(self, cfg, preprocessing: str) -> tuple[int, int]:
    """(H, W) of the largest image `preprocess` gives (what the aot command and training size programs for)."""
    raise NotImplementedError

  def view(self, image, cfg, preprocessing: str) -> Image.Image:
    """The image as the vision encoder sees it (resized, padded or cropped), un-normalised."""
    img = image_preprocessing.load_image(image)
    h, w = self.resized_shape(img.height, img.width, cfg, preprocessing)
    return img.resize((w, h), Image.Resampling.BICUBIC)

  def fixed_grid(self, cfg) -> tuple[int, int] | None:
    """The visual grid every image gets (LLaVA's), or None when it follows the image (Qwen2.5-VL)."""
    return None

  def token_position(self, x: float, y: float, height: int, width: int, cfg, preprocessing: str) -> tuple[float, float]:
    """Where pixel (x, y) of a height x width image lands on the visual grid, (row, column) in tokens,
    fractional (outside the grid where preprocessing cuts the pixel off: LLaVA's centre crop)."""
    rows_px, cols_px = self.resized_shape(height, width, cfg, preprocessing)
    unit = cfg.vision.unit
    return y * rows_px / height / unit, x * cols_px / width / unit

  def token_at(self, x: float, y: float, height: int, width: int, cfg, preprocessing: str) -> tuple[int, int] | None:
    """(row, column) of the visual token that sees pixel (x, y) of a height x width image, or None
    when preprocessing cuts it off (LLaVA's centre crop)."""
    row, col = self.token_position(x, y, height, width, cfg, preprocessing)
    return int(row), int(col)

  def region_at(self, box: Sequence[float] | None, height: int, width: int, cfg, preprocessing: str,
                columns: int, region_size: int) -> int:
    """The region (row-major, region_size x region_size tokens of a grid `columns` tokens wide) that
    sees the centre of `box` = [x0, y0, x1, y1] in a height x width image's pixels: Blink's oracle
    region; -1 without a box or when preprocessing cuts its centre off."""
    if not box:
      return -1
    x0, y0, x1, y1 = box
    token = self.token_at((x0 + x1) / 2, (y0 + y1) / 2, height, width, cfg, preprocessing)
    if token is None:
      return -1
    return (token[0] // region_size) * (columns // region_size) + token[1] // region_size

  def image_tokens(self, cfg, pixels_shape: Sequence[int]) -> int:
    """How many visual tokens an image of pixels_shape [..., H, W, C] becomes."""
    raise NotImplementedError

  # Attention-guided zoom (inference/zoom.py): the crop is a second image of the batch's shape.
  image_block: ClassVar[str] = ""   # what stands for one image in a templated prompt

  def two_images(self, prompt: str) -> str:
    """A templated prompt of one image made one of that image followed by a second."""
    if prompt.count(self.image_block) != 1:
      raise ValueError(f"a prompt for a second image holds {self.image_block!r} once: {prompt[:80]!r}")
    return prompt.replace(self.image_block, self.image_block * 2)

  def source_view(self, image, preprocessing: str) -> Image.Image:
    """The image in the frame the visual grid covers, at the image's own resolution."""
    return image_preprocessing.load_image(image)   # Qwen2.5-VL: the whole image, resized to its grid

  def preprocess_crop(self, crop: Image.Image, cfg, preprocessing: str, pixels_shape: Sequence[int]) -> np.ndarray:
    """A crop -> pixels of the batch's image shape pixels_shape [..., H, W, 3]."""
    return self.preprocess(crop, cfg, preprocessing)


class LlavaFamily(Family):
  """LLaVA-1.5: one fixed image size (the CLIP tower's), padded to square or centre-cropped."""
  image_block = IMAGE_PLACEHOLDER

  def preprocess(self, image, cfg, preprocessing: str, **kw) -> np.ndarray:
    return image_preprocessing.preprocess_image(image, cfg.vision.image_size, self.preprocessing(preprocessing), **kw)

  def resized_shape(self, height: int, width: int, cfg, preprocessing: str) -> tuple[int, int]:
    return cfg.vision.image_size, cfg.vision.image_size

  def largest_image(self, cfg, preprocessing: str) -> tuple[int, int]:
    return cfg.vision.image_size, cfg.vision.image_size

  def view(self, image, cfg, preprocessing: str) -> Image.Image:
    return model_view(image, cfg.vision.image_size, self.preprocessing(preprocessing))

  def fixed_grid(self, cfg) -> tuple[int, int] | None:
    return cfg.vision.grid, cfg.vision.grid

  def token_position(self, x: float, y: float, height: int, width: int, cfg, preprocessing: str) -> tuple[float, float]:
    """Pad: the image centred on a square of its longer side; crop: the centred square of its shorter."""
    side = max(height, width) if self.preprocessing(preprocessing) == "pad" else min(height, width)
    scale = cfg.vision.image_size / side / cfg.vision.patch_size
    return (y + (side - height) / 2) * scale, (x + (side - width) / 2) * scale

  def token_at(self, x: float, y: float, height: int, width: int, cfg, preprocessing: str) -> tuple[int, int] | None:
    row, col = self.token_position(x, y, height, width, cfg, preprocessing)
    grid = cfg.vision.image_size / cfg.vision.patch_size
    return (int(row), int(col)) if 0 <= row < grid and 0 <= col < grid else None

  def image_tokens(self, cfg, pixels_shape: Sequence[int]) -> int:
    return cfg.num_image_tokens

  def source_view(self, image, preprocessing: str) -> Image.Image:
    return square_view(image_preprocessing.load_image(image), self.preprocessing(preprocessing))


class QwenFamily(Family):
  """Qwen2.5-VL: the image's own size resized to a grid bucket (or to transformers' size, "native")."""
  image_block = QWEN_IMAGE_BLOCK

  def preprocessing(self, name: str) -> str:
    if name not in ("auto", "") and name not in self.preprocessings and _grid_list(name):
      return name
    try:
      return super().preprocessing(name)
    except ValueError as e:
      raise ValueError(f"{e} or a grid-bucket list 'ROWSxCOLS,...'") from None

  def training_preprocessing(self, name: str) -> str:
    """One grid bucket: the given one, or with "auto" the first default bucket (32x32)."""
    if name in ("auto", ""):
      rows, cols = qwen_preprocessing.DEFAULT_GRID_BUCKETS[0]
      return f"{rows}x{cols}"
    grids = self._grids(self.preprocessing(name))
    if isinstance(grids, str) or len(grids) != 1:
      raise ValueError(f"model.preprocessing={name!r}: TokenSR training runs one compiled step, so every image "
                       "takes one grid bucket; name one, e.g. '32x32' (or 'auto': 32x32). The trained module "
                       "works at every bucket (it acts on p x p regions of tokens)")
    return name

  def _grids(self, mode: str):
    return {"buckets": qwen_preprocessing.DEFAULT_GRID_BUCKETS, "native": "native"}.get(mode) or _grid_list(mode)

  def preprocess(self, image, cfg, preprocessing: str, **kw) -> np.ndarray:
    """`native` resizes within the checkpoint's min/max pixels (cfg: its preprocessor_config.json's)."""
    return qwen_preprocessing.preprocess_qwen_image(image, self._grids(self.preprocessing(preprocessing)),
                                                    min_resize_pixels=cfg.min_pixels, max_resize_pixels=cfg.max_pixels,
                                                    **kw)

  def resized_shape(self, height: int, width: int, cfg, preprocessing: str) -> tuple[int, int]:
    rows, cols = qwen_preprocessing.image_grid(height, width, self._grids(self.preprocessing(preprocessing)),
                                               cfg.min_pixels, cfg.max_pixels)
    return rows * cfg.vision.unit, cols * cfg.vision.unit

  def largest_image(self, cfg, preprocessing: str) -> tuple[int, int]:
    grids = self._grids(self.preprocessing(preprocessing))
    if isinstance(grids, str):
      raise ValueError("preprocessing 'native' has no largest image (one shape per image size); size the "
                       "programs for grid buckets (preprocessing 'buckets' or a list)")
    rows, cols = max(grids, key=lambda g: g[0] * g[1])
    return rows * cfg.vision.unit, cols * cfg.vision.unit

  def image_tokens(self, cfg, pixels_shape: Sequence[int]) -> int:
    return (pixels_shape[-3] // cfg.vision.unit) * (pixels_shape[-2] // cfg.vision.unit)

  def preprocess_crop(self, crop: Image.Image, cfg, preprocessing: str, pixels_shape: Sequence[int]) -> np.ndarray:
    """Resized to the batch's grid bucket, whatever the crop's own aspect."""
    rows, cols = pixels_shape[-3] // cfg.vision.unit, pixels_shape[-2] // cfg.vision.unit
    return self.preprocess(crop, cfg, f"{rows}x{cols}")


def _grid_list(name: str) -> tuple[tuple[int, int], ...] | None:
  try:
    grids = tuple(tuple(int(x) for x in item.lower().split("x")) for item in re.split("[,;]", name))
  except ValueError:
    return None
  if not grids or any(len(g) != 2 or min(g) < 1 for g in grids):
    return None
  return grids


FAMILIES = {
    "llava": LlavaFamily("llava", Llava, llava_config.LlavaConfig, llava_config.read_hf_config,
                         hf_llava.load_hf_llava, hf_llava.abstract_params, vicuna_v1_prompt, vicuna_v1_answer,
                         " ", IMAGE_PLACEHOLDER, image_preprocessing.MODES),
    "qwen2_5_vl": QwenFamily("qwen2_5_vl", Qwen2_5_VL, qwen2_5_vl_config.Qwen2_5_VLConfig,
                             hf_qwen2_5_vl.read_hf_config, hf_qwen2_5_vl.load_hf_qwen2_5_vl,
                             hf_qwen2_5_vl.abstract_params, qwen_chat_prompt, qwen_chat_answer, "",
                             QWEN_IMAGE_PLACEHOLDER, ("buckets", "native")),
}


def get(name: str) -> Family:
  if name not in FAMILIES:
    raise ValueError(f"model family {name!r} is not supported; expected one of {sorted(FAMILIES)}")
  return FAMILIES[name]


def of_checkpoint(ckpt_dir) -> Family:
  """The family of a Hugging Face checkpoint directory, from its config.json's model_type."""
  hf, path = model_config.config_json(ckpt_dir)
  model_type = hf.get("model_type")
  if model_type not in FAMILIES:
    raise ValueError(f"{path}: model_type={model_type!r}; blink-jax runs {sorted(FAMILIES)} checkpoints")
  return FAMILIES[model_type]


def read_hf_config(ckpt_dir, **runtime: Any):
  """The model config (its family's) of a checkpoint directory's config.json; `runtime` as RuntimeFields."""
  return of_checkpoint(ckpt_dir).read_config(ckpt_dir, **runtime)


def of_config(cfg) -> Family:
  """The family of a model config (LlavaConfig or Qwen2_5_VLConfig)."""
  return next(f for f in FAMILIES.values() if isinstance(cfg, f.config))
