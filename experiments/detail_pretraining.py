"""The fine-detail experiment's first stage: the vision encoder pretrained, densely, on the task's
details, as a vision encoder is pretrained before LLaVA's instruction tuning.

Fine-tuned from random init on the question-answer pairs alone, the model's encoder does not learn to
read the details (a linear readout of a fine-tuned encoder's target tokens finds digits and counts at
chance). This stage trains the encoder (the model's vision tower and a linear head dropped after) to
say at every visual token which detail the token holds: a dot's colour, a digit, a count of dots, or
none (from the train split's boxes and answers); on the image and on the windows of a half and a
quarter of its side that hold the detail, seen at 2x and 4x (at 4x, the 2 x 2-token region TokenSR's
teacher re-encodes), so that it can read a detail better when it sees it larger. Its readout on the
validation splits of each detail size, per view scale, is the learnability curve at the encoder: what
more pixels a token could give the model at most.

The stage writes the whole model's params (the pretrained vision tower; projector and LLM as the
seed initialises them) as an export that fine-tuning starts from (`model.params`), and the curve.
"""

from __future__ import annotations

import json
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from PIL import Image
from tqdm import tqdm

from blink_jax import families
from blink_jax.checkpoint import export_model
from blink_jax.data import fine_detail
from blink_jax.data.image_preprocessing import load_image, preprocess_image
from blink_jax.models import presets
from blink_jax.train.state import flatten

# Every detail the head tells apart (class 0: no detail at this token).
ANSWERS = {"dot_colour": fine_detail.DOT_COLOURS, "digit": tuple("0123456789"), "count": ("1", "2", "3", "4")}
CLASS = {(category, answer): 1 + i for i, (category, answer) in
         enumerate((c, a) for c, answers in ANSWERS.items() for a in answers)}
SCALES = (1, 2, 4)          # the views: the image, and windows of a half and a quarter of its side
SCALE_SHARE = (0.5, 0.25, 0.25)
DETAIL_WEIGHT = 10.0         # a token holding a detail weighs this many tokens without one in the loss


def view(image: Image.Image, box, scale: int):
  """The image seen at `scale`: the window of 1/scale of its side, on the grid of such windows, that
  holds the box's centre (at 4x with 2 x 2-token regions, the region Blink's oracle expands, as
  TokenSR's teacher re-encodes it), resized to the image's size; and the box in the view's pixels."""
  size = image.size[0]
  if scale == 1:
    return image, list(box)
  side = size // scale
  x0, y0, x1, y1 = box
  cx = min(int((x0 + x1) / 2) // side, scale - 1) * side
  cy = min(int((y0 + y1) / 2) // side, scale - 1) * side
  crop = image.crop((cx, cy, cx + side, cy + side)).resize((size, size), Image.Resampling.BICUBIC)
  return crop, [(x0 - cx) * scale, (y0 - cy) * scale, (x1 - cx) * scale, (y1 - cy) * scale]


def token_labels(box, label: int, size: int, grid: int) -> np.ndarray:
  """[grid * grid] int32: `label` at every visual token the box overlaps (raster order), 0 elsewhere."""
  unit = size / grid
  starts = np.arange(grid) * unit
  x0, y0, x1, y1 = box
  columns = (np.minimum(x1, starts + unit) > np.maximum(x0, starts))
  rows = (np.minimum(y1, starts + unit) > np.maximum(y0, starts))
  return (rows[:, None] & columns[None, :]).reshape(-1).astype(np.int32) * label


def _label(row: dict) -> int:
  return CLASS.get((row["category"], row["answer"]), 0)      # the control's images hold no detail


def _batch(images: list[Image.Image], rows: list[dict], scales, size: int, grid: int):
  pixels, labels = [], []
  for image, row, scale in zip(images, rows, scales):
    seen, box = view(image, row["box"], int(scale))
    pixels.append(preprocess_image(seen, size))
    labels.append(token_labels(box, _label(row), size, grid))
  return np.stack(pixels), np.stack(labels)


def _read(data: epath.Path, split: str) -> tuple[list[dict], list[Image.Image]]:
  rows = [json.loads(line) for line in (data / f"{split}.jsonl").read_text().splitlines()]
  return rows, [load_image(str(data / "images" / r["image"])) for r in rows]


class Readout:
  """The vision tower of a preset's model with a linear head over its tokens: pixels -> per-token
  detail logits."""

  def __init__(self, preset: str, seed: int):
    cfg = presets.get(preset)
    self.model = families.of_config(cfg).model(cfg.replace(layer_layout="stacked"))
    self.params = nn.meta.unbox(self.model.init(jax.random.key(seed), *self.model.init_args())["params"])
    self.size, self.grid = cfg.vision.image_size, cfg.vision.grid
    width = cfg.vision.hidden_size
    self.head = {"w": jnp.zeros((width, len(CLASS) + 1)), "b": jnp.zeros((len(CLASS) + 1,))}
    self.logits_jit = jax.jit(self.logits)

  def logits(self, trained: dict, pixels):
    tokens = self.model.apply({"params": {"vision_tower": trained["vision_tower"]}}, pixels,
                              method=lambda m, x: m.vision_tower(x))
    return tokens @ trained["head"]["w"] + trained["head"]["b"]


def pretrain(readout: Readout, data: epath.Path, steps: int, batch: int, lr: float, seed: int):
  """Trains the tower and head on the train split's images, each seen at a random scale; returns
  (trained, losses)."""
  rows, images = _read(data, "train")
  trained = {"vision_tower": readout.params["vision_tower"], "head": readout.head}
  opt = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.1))

  @jax.jit
  def step(trained, opt_state, pixels, labels):
    def loss(trained):
      ce = optax.softmax_cross_entropy_with_integer_labels(readout.logits(trained, pixels), labels)
      w = jnp.where(labels > 0, DETAIL_WEIGHT, 1.0)
      return (ce * w).sum() / w.sum()
    value, grads = jax.value_and_grad(loss)(trained)
    updates, opt_state = opt.update(grads, opt_state, trained)
    return optax.apply_updates(trained, updates), opt_state, value

  rng = np.random.default_rng([seed, 7])
  opt_state, losses = opt.init(trained), {}
  for i in tqdm(range(1, steps + 1), desc="pretraining the encoder on the details", leave=False):
    pick = rng.integers(0, len(rows), batch)
    scales = rng.choice(SCALES, size=batch, p=SCALE_SHARE)
    pixels, labels = _batch([images[j] for j in pick], [rows[j] for j in pick], scales, readout.size,
                            readout.grid)
    trained, opt_state, value = step(trained, opt_state, pixels, labels)
    if i % max(1, steps // 10) == 0 or i == steps:
      losses[i] = round(float(value), 4)
  return trained, losses


def readout_accuracy(readout: Readout, trained: dict, rows: list[dict], images: list[Image.Image],
                     scale: int) -> dict[str, float]:
  """Per detail sub-task, % of the questions (rows and their images) whose detail the head reads right
  at its tokens (the mean of their logits over the sub-task's answers), each image seen at `scale`."""
  keep = [i for i, r in enumerate(rows) if r["category"] in ANSWERS]
  right: dict[str, list[bool]] = {c: [] for c in ANSWERS}
  for start in range(0, len(keep), 64):
    chunk = keep[start:start + 64]
    pixels, labels = _batch([images[i] for i in chunk], [rows[i] for i in chunk], [scale] * len(chunk),
                            readout.size, readout.grid)
    logits = np.asarray(readout.logits_jit(trained, pixels))
    for i, lg, lab in zip(chunk, logits, labels):
      category = rows[i]["category"]
      first = min(CLASS[(category, a)] for a in ANSWERS[category])
      scores = lg[lab > 0][:, first:first + len(ANSWERS[category])].mean(0)
      right[category].append(ANSWERS[category][int(scores.argmax())] == rows[i]["answer"])
  return {c: round(100 * float(np.mean(v)), 1) for c, v in right.items() if v}


def run(workdir: epath.Path, data: epath.Path, curve_px, preset: str, seed: int, steps: int, batch: int,
        lr: float) -> dict[str, Any]:
  """The stage for one seed of the preset's model, in workdir: export/model (the model's params to fine-tune from) and
  summary.json ({loss, curve: {px: {scale: {sub-task: accuracy %}}}}, on data/curve/<px>px's
  validation split); a rerun of a finished stage returns its summary."""
  summary = workdir / "summary.json"
  if summary.exists():
    return json.loads(summary.read_text())
  readout = Readout(preset, seed)
  trained, losses = pretrain(readout, data, steps, batch, lr, seed)
  export_model(workdir / "export" / "model", flatten({**readout.params, "vision_tower": trained["vision_tower"]}))
  curve = {}
  for px in curve_px:
    rows, images = _read(data / "curve" / f"{px}px", "validation")
    curve[str(px)] = {str(scale): readout_accuracy(readout, trained, rows, images, scale) for scale in SCALES}
  result = {"steps": steps, "loss": losses, "curve": curve}
  summary.write_text(json.dumps(result, indent=2))
  return result
