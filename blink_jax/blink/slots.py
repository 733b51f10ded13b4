"""The fixed-capacity token layout (BLINK_SPEC §4):

    [prefix | visual N | K blocks of 4p^2 SR slots | text (padded)]

Every slot is a real row; a per-(example, block) live bit says whether its rows are keys. A block
holds one expanded region's 2p x 2p SR tokens. Shapes never depend on the data. The visual grid is
rows x columns (LLaVA's is square; Qwen2.5-VL's follows the image's bucket), regions are numbered
row-major over its (rows / p) x (columns / p) regions.

SR token positions ("parent": its parent visual token's; "fractional": within the parent): with 1-D
RoPE (LLaVA) a position index, the fractional one parent + (sub-row * 2 + sub-column) / 4 (BLINK_SPEC);
with multimodal RoPE (Qwen2.5-VL, ours) the parent's (temporal, height, width) position, the
fractional one + sub-row / 2 on the height axis and + sub-column / 2 on the width axis.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from blink_jax.blink.config import BlinkConfig


@dataclasses.dataclass(frozen=True)
class SlotLayout:
  image_start: int     # index of the first visual token in the prompt
  grid: tuple[int, int]   # visual grid (rows, columns): (24, 24) for LLaVA-1.5
  prompt_len: int      # T: the short (slot-free) prompt length
  blink: BlinkConfig   # region size p, K blocks of 4p^2 slots
  mrope: bool = False  # positions are [.., 3] (temporal, height, width): multimodal RoPE
  offset: int = 0      # tokens before the layout (a shared prefix's, cached): positions count from there

  @property
  def region_size(self) -> int:
    return self.blink.region_size

  @property
  def num_visual(self) -> int:
    return self.grid[0] * self.grid[1]

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
  def region_columns(self) -> int:
    return self.grid[1] // self.region_size

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
    n = self.region_columns
    return (region // n) * self.region_size, (region % n) * self.region_size

  def region_token_index(self, region: jax.Array) -> jax.Array:
    """Sequence indices [..., p, p] of a region's visual tokens (row-major)."""
    r0, c0 = self.region_origin(region)
    a = jnp.arange(self.region_size)
    rows = r0[..., None, None] + a[:, None]
    cols = c0[..., None, None] + a[None, :]
    return self.image_start + rows * self.grid[1] + cols

  def slot_positions(self, region: jax.Array, scheme: str) -> jax.Array:
    """RoPE positions [B, K*4p^2] (with mrope [B, K*4p^2, 3]) of each block's SR tokens for regions
    [B, K] (see the module docstring for the schemes)."""
    r0, c0 = self.region_origin(region)
    two_p = 2 * self.region_size
    i = jnp.arange(two_p)
    rows = r0[..., None, None] + i[:, None] // 2
    cols = c0[..., None, None] + i[None, :] // 2
    sub_row, sub_col = (i[:, None] % 2).astype(jnp.float32), (i[None, :] % 2).astype(jnp.float32)
    b = region.shape[0]
    image_start = self.offset + self.image_start
    if self.mrope:
      rows, cols = jnp.broadcast_arrays(rows, cols)
      start = jnp.full(rows.shape, image_start, jnp.float32)
      height = (image_start + rows).astype(jnp.float32)
      width = (image_start + cols).astype(jnp.float32)
      if scheme == "fractional":
        height, width = height + sub_row / 2, width + sub_col / 2
      return jnp.stack([start, height, width], axis=-1).reshape(b, -1, 3)
    pos = (image_start + rows * self.grid[1] + cols).astype(jnp.float32)
    if scheme == "fractional":
      pos = pos + (sub_row * 2 + sub_col) / 4.0
    return pos.reshape(b, -1)
