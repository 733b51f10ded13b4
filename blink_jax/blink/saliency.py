"""Saliency-guided scanning (BLINK_SPEC §2): the last prompt token's attention to the visual tokens,
computed as a side product (one query row against the layer's own keys), and region concentration.
`last_token_shares` is SGS at one layer, as Blink's prefill and TokenSR training both run it;
`last_token_saliency` the attention map alone (what attention-guided zoom crops by).

The main attention never materialises its probability matrix; this costs H x S dot products per
example and scanning layer.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from blink_jax.blink.config import as_grid
from blink_jax.models.llama import DecoderLayer


def saliency_from_last_query(q_last: jax.Array, k: jax.Array, row_mask: jax.Array, visual_start: int,
                             num_visual: int, norm: str = "row") -> jax.Array:
  """Visual saliency [B, N] from q_last [B, H, D] (RoPE'd) and the layer's keys k [B, Kh, S, D] (the
  KV cache's layout).

  row_mask [B, S]: the keys the last prompt token attends to (causal and live). norm="row": softmax
  over that whole row, then keep the visual columns; "visual": softmax over the visual keys only.
  Heads are averaged (grouped-query heads share their kv head's keys).
  """
  b, h, d = q_last.shape
  kh = k.shape[1]
  if norm == "visual":
    k = k[:, :, visual_start:visual_start + num_visual]
    row_mask = row_mask[:, visual_start:visual_start + num_visual]
    visual_start = 0
  q = q_last.astype(jnp.float32).reshape(b, kh, h // kh, d)
  scores = jnp.einsum("bkgd,bksd->bkgs", q, k.astype(jnp.float32)) * (d ** -0.5)
  scores = jnp.where(row_mask[:, None, None, :], scores, -jnp.inf)
  probs = jax.nn.softmax(scores, axis=-1).mean(axis=(1, 2))
  return probs[:, visual_start:visual_start + num_visual]


def region_shares(saliency: jax.Array, grid: int | tuple[int, int], region_size: int) -> jax.Array:
  """S(r_i) / sum_i S(r_i) for the non-overlapping p x p regions of the rows x columns grid (a side:
  square), row-major: [B, (rows / p) (columns / p)]."""
  b = saliency.shape[0]
  rows, cols = as_grid(grid)
  n, m = rows // region_size, cols // region_size
  s = saliency.reshape(b, n, region_size, m, region_size).sum(axis=(2, 4)).reshape(b, n * m)
  return s / jnp.maximum(s.sum(axis=-1, keepdims=True), 1e-30)


def last_token_saliency(layer: DecoderLayer, layer_params: Any, h_in: jax.Array, positions: jax.Array,
                        last_index: jax.Array, k: jax.Array, row_mask: jax.Array, visual_start: int,
                        num_visual: int, norm: str = "row") -> jax.Array:
  """Visual saliency [B, N] at one decoder layer, seen from the token at last_index [B]: its query
  made by `layer` from the layer's input h_in [B, S, D] at its position, against the layer's keys k;
  row_mask, visual_start, num_visual and norm as saliency_from_last_query."""
  h_last = jnp.take_along_axis(h_in, last_index[:, None, None], axis=1)
  pos_last = positions[jnp.arange(positions.shape[0]), last_index][:, None]   # [B, 1] or [B, 1, 3]
  q = layer.apply({"params": layer_params}, h_last, pos_last, method=DecoderLayer.query)
  return saliency_from_last_query(q[:, 0], k, row_mask, visual_start, num_visual, norm)


def last_token_shares(layer: DecoderLayer, layer_params: Any, h_in: jax.Array, positions: jax.Array,
                      last_index: jax.Array, k: jax.Array, row_mask: jax.Array, visual_start: int,
                      num_visual: int, grid: int | tuple[int, int], blink) -> tuple[jax.Array, jax.Array]:
  """SGS at one decoder layer: (visual saliency [B, N], region shares [B, R]), the saliency as
  last_token_saliency's; the region size and normalisation from `blink` (a BlinkConfig)."""
  saliency = last_token_saliency(layer, layer_params, h_in, positions, last_index, k, row_mask, visual_start,
                                 num_visual, blink.saliency_norm)
  return saliency, region_shares(saliency, grid, blink.region_size)
