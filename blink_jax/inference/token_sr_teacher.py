"""TokenSR's teacher (BLINK_SPEC §6): a region's pixel box cropped, re-encoded through the frozen model
up to the scanning layers, its visual states pooled to 2p x 2p; what distillation trains TokenSR
toward (train/distill.py) and what Blink's sr_source="teacher" ablation writes into the slots (the
upper bound of any TokenSR).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from blink_jax import families
from blink_jax.blink.config import BlinkConfig
from blink_jax.blink.saliency import last_token_shares
from blink_jax.models.layer_stack import layer_slice, stacked_params
from blink_jax.models.llama import LayerInputs
from blink_jax.models.shared_prefix import prefix_cache
from blink_jax.models.vision_language import VisionLanguageModel, decoder_layer, text_layer_params


def region_corner(region: jax.Array, grid: tuple[int, int], region_size: int):
  """(row, column) of each region's top-left token; regions of p x p tokens in raster order over a
  rows x columns grid."""
  per_row = grid[1] // region_size
  return (region // per_row) * region_size, (region % per_row) * region_size


def crop_region(pixels: jax.Array, region: jax.Array, grid: tuple[int, int], region_size: int,
                out_shape: tuple[int, int] | None = None, method: str = "bicubic") -> jax.Array:
  """Each image's region box (p x p of the grid's tokens, as pixels) resized to out_shape (H, W);
  by default the full input size."""
  b, h, w, c = pixels.shape
  unit = h // grid[0]            # pixels a side of one visual token
  size = region_size * unit
  r0, c0 = region_corner(region, grid, region_size)
  crops = jax.vmap(lambda img, y, x: jax.lax.dynamic_slice(img, (y, x, 0), (size, size, c)))(
      pixels, r0 * unit, c0 * unit)
  out_h, out_w = out_shape or (h, w)
  return jax.image.resize(crops.astype(jnp.float32), (b, out_h, out_w, c), method=method).astype(pixels.dtype)


def pool_grid(tokens: jax.Array, grid: int, out: int) -> jax.Array:
  """[B, grid*grid, D] -> [B, out, out, D] by average pooling (grid divisible by out)."""
  b, _, d = tokens.shape
  k = grid // out
  return tokens.reshape(b, out, k, out, k, d).mean(axis=(2, 4))


def teacher_image_shape(model: VisionLanguageModel, pixels_shape, region_size: int) -> tuple[int, int]:
  """(H, W) the region's crop is re-encoded at: the encoder's one input size (LLaVA-1.5), or what
  gives a 2p x 2p grid (Qwen2.5-VL)."""
  if families.of_config(model.cfg).fixed_grid(model.cfg) is not None:
    return pixels_shape[1], pixels_shape[2]
  unit = pixels_shape[1] // model.visual_grid(pixels_shape)[0]
  return 2 * region_size * unit, 2 * region_size * unit


def check_teacher_grid(model: VisionLanguageModel, pixels_shape, region_size: int) -> None:
  """The teacher's grid must pool evenly to 2p x 2p."""
  rows, cols = model.visual_grid((1, *teacher_image_shape(model, pixels_shape, region_size), 3))
  if rows != cols or rows % (2 * region_size):
    raise ValueError(f"blink.region_size={region_size}: the teacher's {rows}x{cols} grid must pool evenly to "
                     f"{2 * region_size}x{2 * region_size}")


def scan_layer_visual_states(model: VisionLanguageModel, params: Any, prefix_ids: jax.Array, pixels: jax.Array,
                             blink: BlinkConfig, question_ids: jax.Array | None = None,
                             question_len: jax.Array | None = None):
  """Visual hidden states at the output of every scanning layer [n_scan, B, N, D], and, when question
  tokens are given, the region shares [n_scan, B, R] seen from the last question token.

  The sequence is [prefix ; visual ; question]: prefix_ids [P] are the prompt tokens before the image
  (the same for every image: run once, models/shared_prefix.py), question_ids [B, Q] (right-padded,
  question_len [B] valid) the tokens after it ("\n{q} ASSISTANT:").
  Causal attention keeps the visual states independent of the question.
  """
  cfg = model.cfg
  grid = model.visual_grid(pixels.shape)
  b, n = pixels.shape[0], grid[0] * grid[1]
  parts = [jnp.broadcast_to(prefix_ids, (b, prefix_ids.shape[0])),
           jnp.full((b, n), cfg.image_token_id, prefix_ids.dtype)]
  if question_ids is not None:
    parts.append(question_ids.astype(prefix_ids.dtype))
  ids = jnp.concatenate(parts, axis=1)
  t, visual_start = ids.shape[1], prefix_ids.shape[0]
  length = visual_start + n + (question_len if question_ids is not None else 0)
  valid_row = jnp.arange(t)[None, :] < jnp.broadcast_to(length, (b,))[:, None]
  positions = model.apply({"params": params}, ids, pixels, method="prompt_positions")
  prefix = prefix_cache(model, params, ids, positions, visual_start)
  inputs = LayerInputs(positions[:, visual_start:], None)
  h = model.apply({"params": params}, ids[:, visual_start:], pixels, method="embed")
  h, _ = model.apply({"params": params}, h, inputs, jnp.broadcast_to(valid_row, (blink.first_scan_layer, b, t)),
                     layer_slice(prefix, slice(0, blink.first_scan_layer)), stop=blink.first_scan_layer,
                     method="run_layers")
  last = jnp.broadcast_to(length, (b,)) - 1
  row = valid_row & (jnp.arange(t)[None, :] <= last[:, None])
  layer = decoder_layer(cfg)

  def scan_layer(h, i):   # one loop body for every scanning layer: one layer's program, not n
    layer_params = text_layer_params(params, i)
    (h_out, _), kv = layer.apply({"params": layer_params}, (h, inputs), (valid_row, layer_slice(prefix, i)))
    shares = None
    if question_ids is not None:
      _, shares = last_token_shares(layer, layer_params, h, inputs.positions, last - visual_start, kv.k, row,
                                    visual_start, n, grid, blink)
    return h_out, (h_out[:, :n], shares)

  scan_layers = jnp.arange(blink.first_scan_layer, blink.last_scan_layer + 1)
  _, (states, shares) = jax.lax.scan(scan_layer, h, scan_layers)
  return states, shares


def teacher_tokens(model: VisionLanguageModel, backbone: Any, prefix_ids, pixels, region, blink: BlinkConfig):
  """The teacher [n_scan, B, 2p, 2p, D]: each region's pixel box cropped, re-encoded
  (teacher_image_shape) and its scanning-layer visual states pooled to 2p x 2p. backbone: the model's
  params in the stacked layer layout."""
  p = blink.region_size
  crops = crop_region(pixels, region, model.visual_grid(pixels.shape), p, teacher_image_shape(model, pixels.shape, p))
  teacher, _ = scan_layer_visual_states(model, backbone, prefix_ids, crops, blink)
  teacher_grid = model.visual_grid(crops.shape)[0]
  return jax.vmap(lambda tk: pool_grid(tk, teacher_grid, 2 * p))(teacher)


def oracle_tokens(model: VisionLanguageModel, blink: BlinkConfig, params: Any, prefix_ids, pixels, regions):
  """The teacher of each example's target region [n_scan, B, 2p, 2p, D] (regions [B]; -1 reads region
  0, which the prefill does not use), from the model's params in either layer layout: what Blink's
  prefill writes for sr_source="teacher"."""
  check_teacher_grid(model, pixels.shape, blink.region_size)
  model, params = stacked(model, params)
  return teacher_tokens(model, params, prefix_ids, pixels, jnp.maximum(regions, 0), blink)


def stacked(model: VisionLanguageModel, params: Any) -> tuple[VisionLanguageModel, Any]:
  """The model and its params in the stacked layer layout, whatever theirs (the teacher's loop over
  the scanning layers indexes the decoder's layers with a traced index)."""
  text = params["language_model"]
  return (model.clone(cfg=model.cfg.replace(layer_layout="stacked")),
          {**params, "language_model": {**text, "layers": stacked_params(text["layers"])}})
