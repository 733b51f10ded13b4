"""Qwen2.5-VL's vision encoder: 14-px patches, 2-D rotary positions, window attention with full
attention at `fullatt_block_indexes`, RMSNorm + SwiGLU blocks, and the 2x2 patch merger into the
decoder's width.

Static shapes: the image's size is the array's ([B, H, W, 3], H and W multiples of 28), so the token
layout is fixed at trace time. Tokens are held in window order, as transformers orders them, but with
the merged grid padded to whole windows: every window then has window^2 x 4 token slots (the padding
slots are masked as keys), so window attention is one batched attention over [B x windows, slots]
instead of a mask over the whole image, and a full-attention block attends over all slots with the
padding masked. A still image is the processor's two identical temporal frames, so the Conv3d patch
embedding is the Conv2d of its kernel summed over time. Output: merged tokens in raster order of the
merged grid [B, (H / 28) x (W / 28), D].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from blink_jax.models.attention_kernels import self_attention
from blink_jax.models.clip_vit import activation
from blink_jax.models.layer_stack import StackedLayers, detached
from blink_jax.models.linear import WEIGHT_INIT, Linear
from blink_jax.models.llama import RMSNorm, apply_rope
from blink_jax.models.model_config import Numerics
from blink_jax.models.qwen2_5_vl_config import QwenVisionConfig


class WindowLayout:
  """Where each patch of an (h x w)-patch image sits in the padded window order, all numpy (static).

  Slot order: window row, window column, merged row and column inside the window, then the 2 x 2
  patches of the merged token; `windows` windows of `slots` slots each.
  """

  def __init__(self, cfg: QwenVisionConfig, h: int, w: int):
    m, win = cfg.spatial_merge_size, cfg.window
    if h % m or w % m:
      raise ValueError(f"a {h} x {w}-patch image: both sides must be multiples of spatial_merge_size={m}")
    mh, mw = h // m, w // m
    nh, nw = -(-mh // win), -(-mw // win)
    self.merged = (mh, mw)
    self.windows, self.slots = nh * nw, win * win * m * m
    # Patch coordinates of every slot: axes (nh, nw, win, win, m, m) -> flat slot order.
    wr, wc, r, c, sr, sc = np.meshgrid(np.arange(nh), np.arange(nw), np.arange(win), np.arange(win),
                                       np.arange(m), np.arange(m), indexing="ij")
    rows = ((wr * win + r) * m + sr).reshape(-1)
    cols = ((wc * win + c) * m + sc).reshape(-1)
    self.valid = (rows < h) & (cols < w)                  # [slots total]
    self.rows, self.cols = np.minimum(rows, h - 1), np.minimum(cols, w - 1)
    self.patch = self.rows * w + self.cols                 # the raster patch each slot holds
    # Each merged token (a group of m*m consecutive slots) -> its raster index on the merged grid.
    first = np.arange(0, rows.size, m * m)
    merged_valid = self.valid[first]
    merged_raster = (rows[first] // m) * mw + cols[first] // m
    self.merged_order = np.empty(mh * mw, np.int64)
    self.merged_order[merged_raster[merged_valid]] = np.nonzero(merged_valid)[0]


def vision_rope(cfg: QwenVisionConfig, rows: np.ndarray, cols: np.ndarray) -> tuple[jax.Array, jax.Array]:
  """cos/sin [1, N, head_dim] of the 2-D rotary positions: the first quarter of the frequencies
  rotate by the patch row, the second by its column, repeated for the rotate-half pairs."""
  half = cfg.head_dim // 2
  inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, half, 2, dtype=np.float32) / half))
  freqs = np.concatenate([rows[:, None] * inv_freq, cols[:, None] * inv_freq], axis=-1).astype(np.float32)
  emb = np.concatenate([freqs, freqs], axis=-1)[None]
  return jnp.asarray(np.cos(emb)), jnp.asarray(np.sin(emb))


class VisionBlock(nn.Module):
  """carry = (hidden [B, N, C] in slot order, cos, sin, slot validity [B, N]); per-layer input: whether
  the block attends over the whole image (else within its window)."""
  cfg: QwenVisionConfig
  windows: int
  numerics: Numerics = Numerics()

  @nn.compact
  def __call__(self, carry, full):
    h, cos, sin, valid = carry
    c, n = self.cfg, self.numerics
    dense = lambda feats, axes, name: Linear(  # noqa: E731
        feats, axes, use_bias=True, dtype=n.dtype, param_dtype=n.param_dtype, name=name)
    x = RMSNorm(c.rms_norm_eps, n.dtype, n.param_dtype, name="norm1")(h)
    qkv = dense((3, c.num_heads, c.head_dim), ("embed", None, "heads", "head_dim"), "qkv")(x)
    q, k, v = (qkv[:, :, i] for i in range(3))
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    b, t = h.shape[:2]

    def whole(q, k, v):
      return self_attention(q, k, v, valid, causal=False, implementation=n.attention)

    def windowed(q, k, v):
      split = lambda x: x.reshape((b * self.windows, t // self.windows) + x.shape[2:])  # noqa: E731
      out = self_attention(split(q), split(k), split(v), split(valid), causal=False, implementation=n.attention)
      return out.reshape(q.shape)

    a = whole(q, k, v) if self.windows == 1 else jax.lax.cond(full, whole, windowed, q, k, v)
    h = h + Linear((c.hidden_size,), ("heads", "head_dim", "embed"), 2, use_bias=True, dtype=n.dtype,
                   param_dtype=n.param_dtype, name="proj")(a)
    x = RMSNorm(c.rms_norm_eps, n.dtype, n.param_dtype, name="norm2")(h)
    gate = dense((c.intermediate_size,), ("embed", "mlp"), "gate_proj")(x)
    up = dense((c.intermediate_size,), ("embed", "mlp"), "up_proj")(x)
    h = h + dense((c.hidden_size,), ("mlp", "embed"), "down_proj")(activation(c.hidden_act)(gate) * up)
    return (h, cos, sin, valid), None


class PatchMerger(nn.Module):
  """RMSNorm per patch, the 2 x 2 patches of a merged token concatenated, then Linear-GELU-Linear."""
  cfg: QwenVisionConfig
  numerics: Numerics = Numerics()

  @nn.compact
  def __call__(self, h):
    c, n = self.cfg, self.numerics
    x = RMSNorm(c.rms_norm_eps, n.dtype, n.param_dtype, name="ln_q")(h)
    unit = c.spatial_merge_size ** 2
    x = x.reshape(x.shape[0], x.shape[1] // unit, unit * c.hidden_size)
    x = Linear((unit * c.hidden_size,), (None, "mlp"), use_bias=True, dtype=n.dtype, param_dtype=n.param_dtype,
               name="linear_1")(x)
    x = jax.nn.gelu(x, approximate=False)
    return Linear((c.out_hidden_size,), ("mlp", "embed"), use_bias=True, dtype=n.dtype, param_dtype=n.param_dtype,
                  name="linear_2")(x)


class QwenVisionTower(nn.Module):
  """pixels [B, H, W, 3] (normalised, NHWC; H, W multiples of 28) -> merged visual tokens in raster
  order of the (H / 28) x (W / 28) grid, in the decoder's width: [B, H W / 784, D]."""
  cfg: QwenVisionConfig
  numerics: Numerics = Numerics()

  @nn.compact
  def __call__(self, pixels):
    c, n = self.cfg, self.numerics
    b, height, width, channels = pixels.shape
    if height % c.unit or width % c.unit or channels != c.num_channels:
      raise ValueError(f"pixels have shape {pixels.shape}; the vision tower expects [B, H, W, "
                       f"{c.num_channels}] with H and W multiples of {c.unit}")
    p = c.patch_size
    kernel = self.param("patch_embed", nn.with_logical_partitioning(WEIGHT_INIT, (None, None, None, None, "embed")),
                        (c.temporal_patch_size, p, p, c.num_channels, c.hidden_size), n.param_dtype)
    # Identical temporal frames: the 3-D patch embedding is the 2-D one of the kernel summed over time.
    patches = jax.lax.conv_general_dilated(
        pixels.astype(n.dtype), kernel.sum(0).astype(n.dtype), (p, p), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    layout = WindowLayout(c, height // p, width // p)
    h = patches.reshape(b, -1, c.hidden_size)[:, layout.patch]
    valid = jnp.broadcast_to(jnp.asarray(layout.valid), (b, layout.valid.size))
    cos, sin = vision_rope(c, layout.rows, layout.cols)
    h = nn.with_logical_constraint(h, ("act_batch", "act_len", "act_emb"))
    full = np.isin(np.arange(c.depth), c.fullatt_block_indexes)
    blocks = StackedLayers(detached(VisionBlock, c, layout.windows, n), c.depth, remat=n.remat, name="blocks")
    (h, *_), _ = blocks((h, cos, sin, valid), jnp.asarray(full))
    merged = PatchMerger(c, n, name="merger")(h)
    return merged[:, layout.merged_order]
