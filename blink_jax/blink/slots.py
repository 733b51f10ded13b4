"""The fixed-capacity token layout (BLINK_SPEC §4):

    [prefix | visual N | K blocks of 4p^2 SR slots | text (padded)]

Every slot is a real row; a per-(example, block) live bit says whether its rows are keys. A block
holds one expanded region's 2p x 2p SR tokens. Shapes never depend on the data.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from blink_jax.blink.config import BlinkConfig


@dataclasses.dataclass(frozen=True)
class SlotLayout:
  image_start: int     # index of the first visual token in the prompt
  grid: int            # visual grid side (24 for LLaVA-1.5)
  prompt_len: int      # T: the short (slot-free) prompt length
  blink: BlinkConfig   # region size p, K blocks of 4p^2 slots

  @property
  def region_size(self) -> int:
    return self.blink.region_size

  @property
  def num_visual(self) -> int:
    return self.grid * self.grid

  @property
  def block_size(self) -> int:
    return self.blink.block_size

  @property
  def num_slots(self) -> int:
    return self.blink.num_slots

  @property
  def slot_start(self) -> int:
    return self.image_start + self.num_visual

  @property
  def full_len(self) -> int:
    return self.prompt_len + self.num_slots

  @property
  def regions_per_side(self) -> int:
    return self.grid // self.region_size

  def to_full(self, x: jax.Array, axis: int = 1, fill=0) -> jax.Array:
    """Inserts the (dead) slot rows into a short-layout array along `axis`."""
    shape = list(x.shape)
    shape[axis] = self.num_slots
    head, tail = jnp.split(x, [self.slot_start], axis=axis)
    return jnp.concatenate([head, jnp.full(shape, fill, x.dtype), tail], axis=axis)

  def to_short(self, x: jax.Array, axis: int = 1) -> jax.Array:
    head, _, tail = jnp.split(x, [self.slot_start, self.slot_start + self.num_slots], axis=axis)
    return jnp.concatenate([head, tail], axis=axis)

  def full_index(self, short_index: jax.Array) -> jax.Array:
    return jnp.where(short_index >= self.slot_start, short_index + self.num_slots, short_index)

  def slot_rows(self, x: jax.Array) -> jax.Array:
    """[B, K*4p^2, ...] rows of the slot region."""
    return x[:, self.slot_start:self.slot_start + self.num_slots]

  def with_slot_rows(self, x: jax.Array, rows: jax.Array) -> jax.Array:
    return jax.lax.dynamic_update_slice_in_dim(x, rows.astype(x.dtype), self.slot_start, axis=1)

  def slot_live(self, block_live: jax.Array) -> jax.Array:
    """[B, K] block bits -> [B, K*4p^2] row bits."""
    return jnp.repeat(block_live, self.block_size, axis=1)

  def live_rows(self, block_live: jax.Array) -> jax.Array:
    """[B, K] block bits -> [B, S] bool over the full layout, True on live slot rows only."""
    b = block_live.shape[0]
    return self.with_slot_rows(jnp.zeros((b, self.full_len), bool), self.slot_live(block_live))

  def region_origin(self, region: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Top-left visual-grid (row, col) of region ids."""
    n = self.regions_per_side
    return (region // n) * self.region_size, (region % n) * self.region_size

  def region_token_index(self, region: jax.Array) -> jax.Array:
    """Sequence indices [..., p, p] of a region's visual tokens (row-major)."""
    r0, c0 = self.region_origin(region)
    a = jnp.arange(self.region_size)
    rows = r0[..., None, None] + a[:, None]
    cols = c0[..., None, None] + a[None, :]
    return self.image_start + rows * self.grid + cols

  def slot_positions(self, region: jax.Array, scheme: str) -> jax.Array:
    """RoPE positions [B, K*4p^2] of each block's SR tokens for regions [B, K].

    "parent": the position of the visual token the SR token subdivides; "fractional": that plus
    (sub-row * 2 + sub-col) / 4, so the four children of a parent get distinct positions in [pos, pos+1).
    """
    r0, c0 = self.region_origin(region)
    two_p = 2 * self.region_size
    i = jnp.arange(two_p)
    rows = r0[..., None, None] + i[:, None] // 2
    cols = c0[..., None, None] + i[None, :] // 2
    pos = (self.image_start + rows * self.grid + cols).astype(jnp.float32)
    if scheme == "fractional":
      pos = pos + ((i[:, None] % 2) * 2 + (i[None, :] % 2)) / 4.0
    return pos.reshape(region.shape[0], -1)
