"""Dynamic token resolution (BLINK_SPEC §3): per example, drop expanded regions that lost focus, then
expand the most salient regions above tau_exp into free blocks. All examples decide independently."""

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


def decide(shares: jax.Array, state: BlockState, cfg: BlinkConfig) -> Decision:
  """shares [B, R] (sum to 1). Drop first (share < tau_drop), then fill free blocks, lowest block
  first, with the regions above tau_exp that no live block holds, highest share first (ties: lower
  region id)."""
  num_regions = shares.shape[1]
  held_share = jnp.take_along_axis(shares, state.region, axis=1)
  dropped = state.live & (held_share < cfg.tau_drop)
  live = state.live & ~dropped
  held = jnp.any(jax.nn.one_hot(state.region, num_regions, dtype=bool) & live[..., None], axis=1)
  candidate = (shares > cfg.tau_exp) & ~held
  order = jnp.argsort(jnp.where(candidate, -shares, jnp.inf), axis=1, stable=True)
  free = ~live
  rank = jnp.cumsum(free, axis=1) - 1
  pick = jnp.take_along_axis(order, jnp.clip(rank, 0, num_regions - 1), axis=1)
  expanded = free & (rank < num_regions) & jnp.take_along_axis(candidate, pick, axis=1)
  region = jnp.where(expanded, pick, state.region).astype(jnp.int32)
  return Decision(BlockState(region, live | expanded), expanded, dropped)
