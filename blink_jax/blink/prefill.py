"""Blink's prefill: the model's forward pass (LLaVA-1.5 or Qwen2.5-VL) with saliency-guided scanning
and dynamic token resolution on the fixed-capacity slot layout (BLINK_SPEC §2-4).

Every layer runs the full layout [prefix | visual | SR slots | text]; the slots are dead (not keys)
until a scanning layer fills them. One loop runs all the layers, as the plain model's prefill does
(layer_stack.run_range: a `lax.scan` with the stacked params layout, unrolled with per_layer): its
body is one decoder layer plus, on the scanning layers first..last (under a `lax.cond` in the scan),
SGS (saliency from the layer's own keys), DTR (drop/expand) and the SR tokens written into the slots
(live from the next layer). After the scanning layers the final live blocks stay keys (or none do:
after_scan="drop"). So the stacked program holds one layer body, and the KV cache is the loop's
output, as vanilla's is (compile time and memory close to vanilla's: docs/tpu.md). The
layers before scanning pay for the 4p^2 K dead slot rows (about 3% more prefill FLOPs at 7B, the
spec's settings): running them on the short layout takes a second loop over the layer stack, whose
weights and cache XLA then lays out twice (1.6 - 2.3x vanilla's temporaries on TPU).

Returns the next-token logits, the KV cache with per-layer key validity (so greedy decoding sees, at
each layer, the SR tokens that were live there), and optionally a trace.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from blink_jax.blink.config import BlinkConfig
from blink_jax.blink.dtr import BlockState, Decision, decide
from blink_jax.blink.saliency import last_token_shares
from blink_jax.blink.slots import SlotLayout
from blink_jax.models.layer_stack import is_per_layer, layer_params, layer_slice, run_range, stack
from blink_jax.models.llama import KVCache, LayerInputs, decoding_layout
from blink_jax.models.shared_prefix import prefix_cache
from blink_jax.models.vision_language import VisionLanguageModel, decoder_layer, text_layer_params
from blink_jax.models.token_sr import bilinear_2x, layer_for


# (model, blink, params, prefix_ids [P], pixels, regions [B]) -> the target's tokens [n_scan, B, 2p, 2p, D]
TeacherFn = Callable[[VisionLanguageModel, BlinkConfig, Any, jax.Array, jax.Array, jax.Array], jax.Array]


class BlinkTrace(NamedTuple):
  """Per example and scanning layer (axis 1): what SGS saw and what DTR did."""
  saliency: jax.Array      # [B, n, rows, columns] visual saliency
  shares: jax.Array        # [B, n, R] region shares
  rho: jax.Array           # [B, n] max share
  region: jax.Array        # [B, n, K] region held by each block after the decision
  live: jax.Array          # [B, n, K] block live after the decision (from the next layer on)
  expanded: jax.Array      # [B, n, K]
  dropped: jax.Array       # [B, n, K]


class BlinkOutput(NamedTuple):
  logits: jax.Array        # [B, V] next token, or [B, T, V] at every prompt position
  cache: KVCache           # every layer's [B, Kh, S + room, D] (llama.KVCache, its decoding_layout); key_valid: which rows are keys
  key_valid: jax.Array     # [L, B, S]
  expansions: jax.Array    # [B] int32: regions expanded, summed over scanning layers and blocks
  trace: BlinkTrace | None


def slot_layout(model: VisionLanguageModel, blink: BlinkConfig, image_start: int, prompt_len: int,
                pixels_shape, offset: int = 0) -> SlotLayout:
  """The layout of a prompt of prompt_len tokens whose image (pixels_shape) starts at image_start, after
  `offset` tokens held elsewhere (a shared prefix's cached keys)."""
  return SlotLayout(image_start, model.visual_grid(pixels_shape), prompt_len, blink,
                    mrope=bool(model.cfg.text.mrope_section), offset=offset)


def blink_prefill(model: VisionLanguageModel, blink: BlinkConfig, params: Any, ids, pixels, lengths, *,
                  image_start: int, all_logits: bool = False, trace: bool = False,
                  room: int = 0, regions=None, teacher_fn: TeacherFn | None = None, active=None,
                  shared_prefix: bool = False) -> BlinkOutput:
  """ids [B, T] right-padded, lengths [B]; every prompt's visual tokens start at `image_start`;
  regions [B]: the target region per example (-1: none), which region_choice="oracle" expands;
  teacher_fn: what sr_source="teacher" writes into the slots (inference/token_sr_teacher.oracle_tokens);
  active [B] bool: the examples Blink acts on (default all; the others' slots stay dead: the plain model);
  shared_prefix: every prompt's first image_start tokens are the same, run once for the batch
  (models/shared_prefix.py; training's steps); all_logits then covers the positions after them only.

  params holds the model's params and, for mode "tokensr", `token_sr` (see models/token_sr.py). The
  cache has `room` dead positions after the full layout, for the tokens generation will write.
  """
  cfg = model.cfg
  blink.validate(model.visual_grid(pixels.shape), cfg.text.num_layers)
  if blink.mode == "vanilla":
    raise ValueError("blink_prefill runs interp/tokensr; mode 'vanilla' is the plain model's prefill")
  if blink.mode == "tokensr" and "token_sr" not in params:
    raise ValueError("mode 'tokensr' needs params['token_sr'] (trained TokenSR weights)")
  b, t = ids.shape
  # With a shared prefix the layout is the rest of the prompt's, after the prefix's cached keys.
  split = image_start if shared_prefix else 0
  layout = slot_layout(model, blink, image_start - split, t - split, pixels.shape, offset=split)
  n_layers, first, last = cfg.text.num_layers, blink.first_scan_layer, blink.last_scan_layer
  s = layout.full_len
  text_layer = decoder_layer(cfg)
  sr_layer = layer_for(blink, cfg)
  sr_stack = params["token_sr"]["layers"] if blink.mode == "tokensr" else None
  teacher = None
  if blink.sr_source == "teacher":
    if regions is None or teacher_fn is None:
      raise ValueError("blink sr_source='teacher' needs each example's target region (regions=) and teacher_fn")
    teacher = teacher_fn(model, blink, params, ids[0, :image_start], pixels, regions)
  p, d = blink.region_size, cfg.text.hidden_size

  # The full layout throughout; the slots stay dead (not keys) until a scanning layer fills them.
  short_valid = jnp.arange(t - split)[None, :] < (lengths - split)[:, None]
  h = layout.to_full(model.apply({"params": params}, ids[:, split:], pixels, method="embed"))
  full_positions = model.apply({"params": params}, ids, pixels, method="prompt_positions")
  prefix = prefix_cache(model, params, ids, full_positions, split) if split else None
  positions = layout.to_full(full_positions[:, split:].astype(jnp.float32))
  base_valid = layout.to_full(short_valid, fill=False)
  last_index = layout.full_index(lengths - split - 1)
  row_mask_causal = jnp.arange(s)[None, :] <= last_index[:, None]

  def with_prefix(valid):
    """[B, S] over the layout -> over every key: the shared prefix's (all live), then the layout's."""
    return jnp.concatenate([jnp.ones((b, split), bool), valid], axis=1) if split else valid

  def resolve(i, text_params, h_in, h_out, positions, k, key_valid, state):
    """SGS + DTR at scanning layer i: the decision, and SR tokens written into newly filled slots."""
    saliency, shares = last_token_shares(text_layer, text_params, h_in, positions, last_index, k,
                                         with_prefix(key_valid & row_mask_causal), image_start, layout.num_visual,
                                         layout.grid, blink)
    decision = decide(shares, state, blink, layer=i, oracle=regions)
    if active is not None:
      acts = active[:, None]
      decision = Decision(BlockState(decision.state.region, decision.state.live & acts),
                          decision.expanded & acts, decision.dropped & acts)
    # Super-resolve each block's region from this layer's output; only newly expanded blocks take it.
    idx = layout.region_token_index(decision.state.region).reshape(b, -1)
    region_h = jnp.take_along_axis(h_out, idx[..., None], axis=1).reshape(b * blink.max_regions, p, p, d)
    if sr_stack is not None:
      _, sr = sr_layer.apply({"params": layer_params(sr_stack, i - first)}, None, region_h)
    else:
      sr = bilinear_2x(region_h)
    sr = sr.reshape(b, layout.num_slots, d)
    if teacher is not None:   # the target's re-encoded tokens where the block holds it (max_regions=1)
      sr = jnp.where((decision.state.region == regions[:, None])[..., None],
                     teacher[i - first].reshape(b, layout.num_slots, d).astype(sr.dtype), sr)
    fresh = layout.slot_live(decision.expanded)
    h_out = layout.with_slot_rows(h_out, jnp.where(fresh[..., None], sr, layout.slot_rows(h_out)))
    fresh_rows = fresh[..., None] if layout.mrope else fresh
    positions = layout.with_slot_rows(positions, jnp.where(
        fresh_rows, layout.slot_positions(decision.state.region, blink.position_ids), layout.slot_rows(positions)))
    seen = BlinkTrace(saliency.reshape(b, *layout.grid), shares, shares.max(axis=1),
                      decision.state.region, decision.state.live, decision.expanded, decision.dropped)
    return h_out, positions, decision.state, seen

  empty = BlockState.empty(b, blink.max_regions)
  # What a layer outside the scanning range reports in the trace's place (then cut off): zeros.
  k_shape = jax.ShapeDtypeStruct((b, cfg.text.num_kv_heads, split + s, cfg.text.head_dim), jnp.dtype(cfg.dtype))
  unseen = jax.eval_shape(lambda k: resolve(first, text_layer_params(params, first), h, h, positions, k,
                                            base_valid, empty)[3], k_shape)
  unseen = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), unseen)

  def layer(carry, i, _):
    h, positions, state = carry
    scanning = (i >= first) & (i <= last)   # a Python bool when the layers are unrolled
    # After the scanning layers the final live blocks stay keys, or none do (after_scan="drop").
    live = state.live if blink.after_scan == "keep" else state.live & scanning
    key_valid = base_valid | layout.live_rows(live)
    text_params = text_layer_params(params, i)
    cached = None if prefix is None else layer_slice(prefix, i)
    (h_out, _), kv = text_layer.apply({"params": text_params}, (h, LayerInputs(positions, None)),
                                      (with_prefix(key_valid), cached), kv_room=room)
    scan = lambda: resolve(i, text_params, h, h_out, positions, kv.k[:, :, :split + s], key_valid, state)  # noqa: E731
    skip = lambda: (h_out, positions, state, unseen)  # noqa: E731
    if isinstance(scanning, bool):
      h_out, positions, state, seen = scan() if scanning else skip()
    else:
      h_out, positions, state, seen = jax.lax.cond(scanning, scan, skip)
    return (h_out, positions, state), (kv, with_prefix(key_valid), seen)

  (h, positions, state), (cache, key_valid, seen) = run_range(
      layer, (h, positions, empty), None, 0, n_layers, is_per_layer(params["language_model"]["layers"]))
  key_valid, seen = stack((key_valid, seen))
  seen = jax.tree.map(lambda x: x[first:last + 1], seen)
  expansions = seen.expanded.sum(axis=(0, 2), dtype=jnp.int32)

  if all_logits:
    logits = model.apply({"params": params}, layout.to_short(h), method="head")
  else:
    logits = model.apply({"params": params}, jnp.take_along_axis(h, last_index[:, None, None], axis=1),
                         method="head")[:, 0]
  key_valid = jnp.pad(key_valid, [(0, 0), (0, 0), (0, room)])
  traced = jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1), seen) if trace else None
  return BlinkOutput(logits, decoding_layout(cache), key_valid, expansions, traced)


def blink_prefill_fn(model: VisionLanguageModel, blink: BlinkConfig, image_start: int,
                     teacher_fn: TeacherFn | None = None):
  """Blink's prefill in the shape greedy_generate takes (see generate.PrefillFn)."""
  def prefill(params, ids, pixels, lengths, room=0, regions=None):
    out = blink_prefill(model, blink, params, ids, pixels, lengths, image_start=image_start, room=room,
                        regions=regions, teacher_fn=teacher_fn)
    return out.logits, out.cache, out.key_valid, out.expansions
  return prefill
