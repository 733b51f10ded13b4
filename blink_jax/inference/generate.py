"""Greedy generation with a static-shape KV cache.

The cache is laid out as [prompt bucket (right-padded) | max_new_tokens]: every example writes its
t-th new token at the same sequence index T + t, while its RoPE position continues from its own
prompt length. Dead prompt-padding keys are masked, so one compiled program serves every batch of a
(batch, bucket, max_new_tokens) shape. A prefill function returning per-layer key validity lets
Blink's prefill (whose live SR slots differ per layer) share the same decoding loop.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from blink_jax.models.llama import KVCache
from blink_jax.models.vision_language import VisionLanguageModel

# prefill(params, ids, pixels, lengths, room, extra) ->
#   (logits [B, V], KVCache (every layer's [B, K, S0 + room, D]: llama.KVCache), key_valid [L, B, S0 + room], expansions [B] int32)
# with `room` (static) dead positions after the prompt's S0 for the tokens generation writes; extra:
# what the mode's prompt pass takes besides the prompts, or None: Blink's target region per example
# [B] (region_choice="oracle"), zoom's [prefix ; image] cache from its first pass (zoom.py).
PrefillFn = Callable[[Any, jax.Array, jax.Array, jax.Array, int, Any],
                     tuple[jax.Array, KVCache, jax.Array, jax.Array]]


class Generation(NamedTuple):
  tokens: jax.Array        # [B, max_new_tokens]; after an example's EOS, pad_id
  expansions: jax.Array    # [B] Blink regions expanded in the prefill (0 for vanilla)


def vanilla_prefill(model: VisionLanguageModel) -> PrefillFn:
  def prefill(params, ids, pixels, lengths, room=0, extra=None):
    del extra
    logits, kv, key_valid = model.apply({"params": params}, ids, pixels, lengths, room, method="prefill")
    return logits, kv, key_valid, jnp.zeros(ids.shape[:1], jnp.int32)
  return prefill


def first_positions(model: VisionLanguageModel, params, ids, pixels, lengths) -> jax.Array:
  """[B] the RoPE position of each example's first new token: its prompt length, plus the model's
  rope_offset (Qwen2.5-VL's multimodal RoPE)."""
  return lengths + model.apply({"params": params}, ids, pixels, method="rope_offset")


def decode_step(model: VisionLanguageModel, params, tokens, t, s0: int, first, cache: KVCache, valid):
  """Feeds the (t-1)-th new token of every example [B] after its prompt: it is written at sequence index
  s0 + t - 1 of the cache (made a key there) at RoPE position first + t - 1 (first: first_positions).
  Returns (next-token logits [B, V], cache, key validity)."""
  index = s0 + t - 1
  valid = jax.lax.dynamic_update_slice_in_dim(valid, jnp.ones(valid.shape[:2] + (1,), bool), index, 2)
  logits, cache = model.apply({"params": params}, tokens, first + t - 1, cache, valid, index,
                              method="decode")
  return logits, cache, valid


def greedy_generate(model: VisionLanguageModel, prefill: PrefillFn, params, ids, pixels, lengths, *,
                    max_new_tokens: int, eos_id: int | Sequence[int], pad_id: int, extra=None) -> Generation:
  """Greedy tokens after the prompt pass `prefill`, and the regions Blink expanded in it; an example
  stops at the first of the `eos_id` tokens (one id or several) it generates; `extra`: the prefill's
  (PrefillFn)."""
  b = ids.shape[0]
  stop = jnp.asarray(eos_id if isinstance(eos_id, (list, tuple)) else [eos_id], jnp.int32)
  logits, cache, valid, expansions = prefill(params, ids, pixels, lengths, max_new_tokens, extra)
  s0 = cache.length - max_new_tokens
  start = first_positions(model, params, ids, pixels, lengths)
  first = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  out = jnp.full((b, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)
  done = jnp.isin(first, stop)

  def cond(state):
    t, _, done, _, _ = state
    return (t < max_new_tokens) & ~jnp.all(done)

  def body(state):
    t, out, done, cache, valid = state
    logits, cache, valid = decode_step(model, params, out[:, t - 1], t, s0, start, cache, valid)
    nxt = jnp.where(done, pad_id, jnp.argmax(logits, axis=-1).astype(jnp.int32))
    out = jax.lax.dynamic_update_slice_in_dim(out, nxt[:, None], t, 1)
    return t + 1, out, done | jnp.isin(nxt, stop), cache, valid

  _, out, _, _, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), out, done, cache, valid))
  return Generation(out, expansions)
