"""TokenSR distillation (BLINK_SPEC §6), all with static shapes inside the jitted step.

For each image one region r, shared by its scanning layers: the most salient one (mean region share
over the scanning layers, seen from the last token of the image's question) when it has a question,
else a random one.
  student_L = TokenSR_L(hs_L[r])        hs_L: layer-L output hidden states of the full image's tokens
  teacher_L = pool(hs'_L) at 2p x 2p    hs'_L: the same, for the crop of r's pixel box re-encoded
  loss = mean_L [ KL(softmax(teacher_L / T) || softmax(student_L / T)) + w_cos * (1 - cos) ]
The crop is re-encoded at the size its family's encoder takes: LLaVA-1.5's one input size (the crop
resized to the full image, its grid average-pooled to 2p x 2p, the spec's teacher), Qwen2.5-VL at its
own 2p x 2p grid (the crop resized to 2p x 28 px a side: what the model sees of that box in an image
twice as large, no pooling; ours). The grid of the full image may be non-square (rows x columns).
The sequence is [prefix ; visual tokens]: visual hidden states do not depend on text after them.
The backbone is frozen: its hidden states are computed under stop_gradient.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from blink_jax import families
from blink_jax.blink.config import BlinkConfig
from blink_jax.blink.saliency import last_token_shares
from blink_jax.models.llama import LayerInputs
from blink_jax.models.vision_language import VisionLanguageModel, decoder_layer, text_layer_params
from blink_jax.models import token_sr as token_sr_lib


class DistillMetrics(NamedTuple):
  loss: jax.Array
  kl: jax.Array
  cosine: jax.Array


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

  The sequence is [prefix ; visual ; question]: prefix_ids [P] are the prompt tokens before the image,
  question_ids [B, Q] (right-padded, question_len [B] valid) the tokens after it ("\n{q} ASSISTANT:").
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
  inputs = LayerInputs(model.apply({"params": params}, ids, pixels, method="prompt_positions"), None)
  h = model.apply({"params": params}, ids, pixels, method="embed")
  h, _ = model.apply({"params": params}, h, inputs, jnp.broadcast_to(valid_row, (blink.first_scan_layer, b, t)),
                     start=0, stop=blink.first_scan_layer, method="run_layers")
  last = jnp.broadcast_to(length, (b,)) - 1
  row = valid_row & (jnp.arange(t)[None, :] <= last[:, None])
  layer = decoder_layer(cfg)

  def scan_layer(h, i):   # one loop body for every scanning layer: one layer's program, not n
    layer_params = text_layer_params(params, i)
    (h_out, _), kv = layer.apply({"params": layer_params}, (h, inputs), (valid_row, None))
    shares = None
    if question_ids is not None:
      _, shares = last_token_shares(layer, layer_params, h, inputs.positions, last, kv.k, row, visual_start,
                                    n, grid, blink)
    return h_out, (h_out[:, visual_start:visual_start + n], shares)

  scan_layers = jnp.arange(blink.first_scan_layer, blink.last_scan_layer + 1)
  _, (states, shares) = jax.lax.scan(scan_layer, h, scan_layers)
  return states, shares


def choose_regions(shares: jax.Array, question_len: jax.Array, fallback: jax.Array) -> jax.Array:
  """Per image: the region with the highest share averaged over the scanning layers when it has a
  question (question_len > 0), else `fallback` (random regions)."""
  salient = jnp.argmax(shares.mean(axis=0), axis=-1).astype(fallback.dtype)
  return jnp.where(question_len > 0, salient, fallback)


def kl_and_cosine(teacher: jax.Array, student: jax.Array, temperature: float):
  """Per-token KL(softmax(t/T) || softmax(s/T)) over channels, and 1 - cosine; both averaged."""
  t = teacher.astype(jnp.float32) / temperature
  s = student.astype(jnp.float32) / temperature
  log_pt, log_ps = jax.nn.log_softmax(t, axis=-1), jax.nn.log_softmax(s, axis=-1)
  kl = jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1).mean()
  cos = jnp.sum(t * s, -1) / (jnp.linalg.norm(t, axis=-1) * jnp.linalg.norm(s, axis=-1) + 1e-6)
  return kl, (1.0 - cos).mean()


def region_targets(model: VisionLanguageModel, backbone: Any, prefix_ids, pixels, full_states, region,
                   blink: BlinkConfig):
  """(the region's student input [n, B, p, p, D], the teacher [n, B, 2p, 2p, D]), gradient-free.

  full_states: the full image's scanning-layer visual states (scan_layer_visual_states)."""
  p = blink.region_size
  grid = model.visual_grid(pixels.shape)
  n_scan, b, _, d = full_states.shape
  grid_states = full_states.reshape(n_scan, b, *grid, d)
  r0, c0 = region_corner(region, grid, p)
  take = jax.vmap(lambda g, y, x: jax.lax.dynamic_slice(g, (y, x, 0), (p, p, d)))
  region_states = jax.vmap(lambda g: take(g, r0, c0))(grid_states)
  pooled = teacher_tokens(model, backbone, prefix_ids, pixels, region, blink)
  return jax.lax.stop_gradient(region_states), jax.lax.stop_gradient(pooled)


def teacher_tokens(model: VisionLanguageModel, backbone: Any, prefix_ids, pixels, region, blink: BlinkConfig):
  """The teacher [n_scan, B, 2p, 2p, D]: each region's pixel box cropped, re-encoded
  (teacher_image_shape) and its scanning-layer visual states pooled to 2p x 2p. backbone: the model's
  params in the stacked layer layout."""
  p = blink.region_size
  crops = crop_region(pixels, region, model.visual_grid(pixels.shape), p, teacher_image_shape(model, pixels.shape, p))
  teacher, _ = scan_layer_visual_states(model, backbone, prefix_ids, crops, blink)
  teacher_grid = model.visual_grid(crops.shape)[0]
  return jax.vmap(lambda tk: pool_grid(tk, teacher_grid, 2 * p))(teacher)


def distillation_targets(model: VisionLanguageModel, backbone: Any, prefix_ids, pixels, region, blink: BlinkConfig):
  """region_targets for given regions, from the image alone."""
  full, _ = scan_layer_visual_states(model, backbone, prefix_ids, pixels, blink)
  return region_targets(model, backbone, prefix_ids, pixels, full, region, blink)


def distillation_loss(model: VisionLanguageModel, blink: BlinkConfig, token_sr: Any, region_states, teacher, *,
                      temperature: float, cosine_weight: float) -> tuple[jax.Array, DistillMetrics]:
  """Mean over scanning layers of KL (+ weighted cosine) between TokenSR_L(region) and the teacher."""
  sr_layer = token_sr_lib.layer_for(blink, model.cfg)

  def per_layer(layer_params, x, tgt):
    _, student = sr_layer.apply({"params": layer_params}, None, x)
    return kl_and_cosine(tgt, student, temperature)

  kl, cos = jax.vmap(per_layer)(token_sr["layers"]["layers"], region_states, teacher)
  kl, cos = kl.mean(), cos.mean()
  loss = kl + cosine_weight * cos
  return loss, DistillMetrics(loss, kl, cos)


def fidelity(model: VisionLanguageModel, blink: BlinkConfig, backbone: Any, token_sr: Any, prefix_ids, pixels,
             region) -> dict[str, jax.Array]:
  """How close TokenSR's tokens and interpolation's (Blink-interp) are to the teacher's (the region's
  crop re-encoded), for the given regions: per-token KL and 1 - cosine, averaged over the scanning
  layers and the batch (T = 1)."""
  states, teacher = distillation_targets(model, backbone, prefix_ids, pixels, region, blink)
  _, trained = distillation_loss(model, blink, token_sr, states, teacher, temperature=1.0, cosine_weight=0.0)
  interp_kl, interp_cos = kl_and_cosine(teacher, token_sr_lib.bilinear_2x(states), 1.0)
  return {"token_sr_kl": trained.kl, "token_sr_cosine_distance": trained.cosine,
          "interp_kl": interp_kl, "interp_cosine_distance": interp_cos}
