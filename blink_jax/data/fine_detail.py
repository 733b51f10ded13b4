"""A synthetic fine-detail VQA task with known ground truth, generated deterministically (seeded): the
answer hinges on a detail smaller than one visual token at the model's base resolution, while the
question names something visible at low resolution (so attention can find the region). Every example
stores the target's box, so each link of Blink (where saliency looks, what gets expanded) can be
measured against the truth.

Sub-tasks (`category`):
- `dot_colour`: "What colour is the small dot inside the green circle?" (a dot of `detail_px`)
- `digit`: "Which digit is inside the red frame?" (a digit `detail_px` high in a small frame)
- `count`: "How many small dots are inside the blue square?" (1 - 4 dots of `detail_px / 2`)
- `control`: "What colour is the largest shape?" (answerable at any resolution: Blink should neither
  help nor hurt)

Written in LLaVA's eval layout, which eval.py reads as the `fine_detail` benchmark:
`<out>/<split>.jsonl` (question_id, image, text, answer, category, box = [x0, y0, x1, y1] in the
image's pixels) and `<out>/images/<split>/`. Splits: train, validation, test (disjoint seeds).

  python -m blink_jax.data.fine_detail --out data/fine_detail [--image_size 336 --detail_px 6 --per_split 200,100,200]
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
from absl import app, flags
from etils import epath
from PIL import Image, ImageDraw

CATEGORIES = ("dot_colour", "digit", "count", "control")
SPLITS = ("train", "validation", "test")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 80, 220), "yellow": (240, 210, 40),
           "white": (250, 250, 250), "black": (15, 15, 15)}
SHAPE_COLOURS = ("red", "green", "blue", "yellow")     # what the large shapes are (named in questions)
DOT_COLOURS = ("red", "green", "blue", "yellow", "white", "black")
SHAPES = ("square", "circle", "triangle")
# 3 x 5 bitmaps of the digits, scaled to the detail's size.
DIGITS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111",
}
SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: tuple[int, int, int, int], colour: tuple[int, ...]):
  x0, y0, x1, y1 = box
  if kind == "square":
    draw.rectangle(box, fill=colour)
  elif kind == "circle":
    draw.ellipse(box, fill=colour)
  else:
    draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)


def _layout(rng: np.random.Generator, size: int, scales: list[float]) -> list[tuple[int, int, int, int]]:
  """Non-overlapping square boxes of `scales` x size each, in distinct quadrants of the image."""
  boxes = []
  for c, scale in zip(rng.permutation(4), scales):
    side = int(size * scale)
    qx, qy = (c % 2) * size // 2, (c // 2) * size // 2
    slack = size // 2 - side
    x, y = int(qx + rng.integers(0, max(1, slack))), int(qy + rng.integers(0, max(1, slack)))
    boxes.append((x, y, x + side, y + side))
  return boxes


def _spot(rng: np.random.Generator, box, kind: str, d: int) -> tuple[int, int]:
  """A top-left corner for a d x d detail well inside a shape's box (inside a triangle's lower middle)."""
  x0, y0, x1, y1 = box
  cx, cy = (x0 + x1) // 2, (y0 + y1) // 2 + (y1 - y0) // 6 * (kind == "triangle")
  jitter = max(1, (x1 - x0) // 8)
  return cx - d // 2 + int(rng.integers(-jitter, jitter + 1)), cy - d // 2 + int(rng.integers(-jitter, jitter + 1))


def example(rng: np.random.Generator, category: str, size: int, detail_px: int,
            shapes: int = 3) -> tuple[Image.Image, dict]:
  """One image and its question, answer and target box; a detail sub-task draws `shapes` large shapes
  (1 - 3), the detail in one of them (with one, the question still names it but need not tell it
  from others)."""
  if not 1 <= shapes <= 3:
    raise ValueError(f"shapes={shapes}; expected 1, 2 or 3 large shapes per image")
  img = Image.new("RGB", (size, size), (128, 128, 128))
  noise = rng.integers(-12, 13, (size, size, 3))
  img = Image.fromarray(np.clip(np.asarray(img, np.int16) + noise, 0, 255).astype(np.uint8))
  draw = ImageDraw.Draw(img)
  d = detail_px
  colours = [SHAPE_COLOURS[i] for i in rng.permutation(len(SHAPE_COLOURS))[:3]]
  kinds = [SHAPES[i] for i in rng.integers(0, len(SHAPES), 3)]
  if category == "control":
    big = int(rng.integers(0, 3))
    boxes = _layout(rng, size, [0.44 if i == big else 0.22 for i in range(3)])
    for kind, colour, box in zip(kinds, colours, boxes):
      _draw_shape(draw, kind, box, COLOURS[colour])
    return img, {"text": "What colour is the largest shape?", "answer": colours[big], "box": list(boxes[big])}
  boxes = _layout(rng, size, [0.34] * shapes)
  for kind, colour, box in zip(kinds, colours, boxes):
    _draw_shape(draw, kind, box, COLOURS[colour])
  target = int(rng.integers(0, shapes))
  name = f"{colours[target]} {kinds[target]}"
  x, y = _spot(rng, boxes[target], kinds[target], d)
  if category == "dot_colour":
    dot = [c for c in DOT_COLOURS if c != colours[target]][int(rng.integers(0, len(DOT_COLOURS) - 1))]
    draw.ellipse((x, y, x + d - 1, y + d - 1), fill=COLOURS[dot])
    return img, {"text": f"What colour is the small dot inside the {name}?", "answer": dot,
                 "box": [x, y, x + d, y + d]}
  if category == "digit":
    digit = str(int(rng.integers(0, 10)))
    w = max(3, (d * 3) // 5)
    pad = max(1, d // 4)
    frame = (x - pad, y - pad, x + w + pad, y + d + pad)
    draw.rectangle(frame, fill=(250, 250, 250), outline=COLOURS[colours[target]])
    bits = np.array([int(b) for b in DIGITS[digit]], np.uint8).reshape(5, 3)
    glyph = Image.fromarray((1 - bits) * 255).resize((w, d), Image.Resampling.NEAREST)
    img.paste(Image.merge("RGB", [glyph] * 3), (x, y))
    return img, {"text": f"Which digit is inside the frame in the {name}?", "answer": digit, "box": list(frame)}
  if category == "count":
    n = int(rng.integers(1, 5))
    r = max(1, d // 2)
    spots = [(x + (i % 2) * (r + 2), y + (i // 2) * (r + 2)) for i in range(n)]
    for sx, sy in spots:
      draw.rectangle((sx, sy, sx + r - 1, sy + r - 1), fill=COLOURS["black"])
    return img, {"text": f"How many small dots are inside the {name}?", "answer": str(n),
                 "box": [x, y, x + 2 * r + 2, y + 2 * r + 2]}
  raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")


def write(out: str | epath.PathLike, *, image_size: int = 336, detail_px: int | Sequence[int] = 6,
          per_split: tuple[int, int, int] = (200, 100, 200), seed: int = 0, shapes: int = 3) -> dict[str, int]:
  """Writes the splits asked for (a split of 0 questions is not written; questions cycle through the
  categories); returns questions per split. `detail_px`: one size, or sizes each example draws from
  (uniformly, seeded), e.g. a training split from large to small details; each row records its own.
  `shapes`: large shapes in a detail sub-task's image (see `example`).
  Each split's images go to images/<split>/ beside a questions.jsonl ({"image", "question"}: what
  train.py's image-folder source reads for saliency-guided distillation regions)."""
  out = epath.Path(out)
  sizes = [detail_px] if isinstance(detail_px, int) else [int(d) for d in detail_px]
  counts = {}
  for split, n in zip(SPLITS, per_split):
    if not n:
      continue
    folder = out / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, SPLIT_SEEDS[split], image_size, *sizes])
    rows: list[dict[str, Any]] = []
    for i in range(n):
      category = CATEGORIES[i % len(CATEGORIES)]
      size = sizes[int(rng.integers(0, len(sizes)))] if len(sizes) > 1 else sizes[0]
      img, row = example(rng, category, image_size, size, shapes)
      name = f"{split}_{i:05d}.png"
      img.save(folder / name)
      rows.append({"question_id": f"{split}_{i:05d}", "image": f"{split}/{name}", "category": category,
                   "detail_px": size, **row})
    (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "questions.jsonl").write_text("".join(
        json.dumps({"image": r["image"].split("/", 1)[1], "question": r["text"]}) + "\n" for r in rows))
    counts[split] = n
  return counts


def define_flags(fv):
  """The command's flags (on `fv`; defined only when the module runs as a script)."""
  flags.DEFINE_string("out", None, "Output folder.", required=True, flag_values=fv)
  flags.DEFINE_integer("image_size", 336, "Image side in pixels.", flag_values=fv)
  flags.DEFINE_list("detail_px", ["6"], "The detail's size in pixels, or sizes each example draws from.",
                    flag_values=fv)
  flags.DEFINE_list("per_split", ["200", "100", "200"], "Questions in train, validation, test.", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed.", flag_values=fv)
  flags.DEFINE_integer("shapes", 3, "Large shapes in a detail sub-task's image (1 - 3).", flag_values=fv)


def main(_):
  f = flags.FLAGS
  counts = write(f.out, image_size=f.image_size, detail_px=[int(d) for d in f.detail_px],
                 per_split=tuple(int(n) for n in f.per_split), seed=f.seed, shapes=f.shapes)
  print(f"wrote {counts} to {f.out}")


if __name__ == "__main__":
  define_flags(flags.FLAGS)
  app.run(main)
