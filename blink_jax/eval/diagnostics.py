"""Each link of Blink measured against ground-truth boxes (questions whose meta carries `box`, in the
image's pixels: the fine-detail task): per scanning layer, how often the most salient region holds the
target (against chance, one over the regions); how many regions Blink expands and drops a question;
how often the target's region was expanded at some layer; accuracy split by whether it was; and, for
tokensr, how close TokenSR's tokens of the target's region are to the teacher's (the region's crop
re-encoded) against interpolation's. For attention-guided zoom: how often its crop holds the target's
centre, and accuracy split by whether it did. eval.py writes them per mode with `--config.diagnostics=True`."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from blink_jax.eval.example import EvalExample
from blink_jax.inference.pipeline import Pipeline
from blink_jax.inference import token_sr_teacher
from blink_jax.train.distill import fidelity


def _accuracy(right: np.ndarray, selection: np.ndarray) -> float | None:
  return 100 * float(right[selection].mean()) if selection.any() else None


def diagnose(pipe: Pipeline, examples: list[EvalExample], images: list, mode: str, batch_size: int,
             correct: Callable[[EvalExample], bool], prefix_ids: np.ndarray) -> dict[str, Any]:
  """The diagnostics of `mode` over the examples that carry a box (images: their decoded images;
  prefix_ids: the prompt tokens before the image, for the teacher's forward)."""
  if mode == "zoom":
    return diagnose_zoom(pipe, examples, images, batch_size, correct)
  hits, expanded, dropped, target_expanded, right, chance, closeness = [], [], [], [], [], [], []
  measure = _fidelity_fn(pipe, prefix_ids) if mode == "tokensr" else None
  for idx in pipe.shape_batches(images, batch_size):
    real = list(dict.fromkeys(idx))
    batch = pipe.prepare([images[i] for i in idx], [examples[i].question for i in idx])
    regions = [pipe.target_region(images[i], examples[i].meta["box"]) for i in idx]
    trace = pipe.blink_forward(batch, mode=mode, trace=True, targets=[examples[i].meta["box"] for i in idx]).trace
    shares, region, live, grew, shrank = (np.asarray(x) for x in (trace.shares, trace.region, trace.live,
                                                                    trace.expanded, trace.dropped))
    if measure is not None and min(regions) >= 0:
      closeness.append(measure(batch, np.asarray(regions, np.int32)))
    for k, i in enumerate(real):
      target = regions[k]
      if target < 0:
        continue
      hits.append(shares[k].argmax(-1) == target)
      chance.append(1 / shares.shape[-1])
      expanded.append(int(grew[k].sum()))
      dropped.append(int(shrank[k].sum()))
      target_expanded.append(bool(((region[k] == target) & live[k]).any()))
      right.append(correct(examples[i]))
  if not hits:
    return {"questions": 0}
  target_expanded_arr, right_arr = np.asarray(target_expanded), np.asarray(right)
  out = {
      "questions": len(hits),
      "first_scan_layer": pipe.blink.first_scan_layer,
      "hit_rate_per_layer": [round(float(h), 4) for h in np.mean(hits, axis=0)],
      "chance": round(float(np.mean(chance)), 4),
      "expanded_per_question": float(np.mean(expanded)),
      "dropped_per_question": float(np.mean(dropped)),
      "target_expanded": float(target_expanded_arr.mean()),
      "accuracy_target_expanded": _accuracy(right_arr, target_expanded_arr),
      "accuracy_target_not_expanded": _accuracy(right_arr, ~target_expanded_arr),
  }
  if closeness:
    out.update({k: float(np.mean([f[k] for f in closeness])) for k in closeness[0]})
  return out


def diagnose_zoom(pipe: Pipeline, examples: list[EvalExample], images: list, batch_size: int,
                  correct: Callable[[EvalExample], bool]) -> dict[str, Any]:
  """Zoom's link: how often its crop (the pipeline's zoom settings) holds the visual token that sees
  the target box's centre, against the crop's share of the grid (chance), and accuracy split by it."""
  held, right, chance = [], [], []
  for idx in pipe.shape_batches(images, batch_size):
    real = list(dict.fromkeys(idx))
    batch = pipe.prepare([images[i] for i in idx], [examples[i].question for i in idx])
    boxes = pipe.zoom_boxes(batch, targets=[examples[i].meta["box"] for i in idx])
    rows, cols = pipe.model.visual_grid(batch.pixels.shape)
    for k, i in enumerate(real):
      img, (x0, y0, x1, y1) = images[i], examples[i].meta["box"]     # images: decoded (PIL)
      token = pipe.family.token_at((x0 + x1) / 2, (y0 + y1) / 2, img.height, img.width, pipe.cfg, pipe.preprocessing)
      if token is None:
        continue
      r0, c0, r1, c1 = boxes[k]
      held.append(r0 <= token[0] < r1 and c0 <= token[1] < c1)
      chance.append((r1 - r0) * (c1 - c0) / (rows * cols))
      right.append(correct(examples[i]))
  if not held:
    return {"questions": 0}
  held_arr, right_arr = np.asarray(held), np.asarray(right)
  return {"questions": len(held), "crop_holds_target": float(held_arr.mean()), "chance": float(np.mean(chance)),
          "accuracy_target_in_crop": _accuracy(right_arr, held_arr),
          "accuracy_target_outside_crop": _accuracy(right_arr, ~held_arr)}


def _fidelity_fn(pipe: Pipeline, prefix_ids: np.ndarray) -> Callable[[Any, np.ndarray], dict[str, float]]:
  """measure(batch, regions): train/distill.py's fidelity of the pipeline's TokenSR on a batch's target
  regions, compiled once (its layer loops run the decoder stacked, whatever the pipeline's layout)."""
  params = pipe.mode_params("tokensr")
  model, backbone = token_sr_teacher.stacked(pipe.model, {k: v for k, v in params.items() if k != "token_sr"})
  prefix = jnp.asarray(prefix_ids)
  run = jax.jit(lambda b, t, px, r: fidelity(model, pipe.blink, b, t, prefix, px, r))

  def measure(batch, regions: np.ndarray) -> dict[str, float]:
    out = run(backbone, params["token_sr"], jnp.asarray(batch.pixels), jnp.asarray(regions))
    return {k: float(v) for k, v in jax.device_get(out).items()}
  return measure
