"""Dynamic token resolution: per example, drop expanded regions that lost focus, then expand the most
salient regions above tau_exp into free blocks (and the paper's ablations: a fixed schedule, random
regions). All examples decide independently."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from blink_jax.blink.config import BlinkConfig


class BlockState(NamedTuple):
  region: jax.Array   # [B, K] int32, the region a block holds (meaningful while live)
  live: jax.Array     # [B, K] bool

  @classmethod
  def empty(cls, batch: int, blocks: int) -> "BlockState":
    return cls(jnp.zeros((batch, blocks), jnp.int32), jnp.zeros((batch, blocks), bool))


class Decision(NamedTuple):
  state: BlockState
  expanded: jax.Array  # [B, K] newly filled this layer
  dropped: jax.Array   # [B, K] cleared this layer


def random_scores(shares: jax.Array, layer: int) -> jax.Array:
  """[B, R] uniform scores for region_choice="random": per example a function of its own shares
  (rounded to 1e-3, so an example draws the same regions batched or alone) and of the layer."""
  weights = jnp.arange(1, shares.shape[1] + 1, dtype=jnp.int32)
  fingerprint = jnp.sum(jnp.round(shares * 1000).astype(jnp.int32) * weights, axis=1).astype(jnp.uint32)
  base = jax.random.fold_in(jax.random.key(0), layer)
  return jax.vmap(lambda f: jax.random.uniform(jax.random.fold_in(base, f), shares.shape[1:]))(fingerprint)


def decide(shares: jax.Array, state: BlockState, cfg: BlinkConfig, layer: int = 0, oracle=None) -> Decision:
  """shares [B, R] (sum to 1) at scanning layer `layer`. Dynamic schedule (DTR): drop first (share <
  tau_drop), then fill free blocks, lowest block first, with the regions above tau_exp that no live
  block holds, highest share first (ties: lower region id). Fixed schedule (ablation): every block
  drops and the top regions refill them, whatever rho. region_choice="random" (ablation): as many
  regions as that would expand, drawn at random (random_scores) among those no live block holds;
  "oracle" (the upper bound): the example's target region `oracle` [B] first (-1: none), then by share."""
  num_regions = shares.shape[1]
  if cfg.schedule == "fixed":
    dropped = state.live
  else:
    held_share = jnp.take_along_axis(shares, state.region, axis=1)
    dropped = state.live & (held_share < cfg.tau_drop)
  live = state.live & ~dropped
  held = jnp.any(jax.nn.one_hot(state.region, num_regions, dtype=bool) & live[..., None], axis=1)
  candidate = ~held if cfg.schedule == "fixed" else (shares > cfg.tau_exp) & ~held
  scores = shares
  if cfg.region_choice == "random":
    scores = random_scores(shares, layer)
  elif cfg.region_choice == "oracle":
    if oracle is None:
      raise ValueError("blink region_choice='oracle' needs each example's target region (regions=...)")
    scores = shares + 2.0 * jax.nn.one_hot(oracle, num_regions, dtype=shares.dtype)   # -1: a zero row
  if cfg.region_choice != "saliency":
    wanted = jnp.sum(candidate, axis=1, keepdims=True)
    rank = jnp.argsort(jnp.argsort(jnp.where(held, jnp.inf, -scores), axis=1, stable=True), axis=1)
    candidate = ~held & (rank < wanted)
  order = jnp.argsort(jnp.where(candidate, -scores, jnp.inf), axis=1, stable=True)
  free = ~live
  rank = jnp.cumsum(free, axis=1) - 1
  pick = jnp.take_along_axis(order, jnp.clip(rank, 0, num_regions - 1), axis=1)
  expanded = free & (rank < num_regions) & jnp.take_along_axis(candidate, pick, axis=1)
  region = jnp.where(expanded, pick, state.region).astype(jnp.int32)
  return Decision(BlockState(region, live | expanded), expanded, dropped)
