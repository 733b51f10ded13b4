"""A literal, test-only Blink: one example at a time, layer by layer, it builds the sequence
[prefix ; visual ; SR tokens of the live blocks ; text] with its true, changing length, and runs each
decoder layer with an explicit attention matrix in float64 numpy. Saliency is read off that matrix.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from blink_jax.blink.config import BlinkConfig
from blink_jax.models.llava import Llava
from blink_jax.models.vision_language import text_layer_params


def _rms(x, w, eps):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x, pos, theta):
  d = x.shape[-1]
  inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
  f = pos[:, None] * inv
  emb = np.concatenate([f, f], axis=-1)
  x1, x2 = np.split(x, 2, axis=-1)
  rot = np.concatenate([-x2, x1], axis=-1)
  return x * np.cos(emb)[:, None] + rot * np.sin(emb)[:, None]


def _layer(p, x, pos, text_cfg):
  """One decoder layer on the whole sequence; returns (output, attention probs [H, n, n], scores)."""
  t = text_cfg
  g = lambda *k: np.asarray(_get(p, k), np.float64)  # noqa: E731
  h = _rms(x, g("input_layernorm", "scale"), t.rms_norm_eps)
  q = _rope(np.einsum("nd,dhk->nhk", h, g("self_attn", "q_proj", "kernel")), pos, t.rope_theta)
  k = _rope(np.einsum("nd,dhk->nhk", h, g("self_attn", "k_proj", "kernel")), pos, t.rope_theta)
  v = np.einsum("nd,dhk->nhk", h, g("self_attn", "v_proj", "kernel"))
  rep = t.num_heads // t.num_kv_heads
  k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
  scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(t.head_dim)
  n = x.shape[0]
  scores = np.where(np.tril(np.ones((n, n), bool))[None], scores, -np.inf)
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  attn = np.einsum("hqk,khd->qhd", probs, v)
  x = x + np.einsum("qhd,hdo->qo", attn, g("self_attn", "o_proj", "kernel"))
  h = _rms(x, g("post_attention_layernorm", "scale"), t.rms_norm_eps)
  gate = h @ g("mlp", "gate_proj", "kernel")
  up = h @ g("mlp", "up_proj", "kernel")
  x = x + (gate / (1 + np.exp(-gate)) * up) @ g("mlp", "down_proj", "kernel")
  return x, probs, scores


def _get(tree, keys):
  for k in keys:
    tree = tree[k]
  return tree


def bilinear_2x(grid):
  """[p, p, D] -> [2p, 2p, D], half-pixel centres, edges clamped (written out by hand)."""
  p = grid.shape[0]
  src = (np.arange(2 * p) + 0.5) / 2 - 0.5
  lo = np.floor(src).astype(int)
  w_hi = src - lo
  lo_c, hi_c = np.clip(lo, 0, p - 1), np.clip(lo + 1, 0, p - 1)
  rows = grid[lo_c] * (1 - w_hi)[:, None, None] + grid[hi_c] * w_hi[:, None, None]
  return rows[:, lo_c] * (1 - w_hi)[None, :, None] + rows[:, hi_c] * w_hi[None, :, None]


@dataclasses.dataclass
class Block:
  region: int
  live: bool
  hidden: np.ndarray      # [4p^2, D]
  positions: np.ndarray   # [4p^2]


def reference_blink(model: Llava, blink: BlinkConfig, params, ids: np.ndarray, pixels: np.ndarray,
                    image_start: int, sr_fn=None):
  """One example (ids [n] unpadded). Returns (logits [n, V] at the prompt tokens, trace dict).

  sr_fn(layer_offset, grid [p, p, D]) -> [2p, 2p, D]; None means bilinear (Blink-interp).
  """
  cfg = model.cfg
  t = cfg.text
  grid, p, kmax = cfg.vision.grid, blink.region_size, blink.max_regions
  nv = grid * grid
  vis_end = image_start + nv
  x = np.asarray(model.apply({"params": params}, ids[None], pixels[None], method=Llava.embed)[0], np.float64)
  pos = np.arange(len(ids), dtype=np.float64)
  prefix_vis, text = x[:vis_end], x[vis_end:]
  pos_pv, pos_text = pos[:vis_end], pos[vis_end:]
  blocks = [Block(0, False, None, None) for _ in range(kmax)]
  n_side = grid // p
  trace = {"saliency": [], "shares": [], "region": [], "live": [], "expanded": [], "dropped": []}

  for li in range(t.num_layers):
    scanning = blink.first_scan_layer <= li <= blink.last_scan_layer
    if li == blink.last_scan_layer + 1 and blink.after_scan == "drop":
      for blk in blocks:
        blk.live = False
    live = [blk for blk in blocks if blk.live]
    seq = np.concatenate([prefix_vis] + [blk.hidden for blk in live] + [text])
    seq_pos = np.concatenate([pos_pv] + [blk.positions for blk in live] + [pos_text])
    p_l = jax.tree.map(np.asarray, text_layer_params(params, li))
    out, probs, scores = _layer(p_l, seq, seq_pos, t)
    n_sr = sum(len(blk.hidden) for blk in live)
    prefix_vis, text = out[:vis_end], out[vis_end + n_sr:]
    for blk, start in zip(live, np.cumsum([0] + [len(b.hidden) for b in live])[:-1]):
      blk.hidden = out[vis_end + start: vis_end + start + len(blk.hidden)]
    if not scanning:
      continue
    if blink.saliency_norm == "row":
      sal = probs[:, -1, image_start:vis_end].mean(0)
    else:
      s = scores[:, -1, image_start:vis_end]
      e = np.exp(s - s.max(-1, keepdims=True))
      sal = (e / e.sum(-1, keepdims=True)).mean(0)
    regions = sal.reshape(n_side, p, n_side, p).sum((1, 3)).reshape(-1)
    shares = regions / regions.sum()
    dropped = [blk.live and shares[blk.region] < blink.tau_drop for blk in blocks]
    for blk, d in zip(blocks, dropped):
      if d:
        blk.live = False
    held = {blk.region for blk in blocks if blk.live}
    candidates = sorted((r for r in range(len(shares)) if shares[r] > blink.tau_exp and r not in held),
                        key=lambda r: (-shares[r], r))
    expanded = [False] * kmax
    for k, blk in enumerate(blocks):
      if not blk.live and candidates:
        r = candidates.pop(0)
        r0, c0 = (r // n_side) * p, (r % n_side) * p
        rows = image_start + (r0 + np.arange(p))[:, None] * grid + (c0 + np.arange(p))[None, :]
        region_h = prefix_vis[rows]
        sr = bilinear_2x(region_h) if sr_fn is None else sr_fn(li - blink.first_scan_layer, region_h)
        parent = image_start + (r0 + np.arange(2 * p)[:, None] // 2) * grid + c0 + np.arange(2 * p)[None] // 2
        parent = parent.astype(np.float64)
        if blink.position_ids == "fractional":
          parent = parent + ((np.arange(2 * p)[:, None] % 2) * 2 + np.arange(2 * p)[None] % 2) / 4
        blocks[k] = Block(r, True, sr.reshape(-1, sr.shape[-1]), parent.reshape(-1))
        expanded[k] = True
    trace["saliency"].append(sal.reshape(grid, grid))
    trace["shares"].append(shares)
    trace["region"].append([blk.region for blk in blocks])
    trace["live"].append([blk.live for blk in blocks])
    trace["expanded"].append(expanded)
    trace["dropped"].append(dropped)

  final = np.concatenate([prefix_vis, text])
  norm = _rms(final, np.asarray(params["language_model"]["norm"]["scale"], np.float64), t.rms_norm_eps)
  logits = norm @ np.asarray(params["language_model"]["lm_head"]["kernel"], np.float64)
  return logits, {k: np.asarray(v) for k, v in trace.items()}

