"""Qwen2.5-VL: its window-attention vision encoder and patch merger (qwen_vision.py) -> the Qwen2
decoder (llama.py with q/k/v biases and multimodal RoPE), the merged visual tokens written at the
`<|image_pad|>` positions of the prompt.

Multimodal RoPE positions follow transformers' `get_rope_index` for a prompt with one image: text
tokens count up on all three axes; the image's merged tokens sit at (start, start + row, start +
column) with `start` the index of its first token; the text after it continues from start +
max(rows, columns). So a token after the image has position index - N + max(rows, columns), N the
image's token count: its `rope_delta` is max(rows, columns) - N.
"""

from __future__ import annotations

import jax.numpy as jnp

from blink_jax.models.llama import Llama
from blink_jax.models.qwen2_5_vl_config import Qwen2_5_VLConfig
from blink_jax.models.qwen_vision import QwenVisionTower
from blink_jax.models.vision_language import VisionLanguageModel


def merged_grid(cfg: Qwen2_5_VLConfig, pixels_shape) -> tuple[int, int]:
  """(rows, columns) of merged visual tokens an image of pixels_shape [B, H, W, C] gives."""
  unit = cfg.vision.unit
  return pixels_shape[1] // unit, pixels_shape[2] // unit


def mrope_positions(ids, image_token_id: int, grid: tuple[int, int]):
  """[B, T, 3] (temporal, height, width) positions of prompts ids [B, T] holding one image of `grid`
  merged tokens (rows x columns, contiguous, in raster order); a prompt without image tokens counts
  up on all three axes."""
  rows, cols = grid
  n = rows * cols
  t = ids.shape[1]
  is_image = ids == image_token_id
  has_image = is_image.any(axis=1, keepdims=True)
  start = jnp.argmax(is_image, axis=1)[:, None]
  index = jnp.arange(t)[None]
  text = jnp.where(has_image & (index >= start + n), index - n + max(rows, cols), index)
  k = jnp.cumsum(is_image, axis=1) - 1
  image = jnp.stack([start + 0 * k, start + k // cols, start + k % cols], axis=-1)
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
    """max(rows, columns) - rows x columns for a prompt with the image (transformers' rope_deltas)."""
    rows, cols = self.visual_grid(pixels.shape)
    has_image = (ids == self.cfg.image_token_id).any(axis=1)
    return jnp.where(has_image, max(rows, cols) - rows * cols, 0).astype(jnp.int32)
