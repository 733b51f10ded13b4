"""A batch's shared prompt prefix run once: when every prompt of a batch begins with the same tokens
(the family's template before the image: the system prompt, 162 tokens in the embedded model's
byte-level tokenizer, of the 384 a fine-detail fine-tuning sequence holds), their keys and values are
computed for one row, broadcast over the batch, and the rest of each prompt continues after them
(DecoderLayer's prefill after a cached prefix). The numbers are the one-pass prompt's; gradients flow
through the broadcast (its transpose sums the rows), so training steps use it: supervised
fine-tuning's prompt pass (train/sft.py) and Blink's prefill under it (blink_prefill's
`shared_prefix`), and the scanning layers' visual states of TokenSR's teacher and distillation."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from blink_jax.models.llama import KVCache, LayerInputs


def prefix_cache(model, params: Any, ids: jax.Array, positions: jax.Array, prefix_len: int) -> KVCache:
  """Every layer's KVCache of the prompts' first prefix_len tokens (ids [B, T], the same in every row;
  positions: prompt_positions of ids), computed for row 0 and broadcast to the B rows."""
  apply = lambda *a, **k: model.apply({"params": params}, *a, **k)  # noqa: E731
  h = apply(ids[:1, :prefix_len], None, method="embed")   # text only: the image starts after the prefix
  valid = jnp.ones((model.cfg.text.num_layers, 1, prefix_len), bool)
  _, cache = apply(h, LayerInputs(positions[:1, :prefix_len], None), valid, method="run_layers")
  b = ids.shape[0]
  return jax.tree.map(lambda x: jnp.broadcast_to(x, x.shape[:-4] + (b,) + x.shape[-3:]), cache)


def logits_after_prefix(model, params: Any, ids: jax.Array, pixels: jax.Array, lengths: jax.Array,
                        prefix_len: int) -> jax.Array:
  """The prompt pass's logits at positions prefix_len.. [B, T - prefix_len, V] (ids [B, T] right-padded,
  lengths [B]), the shared prefix run once: equal to the model's logits [B, T, V] there."""
  apply = lambda *a, **k: model.apply({"params": params}, *a, **k)  # noqa: E731
  b, t = ids.shape
  positions = apply(ids, pixels, method="prompt_positions")
  cache = prefix_cache(model, params, ids, positions, prefix_len)
  h = apply(ids[:, prefix_len:], pixels, method="embed")
  valid = jnp.broadcast_to(jnp.arange(t)[None, :] < lengths[:, None], (model.cfg.text.num_layers, b, t))
  h, _ = apply(h, LayerInputs(positions[:, prefix_len:], None), valid, cache, method="run_layers")
  return apply(h, method="head")
