"""TokenSR distillation (BLINK_SPEC §6), all with static shapes inside the jitted step.

For each image one region r (random, shared by every scanning layer of that image):
  student_L = TokenSR_L(hs_L[r])        hs_L: layer-L output hidden states of the full image's tokens
  teacher_L = pool_2p(hs'_L)            hs'_L: the same, for the crop of r's pixel box resized to full size
  loss = mean_L [ KL(softmax(teacher_L / T) || softmax(student_L / T)) + w_cos * (1 - cos) ]
The sequence is [prefix ; visual tokens]: visual hidden states do not depend on text after them.
The backbone is frozen: its hidden states are computed under stop_gradient.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from blink_jax.blink.config import BlinkConfig
from blink_jax.models.layer_stack import detached
from blink_jax.models.llama import LayerInputs
from blink_jax.models.llava import Llava
from blink_jax.models.token_sr import TokenSRLayer


class DistillMetrics(NamedTuple):
  loss: jax.Array
  kl: jax.Array
  cosine: jax.Array


def region_origin_px(region: jax.Array, grid: int, region_size: int, patch: int):
  n = grid // region_size
  return (region // n) * region_size * patch, (region % n) * region_size * patch


def crop_region(pixels: jax.Array, region: jax.Array, grid: int, region_size: int, patch: int,
                method: str = "bicubic") -> jax.Array:
  """Each image's region box (p*patch px square) resized back to the full input size."""
  b, h, w, c = pixels.shape
  size = region_size * patch
  y, x = region_origin_px(region, grid, region_size, patch)
  crops = jax.vmap(lambda img, yy, xx: jax.lax.dynamic_slice(img, (yy, xx, 0), (size, size, c)))(
      pixels, y, x)
  return jax.image.resize(crops.astype(jnp.float32), (b, h, w, c), method=method).astype(pixels.dtype)


def pool_grid(tokens: jax.Array, grid: int, out: int) -> jax.Array:
  """[B, grid*grid, D] -> [B, out, out, D] by average pooling (grid divisible by out)."""
  b, _, d = tokens.shape
  k = grid // out
  return tokens.reshape(b, out, k, out, k, d).mean(axis=(2, 4))


def scan_layer_visual_states(model: Llava, params: Any, prefix_ids: jax.Array, pixels: jax.Array,
                             blink: BlinkConfig) -> jax.Array:
  """Visual hidden states at the output of every scanning layer: [n_scan, B, N, D].

  The sequence is [prefix ; visual]; prefix_ids [P] are the prompt tokens before the image.
  """
  cfg = model.cfg
  b, n = pixels.shape[0], cfg.num_image_tokens
  ids = jnp.concatenate([jnp.broadcast_to(prefix_ids, (b, prefix_ids.shape[0])),
                         jnp.full((b, n), cfg.image_token_id, prefix_ids.dtype)], axis=1)
  t = ids.shape[1]
  inputs = LayerInputs(jnp.broadcast_to(jnp.arange(t), (b, t)), jnp.arange(t), None)
  valid = jnp.ones((cfg.text.num_layers, b, t), bool)
  run = lambda h, lo, hi: model.apply({"params": params}, h, inputs, valid[lo:hi], start=lo, stop=hi,  # noqa: E731
                                      method=Llava.run_layers)[0]
  h = model.apply({"params": params}, ids, pixels, method=Llava.embed)
  h = run(h, 0, blink.first_scan_layer)
  states = []
  for layer in range(blink.first_scan_layer, blink.last_scan_layer + 1):
    h = run(h, layer, layer + 1)
    states.append(h[:, t - n:])
  return jnp.stack(states)


def kl_and_cosine(teacher: jax.Array, student: jax.Array, temperature: float):
  """Per-token KL(softmax(t/T) || softmax(s/T)) over channels, and 1 - cosine; both averaged."""
  t = teacher.astype(jnp.float32) / temperature
  s = student.astype(jnp.float32) / temperature
  log_pt, log_ps = jax.nn.log_softmax(t, axis=-1), jax.nn.log_softmax(s, axis=-1)
  kl = jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1).mean()
  cos = jnp.sum(t * s, -1) / (jnp.linalg.norm(t, axis=-1) * jnp.linalg.norm(s, axis=-1) + 1e-6)
  return kl, (1.0 - cos).mean()


def distillation_targets(model: Llava, backbone: Any, prefix_ids, pixels, region, blink: BlinkConfig):
  """(region hidden states [n, B, p, p, D], teacher targets [n, B, 2p, 2p, D]), gradient-free."""
  v = model.cfg.vision
  p = blink.region_size
  full = scan_layer_visual_states(model, backbone, prefix_ids, pixels, blink)
  crops = crop_region(pixels, region, v.grid, p, v.patch_size)
  teacher = scan_layer_visual_states(model, backbone, prefix_ids, crops, blink)
  n_scan, b, _, d = full.shape
  grid_states = full.reshape(n_scan, b, v.grid, v.grid, d)
  r0 = (region // (v.grid // p)) * p
  c0 = (region % (v.grid // p)) * p
  take = jax.vmap(lambda g, y, x: jax.lax.dynamic_slice(g, (y, x, 0), (p, p, d)))
  region_states = jax.vmap(lambda g: take(g, r0, c0))(grid_states)
  pooled = jax.vmap(lambda tk: pool_grid(tk, v.grid, 2 * p))(teacher)
  return jax.lax.stop_gradient(region_states), jax.lax.stop_gradient(pooled)


def distillation_loss(model: Llava, blink: BlinkConfig, token_sr: Any, region_states, teacher, *,
                      temperature: float, cosine_weight: float) -> tuple[jax.Array, DistillMetrics]:
  """Mean over scanning layers of KL (+ weighted cosine) between TokenSR_L(region) and the teacher."""
  sr_layer = detached(TokenSRLayer, blink.token_sr_channels, jnp.dtype(model.cfg.dtype),
                      jnp.dtype(model.cfg.param_dtype))

  def per_layer(layer_params, x, tgt):
    _, student = sr_layer.apply({"params": layer_params}, None, x)
    return kl_and_cosine(tgt, student, temperature)

  kl, cos = jax.vmap(per_layer)(token_sr["layers"]["layers"], region_states, teacher)
  kl, cos = kl.mean(), cos.mean()
  loss = kl + cosine_weight * cos
  return loss, DistillMetrics(loss, kl, cos)
