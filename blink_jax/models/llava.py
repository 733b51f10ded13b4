"""LLaVA-1.5: CLIP vision tower -> mlp2x_gelu projector -> Llama, with image features merged at the
`<image>` token positions of the prompt."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from blink_jax.models.clip_vit import ClipVisionTower, activation
from blink_jax.models.linear import Linear
from blink_jax.models.llama import Llama
from blink_jax.models.llava_config import LlavaConfig
from blink_jax.models.vision_language import VisionLanguageModel


class Projector(nn.Module):
  """mlp2x_gelu: Linear -> GELU -> Linear into the LLM width."""
  out_features: int
  act: str
  use_bias: bool
  dtype: jnp.dtype
  param_dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    def dense(name, in_axis, out_axis):
      return Linear((self.out_features,), (in_axis, out_axis), use_bias=self.use_bias,
                    dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    x = activation(self.act)(dense("linear_1", None, "mlp")(x))
    return dense("linear_2", "mlp", "embed")(x)


class Llava(VisionLanguageModel):
  cfg: LlavaConfig

  def setup(self):
    c, n = self.cfg, self.cfg.numerics
    self.vision_tower = ClipVisionTower(c.vision, c.num_vision_layers_used, n)
    self.multi_modal_projector = Projector(c.text.hidden_size, c.projector_hidden_act, c.projector_bias, n.dtype,
                                           n.param_dtype)
    self.language_model = Llama(c.text, n)

  def encode_images(self, pixels):
    """pixels [B, H, W, 3] -> visual tokens in the LLM width [B, N, D]."""
    return self.multi_modal_projector(self.vision_tower(pixels))

  def init_args(self):
    """Small inputs of the right kinds to initialise (or eval_shape) the params with."""
    v = self.cfg.vision
    return (jnp.zeros((1, 8), jnp.int32), jnp.zeros((1, v.image_size, v.image_size, v.num_channels)),
            jnp.zeros((1, 8), jnp.int32), jnp.ones((1, 8), bool))

  def visual_grid(self, pixels_shape):
    return self.cfg.vision.grid, self.cfg.vision.grid

  def prompt_positions(self, ids, pixels):
    b, t = ids.shape
    return jnp.broadcast_to(jnp.arange(t), (b, t))
