"""The Llama-family decoder of LLaVA (Vicuna) and Qwen2.5-VL (Qwen2): RMSNorm, RoPE, grouped-query
attention, SwiGLU; Qwen2 adds q/k/v biases and multimodal RoPE (TextConfig.mrope_section).

Attention is written against an explicit key layout so the same layer serves prefill, cached
decoding and Blink's slot layout: a query at sequence index i sees key j iff j <= i and
`key_valid[b, j]`. Positions (for RoPE) are explicit per token and may be fractional: [B, T], or
[B, T, 3] (temporal, height, width) with multimodal RoPE. The prompt
pass's attention kernel is chosen by `attention` (see attention_kernels.py).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from blink_jax.models.attention_kernels import cached_attention, decode_attention, self_attention
from blink_jax.models.layer_stack import StackedLayers, detached
from blink_jax.models.linear import WEIGHT_INIT, Linear
from blink_jax.models.model_config import Numerics, TextConfig


class RMSNorm(nn.Module):
  eps: float
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                       (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    # HF casts back to the input dtype before scaling; keep that order for bit-parity in bf16.
    return scale.astype(self.dtype) * normed.astype(self.dtype)


def rope_tables(positions: jax.Array, head_dim: int, theta: float,
                mrope_section: tuple[int, ...] = ()) -> tuple[jax.Array, jax.Array]:
  """cos/sin tables [B, T, head_dim] for (possibly fractional) positions [B, T], in float32. With
  `mrope_section` (multimodal RoPE, as Qwen2.5-VL), positions are [B, T, 3] and the first
  mrope_section[0] frequencies rotate by the temporal position, the next by the height, the last by
  the width."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  if mrope_section:
    component = np.repeat(np.arange(3), mrope_section)     # which position each frequency follows
    freqs = positions.astype(jnp.float32)[..., component] * inv_freq
  else:
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """HF's rotate-half RoPE on x [B, T, H, D]."""
  x32 = x.astype(jnp.float32)
  x1, x2 = jnp.split(x32, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  out = x32 * cos[:, :, None, :] + rotated * sin[:, :, None, :]
  return out.astype(x.dtype)


def cache_live(cache_index: jax.Array, key_valid: jax.Array, own: bool = False) -> jax.Array:
  """[B, S] bool: the cache keys a token written at `cache_index` sees (live ones before it, and its
  own with `own`)."""
  positions = jnp.arange(key_valid.shape[-1])
  return ((positions <= cache_index) if own else (positions < cache_index))[None] & key_valid


class KVCache(NamedTuple):
  """One layer's or every layer's keys and values [B, K, S, D]: kv heads before the sequence, the
  layout a decoding step's attention reads without transposing the cache (on XLA:CPU the
  [B, S, K, D] layout cost a transposed copy of each layer's cache every step). Every layer's is a
  per-layer tree (layer_stack.py): stacked [L, B, K, S, D], or with the per_layer layout lists of L
  arrays, one buffer per layer, which decoding holds as [B x K, S, D] (decoding_layout) and updates
  in place."""
  k: Any
  v: Any

  @property
  def length(self) -> int:
    """S, the sequence positions the cache holds."""
    return jax.tree.leaves(self.k)[0].shape[-2]


def decoding_layout(cache: KVCache) -> KVCache:
  """A prefill's cache as decoding holds it: with the per_layer layout each layer's [B, K, S, D] as
  [B x K, S, D] (a free reshape), which decoding writes and reads in place (with the write on
  [B, K, S, D] and the read reshaped, XLA:CPU copied every layer's cache each step); a stacked
  cache as it is."""
  if not isinstance(cache.k, list):
    return cache
  return KVCache(*([x.reshape(-1, *x.shape[2:]) for x in xs] for xs in cache))


class LayerInputs(NamedTuple):
  """What every decoder layer sees besides the hidden states (carried unchanged)."""
  positions: jax.Array      # [B, T] RoPE positions ([B, T, 3] with multimodal RoPE)
  cache_index: jax.Array | None  # decoding: scalar cache index of the one new token; None: prefill
                                 # (continuing after the cache's keys when a cache is given)


class Attention(nn.Module):
  cfg: TextConfig
  numerics: Numerics

  def setup(self):
    c, n = self.cfg, self.numerics
    dense = lambda feats, axes, in_dims, name, bias=False: Linear(  # noqa: E731
        feats, axes, in_dims, use_bias=bias, dtype=n.dtype, param_dtype=n.param_dtype, name=name)
    qkv_bias = c.attention_bias
    self.q_proj = dense((c.num_heads, c.head_dim), ("embed", "heads", "head_dim"), 1, "q_proj", qkv_bias)
    self.k_proj = dense((c.num_kv_heads, c.head_dim), ("embed", "kv_heads", "head_dim"), 1, "k_proj", qkv_bias)
    self.v_proj = dense((c.num_kv_heads, c.head_dim), ("embed", "kv_heads", "head_dim"), 1, "v_proj", qkv_bias)
    self.o_proj = dense((c.hidden_size,), ("heads", "head_dim", "embed"), 2, "o_proj")

  def _rope(self, positions):
    return rope_tables(positions, self.cfg.head_dim, self.cfg.rope_theta, self.cfg.mrope_section)

  def project(self, x, positions):
    """q, k, v with RoPE applied: [B, T, H|K, D]."""
    cos, sin = self._rope(positions)
    q = apply_rope(self.q_proj(x), cos, sin)
    k = apply_rope(self.k_proj(x), cos, sin)
    v = self.v_proj(x)
    q = nn.with_logical_constraint(q, ("act_batch", "act_len", "act_heads", "head_dim"))
    return q, k, v

  def query(self, x, positions):
    cos, sin = self._rope(positions)
    return apply_rope(self.q_proj(x), cos, sin)

  def attend(self, q, k, v, key_valid, cache=None, cache_index=None):
    """Prefill (no cache): causal self-attention of the call's queries over k, v [B, S, K, D] (the
    call's tokens, after a cached prefix's when S > T: attention_kernels.self_attention); decoding:
    the new token's query against the cache and its own key and value (k, v [B, K, 1, D]); with
    k = v = None, against the cache its key and value are written into."""
    if cache is None:
      out = self_attention(q, k, v, key_valid, causal=True, implementation=self.numerics.attention)
    elif k is None:
      out = cached_attention(q, cache, cache_live(cache_index, key_valid, own=True))
    else:
      out = decode_attention(q, cache, (k, v), cache_live(cache_index, key_valid))
    return self.o_proj(out)


class MLP(nn.Module):
  cfg: TextConfig
  numerics: Numerics

  @nn.compact
  def __call__(self, x):
    n = self.numerics
    dense = lambda feats, axes, name: Linear(  # noqa: E731
        (feats,), axes, dtype=n.dtype, param_dtype=n.param_dtype, name=name)
    gate = dense(self.cfg.intermediate_size, ("embed", "mlp"), "gate_proj")(x)
    up = dense(self.cfg.intermediate_size, ("embed", "mlp"), "up_proj")(x)
    h = nn.with_logical_constraint(nn.silu(gate) * up, ("act_batch", "act_len", "act_mlp"))
    return dense(self.cfg.hidden_size, ("mlp", "embed"), "down_proj")(h)


class DecoderLayer(nn.Module):
  """One pre-norm decoder layer.

  carry = (hidden [B, T, D], LayerInputs); per-layer input x = (key_valid [B, S], KVCache or None).
  Prefill (cache_index None): keys are this call's tokens, after the prefix's in `cache` when one is
  given (a prompt continued after a cached prefix: key_valid then covers both); returns the KVCache
  of every key it attended to as the layer output (the prefix's, then this call's: one buffer per
  layer, not a second copy of the whole cache made after the layers), with `kv_room` dead positions
  after them for the tokens generation will write (padded here, per layer, so a stacked cache with
  room is built once, not padded again as a whole).
  Decoding, stacked layout: the new token attends to the cache (read only) and itself; its key and
  value [B, K, 1, D] are the layer output, which VisionLanguageModel.decode writes into the stacked
  cache for all layers at once. Per_layer layout (`write_cache`): the layer writes its key and value
  into its own cache ([B x K, S, D]: decoding_layout) first, attends over it, and returns that cache.
  """
  cfg: TextConfig
  numerics: Numerics = Numerics()

  def setup(self):
    c, n = self.cfg, self.numerics
    self.input_layernorm = RMSNorm(c.rms_norm_eps, n.dtype, n.param_dtype)
    self.self_attn = Attention(c, n)
    self.post_attention_layernorm = RMSNorm(c.rms_norm_eps, n.dtype, n.param_dtype)
    self.mlp = MLP(c, n)

  def __call__(self, carry, per_layer, kv_room: int = 0, write_cache: bool = False):
    h, inputs = carry
    key_valid, cache = per_layer
    h = nn.with_logical_constraint(h, ("act_batch", "act_len", "act_emb"))
    q, k, v = self.self_attn.project(self.input_layernorm(h), inputs.positions)
    kv = KVCache(*(jnp.swapaxes(x, 1, 2) for x in (k, v)))   # the cache layout [B, K, T, D]
    if cache is not None and inputs.cache_index is None:   # a prefill continuing after the prefix `cache`
      kv = KVCache(*(jnp.concatenate([c.astype(n.dtype), n], axis=2) for c, n in zip(cache, kv)))
      h = h + self.self_attn.attend(q, *(jnp.swapaxes(x, 1, 2) for x in kv), key_valid)
    elif cache is not None and write_cache:   # this layer's cache [B x K, S, D] (decoding_layout)
      kv = KVCache(*(jax.lax.dynamic_update_slice_in_dim(c, n.reshape(c.shape[0], 1, -1).astype(c.dtype),
                                                         inputs.cache_index, 1) for c, n in zip(cache, kv)))
      h = h + self.self_attn.attend(q, None, None, key_valid, kv, inputs.cache_index)
    elif cache is not None:
      kv = KVCache(kv.k.astype(cache.k.dtype), kv.v.astype(cache.v.dtype))
      h = h + self.self_attn.attend(q, kv.k, kv.v, key_valid, cache, inputs.cache_index)
    else:
      h = h + self.self_attn.attend(q, k, v, key_valid)
    h = h + self.mlp(self.post_attention_layernorm(h))
    if inputs.cache_index is None and kv_room:
      kv = KVCache(*(jnp.pad(x, [(0, 0), (0, 0), (0, kv_room), (0, 0)]) for x in kv))
    return (h, inputs), kv

  def query(self, h, positions):
    """The RoPE'd queries [B, T, H, D] this layer computes for hidden states h (used by saliency)."""
    return self.self_attn.query(self.input_layernorm(h), positions)


class Llama(nn.Module):
  """Token embedding, a StackedLayers of DecoderLayer, final norm and LM head."""
  cfg: TextConfig
  numerics: Numerics = Numerics()

  def setup(self):
    c, n = self.cfg, self.numerics
    self.embed_tokens = nn.Embed(
        c.vocab_size, c.hidden_size, dtype=n.dtype, param_dtype=n.param_dtype,
        embedding_init=nn.with_logical_partitioning(WEIGHT_INIT, ("vocab", "embed")))
    self.layers = StackedLayers(detached(DecoderLayer, c, n), c.num_layers, remat=n.remat,
                                per_layer=n.layer_layout == "per_layer")
    self.norm = RMSNorm(c.rms_norm_eps, n.dtype, n.param_dtype)
    if not c.tie_word_embeddings:
      self.lm_head = Linear((c.vocab_size,), ("embed", "vocab"), dtype=n.dtype, param_dtype=n.param_dtype)

  def embed(self, ids):
    return self.embed_tokens(ids)

  def run_layers(self, h, inputs: LayerInputs, key_valid, cache=None, *, start=0, stop=None, kv_room=0):
    """Runs layers [start, stop); key_valid is [n, B, S] (one row per layer) and cache every layer's
    KVCache; a prefill's new cache gets `kv_room` dead positions (DecoderLayer). Returns (h, the
    layers' outputs: a prefill's cache; decoding, the new keys and values (stacked layout) or the
    updated cache (per_layer layout))."""
    (h, _), kv = self.layers((h, inputs), (key_valid, cache), start=start, stop=stop, kv_room=kv_room,
                             write_cache=self.numerics.layer_layout == "per_layer")
    return h, kv

  def head(self, h):
    h = self.norm(h)
    if self.cfg.tie_word_embeddings:
      return self.embed_tokens.attend(h)
    return self.lm_head(h)

  def __call__(self, ids, inputs: LayerInputs, key_valid):
    """Full prefill from token ids (used to initialise params)."""
    h = self.embed(ids)
    h, _ = self.run_layers(h, inputs, key_valid)
    return self.head(h)
