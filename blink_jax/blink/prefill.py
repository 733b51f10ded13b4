"""Blink's prefill: the LLaVA forward pass with saliency-guided scanning and dynamic token resolution
on the fixed-capacity slot layout (BLINK_SPEC §2-4).

    layers [0, first_scan)       short layout [prefix | visual | text], no slots
    layers first..last scan      full layout; each layer: run it, measure saliency from its own
                                 keys, drop/expand, write SR tokens into slots (live from the next layer)
    layers (last_scan, L)        full layout with the final live blocks (or none: after_scan="drop")

Returns the next-token logits, a KV cache in the full layout with per-layer key validity (so greedy
decoding sees, at each layer, the SR tokens that were live there), and optionally a trace.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from blink_jax.blink.config import BlinkConfig
from blink_jax.blink.dtr import BlockState, decide
from blink_jax.blink.saliency import last_token_shares
from blink_jax.blink.slots import SlotLayout
from blink_jax.models.layer_stack import detached, layer_at
from blink_jax.models.llama import KVCache, LayerInputs
from blink_jax.models.llava import Llava, decoder_layer, text_layer_params
from blink_jax.models.token_sr import TokenSRLayer, bilinear_2x


class BlinkTrace(NamedTuple):
  """Per example and scanning layer (axis 1): what SGS saw and what DTR did."""
  saliency: jax.Array      # [B, n, grid, grid] visual saliency
  shares: jax.Array        # [B, n, R] region shares
  rho: jax.Array           # [B, n] max share
  region: jax.Array        # [B, n, K] region held by each block after the decision
  live: jax.Array          # [B, n, K] block live after the decision (from the next layer on)
  expanded: jax.Array      # [B, n, K]
  dropped: jax.Array       # [B, n, K]


class BlinkOutput(NamedTuple):
  logits: jax.Array        # [B, V] next token, or [B, T, V] at every prompt position
  cache: KVCache           # [L, B, S, Kh, D] in the full layout
  key_valid: jax.Array     # [L, B, S]
  expansions: jax.Array    # [B] int32: regions expanded, summed over scanning layers and blocks
  trace: BlinkTrace | None


def slot_layout(model: Llava, blink: BlinkConfig, image_start: int, prompt_len: int) -> SlotLayout:
  return SlotLayout(image_start, model.cfg.vision.grid, prompt_len, blink)


def blink_prefill(model: Llava, blink: BlinkConfig, params: Any, ids, pixels, lengths, *,
                  image_start: int, all_logits: bool = False, trace: bool = False) -> BlinkOutput:
  """ids [B, T] right-padded, lengths [B]; every prompt's visual tokens start at `image_start`.

  params holds the LLaVA params and, for mode "tokensr", `token_sr` (see models/token_sr.py).
  """
  cfg = model.cfg
  blink.validate(cfg.vision.grid, cfg.text.num_layers)
  if blink.mode == "vanilla":
    raise ValueError("blink_prefill runs interp/tokensr; mode 'vanilla' is the plain model's prefill")
  if blink.mode == "tokensr" and "token_sr" not in params:
    raise ValueError("mode 'tokensr' needs params['token_sr'] (trained TokenSR weights)")
  b, t = ids.shape
  layout = slot_layout(model, blink, image_start, t)
  n_layers, first, last = cfg.text.num_layers, blink.first_scan_layer, blink.last_scan_layer
  run = lambda *a, **kw: model.apply({"params": params}, *a, method=Llava.run_layers, **kw)  # noqa: E731

  # Layers before scanning: the short layout.
  h = model.apply({"params": params}, ids, pixels, method=Llava.embed)
  short_valid = jnp.arange(t)[None, :] < lengths[:, None]
  short_pos = jnp.broadcast_to(jnp.arange(t, dtype=jnp.float32), (b, t))
  h, kv_early = run(h, LayerInputs(short_pos, None),
                    jnp.broadcast_to(short_valid, (first, b, t)), start=0, stop=first)

  # The full layout from the first scanning layer on.
  s = layout.full_len
  h = layout.to_full(h)
  positions = layout.to_full(short_pos)
  base_valid = layout.to_full(short_valid, fill=False)
  last_index = layout.full_index(lengths - 1)
  row_mask_causal = jnp.arange(s)[None, :] <= last_index[:, None]
  text_layer = decoder_layer(cfg)
  sr_layer = detached(TokenSRLayer, blink.token_sr_channels, jnp.dtype(cfg.dtype),
                      jnp.dtype(cfg.param_dtype))
  p = blink.region_size
  d = cfg.text.hidden_size

  sr_stacked = params["token_sr"]["layers"]["layers"] if blink.mode == "tokensr" else None

  def scan_layer(carry, j):
    h, positions, state = carry
    layer_params = text_layer_params(params, first + j)
    sr_params = layer_at(sr_stacked, j) if sr_stacked is not None else None
    key_valid = base_valid | layout.live_rows(state.live)
    (h_out, _), kv = text_layer.apply({"params": layer_params},
                                      (h, LayerInputs(positions, None)), (key_valid, None))
    saliency, shares = last_token_shares(text_layer, layer_params, h, positions, last_index, kv.k,
                                         key_valid & row_mask_causal, image_start, layout.num_visual,
                                         layout.grid, blink)
    decision = decide(shares, state, blink)
    # Super-resolve each block's region from this layer's output; only newly expanded blocks take it.
    idx = layout.region_token_index(decision.state.region).reshape(b, -1)
    region_h = jnp.take_along_axis(h_out, idx[..., None], axis=1).reshape(b * blink.max_regions, p, p, d)
    if blink.mode == "tokensr":
      _, sr = sr_layer.apply({"params": sr_params}, None, region_h)
    else:
      sr = bilinear_2x(region_h)
    sr = sr.reshape(b, layout.num_slots, d)
    fresh = layout.slot_live(decision.expanded)[..., None]
    h_out = layout.with_slot_rows(h_out, jnp.where(fresh, sr, layout.slot_rows(h_out)))
    positions = layout.with_slot_rows(positions, jnp.where(
        layout.slot_live(decision.expanded), layout.slot_positions(decision.state.region, blink.position_ids),
        layout.slot_rows(positions)))
    ys = (kv, key_valid, decision.expanded.sum(axis=-1, dtype=jnp.int32))
    if trace:
      ys += (BlinkTrace(saliency.reshape(b, layout.grid, layout.grid), shares, shares.max(axis=1),
                        decision.state.region, decision.state.live, decision.expanded, decision.dropped),)
    return (h_out, positions, decision.state), ys

  (h, positions, state), ys = jax.lax.scan(
      scan_layer, (h, positions, BlockState.empty(b, blink.max_regions)), jnp.arange(blink.num_scan_layers))
  kv_scan, valid_scan, expansions = ys[0], ys[1], ys[2].sum(axis=0)

  # Layers after scanning: the final live blocks (or none).
  live = state.live if blink.after_scan == "keep" else jnp.zeros_like(state.live)
  late_valid = base_valid | layout.live_rows(live)
  n_late = n_layers - last - 1
  h, kv_late = run(h, LayerInputs(positions, None),
                   jnp.broadcast_to(late_valid, (n_late, b, s)), start=last + 1, stop=n_layers)

  if all_logits:
    logits = model.apply({"params": params}, layout.to_short(h), method=Llava.head)
  else:
    logits = model.apply({"params": params}, jnp.take_along_axis(h, last_index[:, None, None], axis=1),
                         method=Llava.head)[:, 0]
  cache = KVCache(*(jnp.concatenate([layout.to_full(e, axis=2), m, l], axis=0)
                    for e, m, l in zip(kv_early, kv_scan, kv_late)))
  key_valid = jnp.concatenate([jnp.broadcast_to(base_valid, (first, b, s)), valid_scan,
                               jnp.broadcast_to(late_valid, (n_late, b, s))], axis=0)
  traced = jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1), ys[3]) if trace else None
  return BlinkOutput(logits, cache, key_valid, expansions, traced)


def blink_prefill_fn(model: Llava, blink: BlinkConfig, image_start: int):
  """Blink's prefill in the shape greedy_generate takes (see generate.PrefillFn)."""
  def prefill(params, ids, pixels, lengths):
    out = blink_prefill(model, blink, params, ids, pixels, lengths, image_start=image_start)
    return out.logits, out.cache, out.key_valid, out.expansions
  return prefill
