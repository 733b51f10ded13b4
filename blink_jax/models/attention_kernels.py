"""How self-attention's softmax(q k^T / sqrt(d)) v is computed: the one switch between kernels.

`xla`: `jax.nn.dot_product_attention` with a mask. XLA materialises the [B, H, T, S] logits; on
accelerators that is what XLA tiles and fuses, and the batch and head axes stay shardable.
`blocked`: for CPUs. There the materialised logits (127 MB per layer for 8 prompts of 704 tokens,
8 heads) make attention memory-bound, 3x slower than PyTorch's fused CPU kernel. This kernel loops
over (example, kv head) and works in query blocks whose logits stay in cache, and a causal query
block skips the keys after it (about half of them).
`splash`: for TPUs. Pallas' splash attention (jax.experimental.pallas.ops.tpu.splash_attention), as
MaxText uses it: the causal structure is its static block-sparse mask (blocks above the diagonal are
never computed), padding and Blink's dead slots are segment ids (segment 1 for live keys, 0 for dead
ones; a query sees keys of its own segment), so no [B, H, T, S] mask or logits exist. The sequence
is padded to a multiple of the kernel's block (128 .. 512); grouped kv heads are repeated to the query
heads. Under a mesh it runs per shard (`jax.shard_map` over the batch and head axes the logical rules
give `act_batch` and `act_heads`), one call per example; a batch that does not split over its shards
(a shared prompt prefix's one row, models/shared_prefix.py) runs whole on each. On a non-TPU mesh it
runs in Pallas' interpret mode (tests: it equals `xla` there).
`auto`: by the platform of the mesh in scope (else the default backend): `blocked` on CPU, `splash`
on TPU, `xla` elsewhere. `python -m blink_jax.aot` compiles for a TPU mesh from a CPU host, so it
resolves to `splash` there too.

All give the same numbers on live query rows (float32 logits and softmax, as
`jax.nn.dot_product_attention` computes). The keys may run longer than the queries: the queries are
then the last of the sequence (a prompt continued after a cached prefix, zoom.py's second pass), and
causality is aligned at the end, as flash attention does.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

IMPLEMENTATIONS = ("auto", "xla", "blocked", "splash")
QUERY_BLOCK = 256
SPLASH_BLOCKS = (512, 256, 128)


def check_implementation(name: str) -> str:
  if name not in IMPLEMENTATIONS:
    raise ValueError(f"attention implementation {name!r} is unknown; expected one of {IMPLEMENTATIONS}")
  return name


def platform() -> str:
  """The platform programs are being built for: the mesh in scope's, else the default backend's."""
  device = jax.sharding.get_abstract_mesh().abstract_device
  return device.platform if device is not None else jax.default_backend()


def resolve(name: str) -> str:
  """The kernel `name` stands for on `platform()`: 'auto' is 'blocked' on CPU, 'splash' on TPU and
  'xla' elsewhere."""
  if check_implementation(name) != "auto":
    return name
  return {"cpu": "blocked", "tpu": "splash"}.get(platform(), "xla")


def self_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_valid: jax.Array | None, *,
                   causal: bool, implementation: str = "auto") -> jax.Array:
  """q [B, T, H, D], k and v [B, S, K, D] (H a multiple of K, S >= T) -> [B, T, H, D].

  The queries are the sequence's last T: query i (at sequence index S - T + i) sees key j iff
  key_valid[b, j] (None: every key) and, when `causal`, j <= S - T + i.
  """
  t, s = q.shape[1], k.shape[1]
  if s < t:
    raise ValueError(f"{s} keys for {t} queries: the queries must be the keys' last {t}")
  kernel = resolve(implementation)
  if kernel == "xla":
    mask = None if key_valid is None else key_valid[:, None, None, :]
    if causal and s > t:
      ends = jnp.arange(s)[None, :] <= jnp.arange(s - t, s)[:, None]
      mask = ends[None, None] if mask is None else mask & ends[None, None]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal and s == t)
  if kernel == "splash":
    return _splash(q, k, v, key_valid, causal)
  return _blocked(q, k, v, key_valid, causal)


def decode_attention(q: jax.Array, cache: tuple[jax.Array, jax.Array], new: tuple[jax.Array, jax.Array],
                     cache_live: jax.Array) -> jax.Array:
  """One new token's attention over the KV cache and itself, without writing it into the cache.

  q [B, 1, H, D]; cache (k, v) [B, K, S, D]; new (k, v) [B, K, 1, D], the token's own key and value;
  cache_live [B, S] the cache keys it sees. The softmax runs jointly over both parts (float32 logits),
  so this equals attention over the cache with the new key written in, while the caller writes all
  layers' new keys into the stacked cache once, in place, instead of each layer returning an updated
  copy of its whole cache (what made each decode step copy the cache twice).
  """
  (kc, vc), (kn, vn) = cache, new
  b, _, h, d = q.shape
  g = h // kc.shape[1]
  qg = q.reshape(b, kc.shape[1], g, d) * jnp.asarray(1.0 / np.sqrt(d), q.dtype)
  f32 = dict(preferred_element_type=jnp.float32)
  logits = jnp.einsum("bkgd,bksd->bkgs", qg, kc, **f32)
  logits = jnp.where(cache_live[:, None, None, :], logits, -jnp.inf)
  own = jnp.einsum("bkgd,bkd->bkg", qg, kn[:, :, 0], **f32)
  top = jnp.maximum(jnp.max(logits, axis=-1), own)
  weights, own_weight = jnp.exp(logits - top[..., None]), jnp.exp(own - top)
  total = jnp.sum(weights, axis=-1) + own_weight
  out = jnp.einsum("bkgs,bksd->bkgd", weights.astype(vc.dtype), vc, **f32)
  out = (out + own_weight[..., None] * vn[:, :, None, 0].astype(jnp.float32)) / total[..., None]
  return out.reshape(b, 1, h, d).astype(q.dtype)


def cached_attention(q: jax.Array, cache: tuple[jax.Array, jax.Array], live: jax.Array) -> jax.Array:
  """One new token's attention over a KV cache its own key and value are already written into.

  q [B, 1, H, D]; cache (k, v) [B x K, S, D] (llama.decoding_layout); live [B, S] the keys
  it sees (its own included). The per-layer decoding step (layer_stack.py's per_layer layout) writes
  each layer's new key into that layer's own cache first, in place, and then reads it with no size-1
  axis in the dots (float32 logits and softmax, as decode_attention).
  """
  kc, vc = cache
  b, _, h, d = q.shape
  kv_heads = kc.shape[0] // b
  qg = q.reshape(b * kv_heads, h // kv_heads, d) * jnp.asarray(1.0 / np.sqrt(d), q.dtype)
  f32 = dict(preferred_element_type=jnp.float32)
  logits = jnp.einsum("ngd,nsd->ngs", qg, kc, **f32)
  logits = jnp.where(jnp.repeat(live, kv_heads, axis=0)[:, None, :], logits, -jnp.inf)
  weights = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum("ngs,nsd->ngd", weights.astype(vc.dtype), vc, **f32)
  return out.reshape(b, 1, h, d).astype(q.dtype)


def _splash(q, k, v, key_valid, causal):
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks
  b, t, h, d = q.shape
  s = k.shape[1]
  if k.shape[2] != h:   # grouped-query attention: each kv head serves h // kv_heads query heads
    k, v = (jnp.repeat(x, h // k.shape[2], axis=2) for x in (k, v))
  unit = SPLASH_BLOCKS[-1]
  padded_q = -(-t // unit) * unit
  # The keys are padded at least as much as the queries: with causality aligned at the end, each
  # padding query row then sees its own padding key (segment 0; no empty softmax row), and no live
  # query sees a padding key.
  padded_kv = -(-(s + padded_q - t) // unit) * unit
  block_q, block_kv = (next(n for n in SPLASH_BLOCKS if p % n == 0) for p in (padded_q, padded_kv))
  segment = jnp.ones((b, s), jnp.int32) if key_valid is None else key_valid.astype(jnp.int32)
  q_segment = jnp.pad(segment[:, s - t:], [(0, 0), (0, padded_q - t)])
  kv_segment = jnp.pad(segment, [(0, 0), (0, padded_kv - s)])
  # The kernel takes [heads, length, head_dim] per example and does not scale the logits.
  q = jnp.pad(q * (d ** -0.5), [(0, 0), (0, padded_q - t), (0, 0), (0, 0)]).transpose(0, 2, 1, 3)
  k, v = (jnp.pad(x, [(0, 0), (0, padded_kv - s), (0, 0), (0, 0)]).transpose(0, 2, 1, 3) for x in (k, v))
  interpret = platform() != "tpu"
  sizes = splash.BlockSizes(block_q=block_q, block_kv=block_kv, block_kv_compute=block_kv, block_q_dkv=block_q,
                            block_kv_dkv=block_kv, block_kv_dkv_compute=block_kv, block_q_dq=block_q,
                            block_kv_dq=block_kv)

  def per_shard(q, k, v, q_segment, kv_segment):
    shape = (padded_q, padded_kv)
    one = masks.CausalMask(shape, offset=s - t) if causal else masks.FullMask(shape)
    kernel = splash.make_splash_mha(masks.MultiHeadMask([one] * q.shape[1]), block_sizes=sizes,
                                    head_shards=1, q_seq_shards=1, interpret=interpret)
    return jax.vmap(lambda q, k, v, sq, skv: kernel(q, k, v, segment_ids=splash.SegmentIds(sq, skv)))(
        q, k, v, q_segment, kv_segment)

  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    out = per_shard(q, k, v, q_segment, kv_segment)
  else:
    batch, heads = nn.logical_to_mesh_axes(("act_batch", "act_heads"))
    axes = batch if isinstance(batch, tuple) else (batch,) if batch else ()
    if b % int(np.prod([mesh.shape[a] for a in axes])):
      batch = None   # fewer rows than the batch's shards (a shared prefix's one row): each shard runs them all
    qkv = P(batch, heads, None, None)
    out = jax.shard_map(per_shard, mesh=mesh, in_specs=(qkv, qkv, qkv, P(batch, None), P(batch, None)),
                        out_specs=qkv, check_vma=False)(q, k, v, q_segment, kv_segment)
  return out.transpose(0, 2, 1, 3)[:, :t]


def _blocked(q, k, v, key_valid, causal):
  b, t, h, d = q.shape
  s, kv_heads = k.shape[1], k.shape[2]
  group = h // kv_heads
  offset = s - t   # the queries are the sequence's last t
  # One row per (example, kv head): the group of query heads sharing those keys.
  qs = q.reshape(b, t, kv_heads, group, d).transpose(0, 2, 3, 1, 4).reshape(b * kv_heads, group, t, d)
  ks, vs = (x.transpose(0, 2, 1, 3).reshape(b * kv_heads, s, d) for x in (k, v))
  valid = jnp.ones((b, s), bool) if key_valid is None else key_valid
  valid = jnp.repeat(valid, kv_heads, axis=0)
  scale = np.float32(1.0 / np.sqrt(d))
  big_negative = np.float32(0.7 * np.finfo(np.float32).min)

  def one_row(row):
    q, k, v, valid = row
    outs = []
    for start in range(0, t, QUERY_BLOCK):
      stop = min(t, start + QUERY_BLOCK)
      seen = offset + stop if causal else s  # keys after the block's last query are masked for all of it
      logits = jnp.einsum("gqd,kd->gqk", q[:, start:stop], k[:seen],
                          preferred_element_type=jnp.float32) * scale
      mask = valid[None, :seen]
      if causal:
        mask = mask & (jnp.arange(seen)[None, :] <= jnp.arange(offset + start, offset + stop)[:, None])
      probs = jax.nn.softmax(jnp.where(mask[None], logits, big_negative), axis=-1)
      outs.append(jnp.einsum("gqk,kd->gqd", probs.astype(v.dtype), v[:seen]))
    return jnp.concatenate(outs, axis=1)

  out = jax.lax.map(one_row, (qs, ks, vs, valid))
  return out.reshape(b, kv_heads, group, t, d).transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)
