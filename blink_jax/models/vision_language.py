"""What every vision-language model here shares: the vision encoder's tokens written into the
decoder's embeddings at the image-token positions, the Llama-family decoder run over any layer
range, its head, and the prompt / decoding passes built on them. Llava and Qwen2_5_VL subclass it
with their vision encoder (`encode_images`), their submodule `language_model` (a Llama) and their
RoPE positions (`prompt_positions`)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from blink_jax.models.layer_stack import detached, layer_params
from blink_jax.models.llama import DecoderLayer, KVCache, LayerInputs, decoding_layout


def decoder_layer(cfg) -> DecoderLayer:
  """A parentless decoder layer of a model (cfg: its config), to apply one layer's params by hand
  (Blink's scanning layers, saliency queries)."""
  return detached(DecoderLayer, cfg.text, cfg.numerics)


def text_layer_params(params: Any, i: Any) -> Any:
  """Decoder layer i's params from the whole model's params, in either layout (layer_stack.py; i may
  be traced when stacked)."""
  return layer_params(params["language_model"]["layers"], i)


def abstract_params(model: "VisionLanguageModel") -> Any:
  """Boxed (logically annotated) param shapes of a whole model, without allocating anything."""
  return jax.eval_shape(model.init, jax.random.key(0), *model.init_args())["params"]


def merge_image_features(embeds: jax.Array, ids: jax.Array, image_features: jax.Array,
                         image_token_id: int) -> jax.Array:
  """Writes image_features [B, N, D] into embeds [B, T, D] at the N positions where ids == image token.

  The k-th image token of an example takes feature row k; the processor guarantees N such tokens.
  """
  is_image = ids == image_token_id
  row = jnp.clip(jnp.cumsum(is_image, axis=1) - 1, 0, image_features.shape[1] - 1)
  gathered = jnp.take_along_axis(image_features, row[..., None], axis=1)
  return jnp.where(is_image[..., None], gathered.astype(embeds.dtype), embeds)


class VisionLanguageModel(nn.Module):
  """The shared passes. A subclass has a `cfg` (image_token_id, text: TextConfig) and defines, in
  setup, `language_model` (a Llama); `encode_images(pixels)` -> visual tokens [B, N, D] in the
  decoder's width; `prompt_positions(ids, pixels)` -> RoPE positions [B, T] (or [B, T, 3] with
  multimodal RoPE) of a prompt's tokens; and, plain methods (no params), `visual_grid(pixels_shape)`
  -> (rows, columns) of the visual tokens an image of that shape gives and `init_args()` -> inputs
  to initialise the params with (abstract_params)."""

  def embed(self, ids, pixels):
    """Token embeddings with the image's visual tokens in place of the image tokens. pixels
    [B, k, H, W, 3] (k images of one shape an example: attention-guided zoom's image and crop) fill
    the image tokens with the first image's tokens, then the second's, and so on; pixels None: text
    tokens only (the ids hold no image token)."""
    safe_ids = jnp.where(ids == self.cfg.image_token_id, 0, ids)
    embeds = self.language_model.embed(safe_ids)
    if pixels is None:
      return embeds
    if pixels.ndim == 5:
      b, k = pixels.shape[:2]
      features = self.encode_images(pixels.reshape(b * k, *pixels.shape[2:]))
      features = features.reshape(b, k * features.shape[1], features.shape[2])
    else:
      features = self.encode_images(pixels)
    return merge_image_features(embeds, ids, features, self.cfg.image_token_id)

  def rope_offset(self, ids, pixels):
    """[B] int32: how far the RoPE position of the text after the prompt runs from its sequence index
    (a generated token's position is length + offset + t); 0 with 1-D RoPE."""
    return jnp.zeros(ids.shape[:1], jnp.int32)

  def run_layers(self, h, inputs: LayerInputs, key_valid, cache=None, *, start=0, stop=None, kv_room=0):
    return self.language_model.run_layers(h, inputs, key_valid, cache, start=start, stop=stop, kv_room=kv_room)

  def head(self, h):
    return self.language_model.head(h)

  def __call__(self, ids, pixels, positions, key_valid):
    """Logits [B, T, V] of a prompt: ids [B, T], pixels [B, H, W, 3], positions (prompt_positions'
    shape), key_valid [B, T] (False at padding)."""
    h = self.embed(ids, pixels)
    inputs = LayerInputs(positions, None)
    layers_valid = jnp.broadcast_to(key_valid, (self.cfg.text.num_layers,) + key_valid.shape)
    h, _ = self.run_layers(h, inputs, layers_valid)
    return self.head(h)

  def prefill(self, ids, pixels, lengths, room=0):
    """Prompt pass for generation; prompts are right-padded, `lengths` [B] their true lengths.

    Returns (next-token logits [B, V], every layer's KVCache [B, K, T + room, D] in its decoding_layout,
    key_valid [L, B, T + room])
    with `room` dead positions for the tokens generation writes.
    """
    b, t = ids.shape
    h = self.embed(ids, pixels)
    key_valid = jnp.arange(t)[None, :] < lengths[:, None]
    layers_valid = jnp.broadcast_to(key_valid, (self.cfg.text.num_layers, b, t))
    h, kv = self.run_layers(h, LayerInputs(self.prompt_positions(ids, pixels), None), layers_valid, kv_room=room)
    last = jnp.take_along_axis(h, (lengths - 1)[:, None, None], axis=1)
    return self.head(last)[:, 0], decoding_layout(kv), jnp.pad(layers_valid, [(0, 0), (0, 0), (0, room)])

  def decode(self, tokens, positions, cache: KVCache, key_valid, cache_index):
    """One token per example: tokens/positions [B] (a text token's position is the same on every
    multimodal-RoPE axis), written at sequence index `cache_index`.

    Returns (logits [B, V], the cache with every layer's new key and value at `cache_index`: stacked,
    one in-place update of the stacked cache after the layers, which only read it; per_layer, each
    layer's own update of its buffer). key_valid [L, B, S] is what the token sees in the cache before
    its own index.
    """
    h = self.language_model.embed(tokens[:, None])
    positions = positions[:, None]
    if self.cfg.text.mrope_section:
      positions = jnp.repeat(positions[..., None], 3, axis=-1)
    h, new = self.run_layers(h, LayerInputs(positions, cache_index), key_valid, cache)
    if self.cfg.layer_layout == "stacked":
      new = KVCache(*(jax.lax.dynamic_update_slice_in_dim(c, n, cache_index, 3) for c, n in zip(cache, new)))
    return self.head(h)[:, 0], new
