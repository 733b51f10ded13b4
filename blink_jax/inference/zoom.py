"""Attention-guided zoom, the training-free baseline Blink is compared with (ViCrop, "MLLMs Know Where
to Look", ICLR 2025), batched with static shapes:

1. pass 1 runs the prompt's [prefix ; image] through every decoder layer (its KV cache, which pass 2
   shares) and the question's tokens up to `ZoomConfig.layer`, and reads the last prompt token's
   attention to the image there (the saliency Blink's scanning computes: one query row against the
   layer's keys, no attention matrix); with `relative`, divided by the attention a generic "describe
   the image" question gets (ViCrop's rel-att: its tokens on the same cache);
2. per example, the box of `box` x the image's side (in visual tokens) that holds the most of that
   attention, in the frame the vision tower sees (LLaVA's padded or cropped square, Qwen2.5-VL's
   whole image);
3. the box cropped from that frame at the image's own resolution and encoded as a second image of
   the batch's shape (LLaVA: the tower's 336 px; Qwen2.5-VL: the batch's grid bucket), so shapes
   are static: the model answers from [image ; crop ; question], the crop in the prompt's template
   as a second image (Family.two_images); pass 2 runs only [crop ; question], after pass 1's cache
   (the keys and values of [prefix ; image] do not depend on what follows them), so the prompt
   costs about twice vanilla's.

Blink differs: it super-resolves the tokens of the salient region inside the decoder, for the
scanning layers only, within a fixed budget of slots; zoom adds a whole second image's tokens, which
every layer attends to.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from blink_jax.blink.saliency import last_token_saliency
from blink_jax.data.image_preprocessing import load_image
from blink_jax.inference.generate import PrefillFn
from blink_jax.models.layer_stack import layer_slice
from blink_jax.models.llama import KVCache, LayerInputs, decoding_layout
from blink_jax.models.vision_language import VisionLanguageModel, decoder_layer, text_layer_params

GENERIC_QUESTION = "Write a general description of the image."
BOX_CHOICES = ("attention", "oracle")


def from_mapping(d: dict[str, Any], where: str = "zoom") -> "ZoomConfig":
  """ZoomConfig from a mapping of its fields, an unknown field named with the known ones."""
  known = {f.name for f in dataclasses.fields(ZoomConfig)}
  unknown = sorted(set(d) - known)
  if unknown:
    raise ValueError(f"{where}: unknown fields {unknown}; known: {sorted(known)}")
  return ZoomConfig(**d)


@dataclasses.dataclass(frozen=True)
class ZoomConfig:
  layer: int = -1             # decoder layer whose attention guides the crop (-1: default_layer's)
  box: float = 0.5            # the crop's side as a share of the image's side (rounded to whole tokens)
  relative: bool = False      # divide by the attention of GENERIC_QUESTION's prompt (ViCrop's rel-att)
  box_choice: str = "attention"   # ablation: "oracle" centres the crop on the example's target box

  def resolved(self, num_layers: int) -> "ZoomConfig":
    """The settings for a decoder of num_layers layers (layer -1 replaced), checked."""
    layer = default_layer(num_layers) if self.layer == -1 else self.layer
    if not 0 <= layer < num_layers:
      raise ValueError(f"zoom.layer={self.layer}: expected a decoder layer in 0..{num_layers - 1} (or -1)")
    if self.box_choice not in BOX_CHOICES:
      raise ValueError(f"zoom.box_choice={self.box_choice!r}: expected one of {BOX_CHOICES}")
    if not 0 < self.box <= 1:
      raise ValueError(f"zoom.box={self.box}: expected the crop's share of the image side, in (0, 1]")
    return dataclasses.replace(self, layer=layer)


def default_layer(num_layers: int) -> int:
  """ViCrop's layer for LLaVA-1.5-7B (14 of 32 decoder layers) carried to another depth."""
  return min(num_layers - 1, round(14 * num_layers / 32))


def prompt_split(model: VisionLanguageModel, image_start: int, pixels_shape: tuple[int, ...]) -> int:
  """Where a prompt's [prefix ; image] ends (image_start + the image's visual tokens): the zoomed
  prompt begins with the same tokens, so their keys and values are computed once, by pass 1, and
  pass 2 continues after them."""
  rows, cols = model.visual_grid(pixels_shape)
  return image_start + rows * cols


def pass_1(model: VisionLanguageModel, layer: int, image_start: int, params: Any, ids, pixels,
           lengths) -> tuple[jax.Array, KVCache]:
  """Pass 1: (the last prompt token's attention to each visual token at decoder `layer` [B, rows,
  columns], the prompt's [prefix ; image] KV cache in every layer, what pass 2 continues after).
  The [prefix ; image] tokens run through every layer, the question's through layers 0..layer only."""
  b = ids.shape[0]
  split = prompt_split(model, image_start, pixels.shape)
  h = model.apply({"params": params}, ids[:, :split], pixels, method="embed")
  positions = model.apply({"params": params}, ids, pixels, method="prompt_positions")
  every_layer = jnp.ones((model.cfg.text.num_layers, b, split), bool)
  _, prefix = model.apply({"params": params}, h, LayerInputs(positions[:, :split], None), every_layer,
                          method="run_layers")
  return saliency_on(model, layer, image_start, params, prefix, ids, pixels, lengths), prefix


def saliency_on(model: VisionLanguageModel, layer: int, image_start: int, params: Any, prefix: KVCache, ids,
                pixels, lengths) -> jax.Array:
  """The last prompt token's attention to each visual token at decoder `layer` (heads averaged,
  softmax over the whole causal row) [B, rows, columns], for prompts `ids` whose [prefix ; image]
  keys and values are `prefix` (pass_1's): only the tokens after it run, through layers 0..layer
  (ViCrop's relative attention asks a generic question about the same image this way)."""
  b, t = ids.shape
  grid = model.visual_grid(pixels.shape)
  split = prefix.length
  positions = model.apply({"params": params}, ids, pixels, method="prompt_positions")[:, split:]
  h = model.apply({"params": params}, ids[:, split:], None, method="embed")
  valid = jnp.arange(t)[None, :] < lengths[:, None]
  inputs = LayerInputs(positions, None)
  if layer:
    h, _ = model.apply({"params": params}, h, inputs, jnp.broadcast_to(valid, (layer, b, t)),
                       layer_slice(prefix, slice(0, layer)), stop=layer, method="run_layers")
  text_layer, layer_params = decoder_layer(model.cfg), text_layer_params(params, layer)
  cached = layer_slice(prefix, layer)
  _, kv = text_layer.apply({"params": layer_params}, (h, inputs), (valid, cached))   # every key of the prompt
  last = lengths - 1
  causal = jnp.arange(t)[None, :] <= last[:, None]
  saliency = last_token_saliency(text_layer, layer_params, h, positions, last - split, kv.k, valid & causal,
                                 image_start, grid[0] * grid[1], "row")
  return saliency.reshape(b, *grid)


def answer_prefill(model: VisionLanguageModel) -> PrefillFn:
  """Pass 2 in greedy_generate's shape (generate.PrefillFn): the zoomed prompts (ids [B, T] of
  [prefix ; image ; crop ; question], pixels [B, 2, H, W, 3]) continued after `prefix`, pass 1's
  KV cache of their first tokens (its length is where they split), through every layer; returns the
  whole prompt's cache [prefix ; the rest ; room] as a one-pass prefill of the zoomed prompts would."""
  def prefill(params, ids, pixels, lengths, room=0, prefix=None):
    if prefix is None:
      raise ValueError("zoom's second pass continues after pass 1's [prefix ; image] cache: pass it as prefix")
    b, t = ids.shape
    split = prefix.length
    apply = functools.partial(model.apply, {"params": params})
    positions = apply(ids, pixels, method="prompt_positions")[:, split:]
    h = apply(ids[:, split:], pixels[:, 1], method="embed")     # the crop's tokens and the question's
    valid = jnp.broadcast_to(jnp.arange(t)[None, :] < lengths[:, None], (model.cfg.text.num_layers, b, t))
    h, cache = apply(h, LayerInputs(positions, None), valid, prefix, kv_room=room, method="run_layers")
    last = jnp.take_along_axis(h, (lengths - 1 - split)[:, None, None], axis=1)
    return (apply(last, method="head")[:, 0], decoding_layout(cache), jnp.pad(valid, [(0, 0), (0, 0), (0, room)]),
            jnp.zeros((b,), jnp.int32))
  return prefill


def box_side(zoom: ZoomConfig, grid: tuple[int, int]) -> tuple[int, int]:
  """The crop's (rows, columns) in visual tokens: `box` of each side, at least one token."""
  return tuple(max(1, min(n, round(zoom.box * n))) for n in grid)


def choose_boxes(saliency: np.ndarray, side: tuple[int, int]) -> np.ndarray:
  """Per example, the side[0] x side[1]-token window of saliency [B, rows, columns] with the largest
  sum (the first in row-major order on ties): [B, 4] as (row0, col0, row1, col1), ends exclusive."""
  saliency = np.asarray(saliency, np.float64)
  b, rows, cols = saliency.shape
  (h, w) = side
  integral = np.zeros((b, rows + 1, cols + 1))
  integral[:, 1:, 1:] = saliency.cumsum(1).cumsum(2)
  sums = (integral[:, h:, w:] - integral[:, :-h, w:] - integral[:, h:, :-w] + integral[:, :-h, :-w])
  flat = sums.reshape(b, -1).argmax(axis=1)
  r0, c0 = np.divmod(flat, cols - w + 1)
  return np.stack([r0, c0, r0 + h, c0 + w], axis=1).astype(np.int32)


def crop_views(family, images: Sequence[Any], boxes: np.ndarray, grid: tuple[int, int], preprocessing: str) -> list:
  """Each image's box (in visual tokens of `grid`) cut from the frame the vision tower sees (the
  family's source_view: LLaVA's padded or cropped square, Qwen2.5-VL's whole image), at the image's
  own resolution."""
  crops = []
  for image, (r0, c0, r1, c1) in zip(images, boxes):
    view = family.source_view(image, preprocessing)
    w, h = view.size
    crops.append(view.crop((round(c0 * w / grid[1]), round(r0 * h / grid[0]), round(c1 * w / grid[1]),
                            round(r1 * h / grid[0]))))
  return crops


def box_around(family, image: Any, box: Sequence[float], grid: tuple[int, int], side: tuple[int, int], cfg,
               preprocessing: str) -> np.ndarray:
  """The crop window (side tokens) centred on the centre of `box` = [x0, y0, x1, y1] in the image's
  pixels (Family.token_position), moved inside the grid (row0, col0, row1, col1): zoom with the
  oracle's box."""
  img = load_image(image)
  cy, cx = family.token_position((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, img.height, img.width, cfg,
                                 preprocessing)
  r0 = int(np.clip(round(cy - side[0] / 2), 0, grid[0] - side[0]))
  c0 = int(np.clip(round(cx - side[1] / 2), 0, grid[1] - side[1]))
  return np.asarray([r0, c0, r0 + side[0], c0 + side[1]], np.int32)
