"""Qwen2.5-VL: its window-attention vision encoder and patch merger (qwen_vision.py) -> the Qwen2
decoder (llama.py with q/k/v biases and multimodal RoPE), the merged visual tokens written at the
`<|image_pad|>` positions of the prompt.

Multimodal RoPE positions follow transformers' `get_rope_index`: text tokens count up on all three
axes; an image's merged tokens sit at (start, start + row, start + column) with `start` the position
its first token would have as text; the text after it continues from start + max(rows, columns). So
a token after one image has position index - N + max(rows, columns), N the image's token count: its
`rope_delta` is max(rows, columns) - N (per image, for prompts of several images of one grid).
"""

from __future__ import annotations

import jax.numpy as jnp

from blink_jax.models.llama import Llama
from blink_jax.models.qwen2_5_vl_config import Qwen2_5_VLConfig
from blink_jax.models.qwen_vision import QwenVisionTower
from blink_jax.models.vision_language import VisionLanguageModel


def merged_grid(cfg: Qwen2_5_VLConfig, pixels_shape) -> tuple[int, int]:
  """(rows, columns) of merged visual tokens an image of pixels_shape [..., H, W, C] gives."""
  unit = cfg.vision.unit
  return pixels_shape[-3] // unit, pixels_shape[-2] // unit


def mrope_positions(ids, image_token_id: int, grid: tuple[int, int]):
  """[B, T, 3] (temporal, height, width) positions of prompts ids [B, T] holding images of `grid`
  merged tokens each (rows x columns, contiguous, in raster order; several images, as attention-
  guided zoom's image and crop, are separate runs). A token after j images has position index -
  j (N - max(rows, columns)); image j's tokens sit at (start, start + row, start + column), start the
  position its first token would have as text. A prompt without image tokens counts up on all axes."""
  rows, cols = grid
  n = rows * cols
  is_image = ids == image_token_id
  before = jnp.cumsum(is_image, axis=1) - is_image       # image tokens before each token
  index = jnp.arange(ids.shape[1])[None]
  done = before // n                                      # images complete before a text token
  text = index - done * (n - max(rows, cols))
  k = before % n                                          # an image token's place in its image
  start = index - k - done * (n - max(rows, cols))
  image = jnp.stack([start, start + k // cols, start + k % cols], axis=-1)
  return jnp.where(is_image[..., None], image, text[..., None]).astype(jnp.int32)


class Qwen2_5_VL(VisionLanguageModel):
  cfg: Qwen2_5_VLConfig

  def setup(self):
    n = self.cfg.numerics
    self.visual = QwenVisionTower(self.cfg.vision, n)
    self.language_model = Llama(self.cfg.text, n)

  def encode_images(self, pixels):
    """pixels [B, H, W, 3] -> merged visual tokens [B, H W / 784, D] in raster order."""
    return self.visual(pixels)

  def init_args(self):
    """Small inputs of the right kinds to initialise (or eval_shape) the params with."""
    side = 2 * self.cfg.vision.unit
    return (jnp.zeros((1, 8), jnp.int32), jnp.zeros((1, side, side, self.cfg.vision.num_channels)),
            jnp.zeros((1, 8, 3), jnp.int32), jnp.ones((1, 8), bool))

  def visual_grid(self, pixels_shape):
    return merged_grid(self.cfg, pixels_shape)

  def prompt_positions(self, ids, pixels):
    return mrope_positions(ids, self.cfg.image_token_id, self.visual_grid(pixels.shape))

  def rope_offset(self, ids, pixels):
    """(max(rows, columns) - rows x columns) per image of the prompt (transformers' rope_deltas)."""
    rows, cols = self.visual_grid(pixels.shape)
    images = (ids == self.cfg.image_token_id).sum(axis=1) // (rows * cols)
    return (images * (max(rows, cols) - rows * cols)).astype(jnp.int32)
