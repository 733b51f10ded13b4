"""How self-attention's softmax(q k^T / sqrt(d)) v is computed: the one switch between kernels.

`xla`: `jax.nn.dot_product_attention` with a mask. XLA materialises the [B, H, T, S] logits; on
accelerators that is what XLA tiles and fuses, and the batch and head axes stay shardable.
`blocked`: for CPUs. There the materialised logits (127 MB per layer for 8 prompts of 704 tokens,
8 heads) make attention memory-bound, 3x slower than PyTorch's fused CPU kernel. This kernel loops
over (example, kv head) and works in query blocks whose logits stay in cache, and a causal query
block skips the keys after it (about half of them).
`auto`: `blocked` on the CPU backend, `xla` elsewhere.

Both give the same numbers (float32 logits and softmax, as `jax.nn.dot_product_attention` computes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

IMPLEMENTATIONS = ("auto", "xla", "blocked")
QUERY_BLOCK = 256


def check_implementation(name: str) -> str:
  if name not in IMPLEMENTATIONS:
    raise ValueError(f"attention implementation {name!r} is unknown; expected one of {IMPLEMENTATIONS}")
  return name


def resolve(name: str) -> str:
  """The kernel `name` stands for on the default backend ('auto' -> 'blocked' on CPU, else 'xla')."""
  if check_implementation(name) != "auto":
    return name
  return "blocked" if jax.default_backend() == "cpu" else "xla"


def self_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_valid: jax.Array | None, *,
                   causal: bool, implementation: str = "auto") -> jax.Array:
  """q [B, T, H, D], k and v [B, T, K, D] (H a multiple of K) -> [B, T, H, D].

  The query at sequence index i sees key j iff key_valid[b, j] (None: every key) and, when
  `causal`, j <= i.
  """
  if resolve(implementation) == "xla":
    mask = None if key_valid is None else key_valid[:, None, None, :]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal)
  return _blocked(q, k, v, key_valid, causal)


def _blocked(q, k, v, key_valid, causal):
  b, t, h, d = q.shape
  kv_heads = k.shape[2]
  group = h // kv_heads
  # One row per (example, kv head): the group of query heads sharing those keys.
  qs = q.reshape(b, t, kv_heads, group, d).transpose(0, 2, 3, 1, 4).reshape(b * kv_heads, group, t, d)
  ks, vs = (x.transpose(0, 2, 1, 3).reshape(b * kv_heads, t, d) for x in (k, v))
  valid = jnp.ones((b, t), bool) if key_valid is None else key_valid
  valid = jnp.repeat(valid, kv_heads, axis=0)
  scale = np.float32(1.0 / np.sqrt(d))
  big_negative = np.float32(0.7 * np.finfo(np.float32).min)

  def one_row(row):
    q, k, v, valid = row
    outs = []
    for start in range(0, t, QUERY_BLOCK):
      stop = min(t, start + QUERY_BLOCK)
      seen = stop if causal else t  # keys after the block's last query are masked for all of it
      logits = jnp.einsum("gqd,kd->gqk", q[:, start:stop], k[:seen],
                          preferred_element_type=jnp.float32) * scale
      mask = valid[None, :seen]
      if causal:
        mask = mask & (jnp.arange(seen)[None, :] <= jnp.arange(start, stop)[:, None])
      probs = jax.nn.softmax(jnp.where(mask[None], logits, big_negative), axis=-1)
      outs.append(jnp.einsum("gqk,kd->gqd", probs.astype(v.dtype), v[:seen]))
    return jnp.concatenate(outs, axis=1)

  out = jax.lax.map(one_row, (qs, ks, vs, valid))
  return out.reshape(b, kv_heads, group, t, d).transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)
