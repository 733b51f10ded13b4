"""LLaVA-1.5: CLIP vision tower -> mlp2x_gelu projector -> Llama, with image features merged at the
`<image>` token positions of the prompt."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from blink_jax.models.clip_vit import ClipVisionTower, activation
from blink_jax.models.linear import Linear
from blink_jax.models.layer_stack import detached, layer_at
from blink_jax.models.llama import DecoderLayer, KVCache, LayerInputs, Llama
from blink_jax.models.llava_config import LlavaConfig


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


def merge_image_features(embeds: jax.Array, ids: jax.Array, image_features: jax.Array,
                         image_token_id: int) -> jax.Array:
  """Writes image_features [B, N, D] into embeds [B, T, D] at the N positions where ids == image token.

  The k-th image token of an example takes feature row k; the processor guarantees N such tokens.
  """
  is_image = ids == image_token_id
  row = jnp.clip(jnp.cumsum(is_image, axis=1) - 1, 0, image_features.shape[1] - 1)
  gathered = jnp.take_along_axis(image_features, row[..., None], axis=1)
  return jnp.where(is_image[..., None], gathered.astype(embeds.dtype), embeds)


def decoder_layer(cfg: LlavaConfig) -> DecoderLayer:
  """A parentless decoder layer of this model, to apply one layer's params by hand (Blink's scanning
  layers, saliency queries)."""
  return detached(DecoderLayer, cfg.text, cfg.numerics)


def text_layer_params(params: Any, i: Any) -> Any:
  """Decoder layer i's params from the whole model's params (i may be traced)."""
  return layer_at(params["language_model"]["layers"]["layers"], i)


class Llava(nn.Module):
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

  def embed(self, ids, pixels):
    """Token embeddings with the image's visual tokens in place of the `<image>` tokens."""
    safe_ids = jnp.where(ids == self.cfg.image_token_id, 0, ids)
    embeds = self.language_model.embed(safe_ids)
    return merge_image_features(embeds, ids, self.encode_images(pixels), self.cfg.image_token_id)

  def run_layers(self, h, inputs: LayerInputs, key_valid, cache=None, *, start=0, stop=None, kv_room=0):
    return self.language_model.run_layers(h, inputs, key_valid, cache, start=start, stop=stop, kv_room=kv_room)

  def head(self, h):
    return self.language_model.head(h)

  def __call__(self, ids, pixels, positions, key_valid):
    """Logits [B, T, V] of a prompt: ids [B, T], pixels [B, H, W, 3], positions [B, T],
    key_valid [B, T] (False at padding)."""
    h = self.embed(ids, pixels)
    inputs = LayerInputs(positions, None)
    layers_valid = jnp.broadcast_to(key_valid, (self.cfg.text.num_layers,) + key_valid.shape)
    h, _ = self.run_layers(h, inputs, layers_valid)
    return self.head(h)

  def prefill(self, ids, pixels, lengths, room=0):
    """Prompt pass for generation; prompts are right-padded, `lengths` [B] their true lengths.

    Returns (next-token logits [B, V], stacked KVCache [L, B, K, T + room, D], key_valid [L, B, T + room])
    with `room` dead positions for the tokens generation writes.
    """
    b, t = ids.shape
    h = self.embed(ids, pixels)
    positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    key_valid = jnp.arange(t)[None, :] < lengths[:, None]
    layers_valid = jnp.broadcast_to(key_valid, (self.cfg.text.num_layers, b, t))
    h, kv = self.run_layers(h, LayerInputs(positions, None), layers_valid, kv_room=room)
    last = jnp.take_along_axis(h, (lengths - 1)[:, None, None], axis=1)
    return self.head(last)[:, 0], kv, jnp.pad(layers_valid, [(0, 0), (0, 0), (0, room)])

  def decode(self, tokens, positions, cache: KVCache, key_valid, cache_index):
    """One token per example: tokens/positions [B], written at sequence index `cache_index`.

    Returns (logits [B, V], the cache with every layer's new key and value at `cache_index`: one
    in-place update of the stacked cache; the layers only read it). key_valid [L, B, S] is what the
    token sees in the cache before its own index.
    """
    h = self.language_model.embed(tokens[:, None])
    inputs = LayerInputs(positions[:, None], cache_index)
    h, new = self.run_layers(h, inputs, key_valid, cache)
    cache = KVCache(*(jax.lax.dynamic_update_slice_in_dim(c, n, cache_index, 3) for c, n in zip(cache, new)))
    return self.head(h)[:, 0], cache
