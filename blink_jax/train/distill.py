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

from blink_jax.blink.config import BlinkConfig
from blink_jax.inference.token_sr_teacher import region_corner, scan_layer_visual_states, teacher_tokens
from blink_jax.models.vision_language import VisionLanguageModel
from blink_jax.models import token_sr as token_sr_lib


class DistillMetrics(NamedTuple):
  loss: jax.Array
  kl: jax.Array
  cosine: jax.Array


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
