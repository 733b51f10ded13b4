"""The embedded default's images: the photographs scikit-image installs, written to a folder as JPEGs
with deterministic crops and flips so a small model has a few dozen distinct images to learn from,
and a questions.jsonl asking about half of them."""

from __future__ import annotations

import json

import numpy as np
from etils import epath
from PIL import Image

PHOTOS = ("astronaut", "camera", "cat", "chelsea", "coffee", "coins", "hubble_deep_field",
          "immunohistochemistry", "rocket", "retina", "page", "moon", "horse", "brick", "grass",
          "gravel", "colorwheel", "text", "clock")


def write_sample_images(folder: str | epath.PathLike, count: int = 64, seed: int = 0) -> list[str]:
  """Writes `count` JPEGs (variants of the scikit-image photographs) into folder; returns their names."""
  from skimage import data
  folder = epath.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  photos = []
  for name in PHOTOS:
    arr = getattr(data, name)()
    if arr.ndim == 2:
      arr = np.stack([arr] * 3, axis=-1)
    photos.append((name, np.ascontiguousarray(arr[..., :3]).astype(np.uint8)))
  names = []
  for i in range(count):
    name, arr = photos[i % len(photos)]
    if i >= len(photos):  # a random crop (>= half of each side) and maybe a flip
      h, w = arr.shape[:2]
      ch, cw = rng.integers(h // 2, h + 1), rng.integers(w // 2, w + 1)
      y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
      arr = arr[y:y + ch, x:x + cw]
      if rng.random() < 0.5:
        arr = arr[:, ::-1]
    fname = f"{i:04d}_{name}.jpg"
    with (folder / fname).open("wb") as f:
      Image.fromarray(np.ascontiguousarray(arr)).save(f, format="JPEG", quality=90)
    names.append(fname)
  # Half of the images get a question, so the default job trains on saliency-guided regions too.
  asks = ("What is in the centre of the image?", "What colour is the largest object?",
          "Is there any text in the picture?", "What is at the top left?")
  (folder / "questions.jsonl").write_text("".join(
      json.dumps({"image": n, "question": asks[i % len(asks)]}) + "\n" for i, n in enumerate(names) if i % 2 == 0))
  return names
