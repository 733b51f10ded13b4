"""The work behind visualize.py: load, run each mode on one image + question, render the PNG."""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from etils import epath

from blink_jax.blink.config import RANDOM_MODEL_THRESHOLDS, parse_overrides
from blink_jax.blink.visualize import render
from blink_jax.checkpoint import DEFAULT_EXPORT
from blink_jax.data.image_preprocessing import load_image
from blink_jax.inference.pipeline import Pipeline

SAMPLE_QUESTION = "What colour is the cat's fur?"


def load(checkpoint: str, token_sr: str | None, blink_overrides: Sequence[str], dtype: str) -> Pipeline:
  """The checkpoint with Blink as its user expects it (Pipeline.with_blink_for_checkpoint), or with no
  checkpoint the embedded default's random model with train.py's default export, if it exists."""
  overrides = parse_overrides(blink_overrides)
  if checkpoint:
    pipe = Pipeline.from_hf(checkpoint, dtype=dtype)
  else:
    pipe = Pipeline.from_preset("tiny", dtype=dtype)
    overrides = {**RANDOM_MODEL_THRESHOLDS, **overrides}
    if token_sr is None and epath.Path(DEFAULT_EXPORT, "blink.json").exists():
      token_sr = DEFAULT_EXPORT
    print("no --checkpoint: the embedded default's random model (its answers are noise)"
          + (f", TokenSR from {token_sr}" if token_sr else ""))
  return pipe.with_blink_for_checkpoint(token_sr or None, overrides)


def run(*, checkpoint: str, image: str, question: str, out: str, token_sr: str | None,
        modes: Sequence[str], max_new_tokens: int, dtype: str, blink_overrides: Sequence[str]):
  if image and not question:
    raise ValueError(f"--image {image} needs a --question about it")
  pipe = load(checkpoint, token_sr, blink_overrides, dtype)
  if pipe.token_sr is None and "tokensr" in modes:
    modes = [m for m in modes if m != "tokensr"]
    print("no --token_sr given: showing vanilla and interp only")
  if image:
    img = load_image(image, name=image)
  else:
    from skimage import data
    img, question = load_image(data.chelsea()), question or SAMPLE_QUESTION
  answers = draw(pipe, img, question, out, modes, max_new_tokens)
  print(f"wrote {out}")
  for m, a in answers.items():
    print(f"{m}: {a}")
  return answers


def draw(pipe: Pipeline, image, question: str, out: str | epath.PathLike, modes: Sequence[str],
         max_new_tokens: int, caption: str = "") -> dict[str, str]:
  """Each mode's answer to `question` on `image` and Blink's trace (tokensr's if it is among the
  modes, else interp's) drawn to `out`; returns the answers. `caption` follows the question."""
  batch = pipe.prepare([image], [question])
  answers = {m: pipe.generate(batch, max_new_tokens, mode=m)[0] for m in modes}
  trace_mode = "tokensr" if "tokensr" in modes else "interp"
  trace = pipe.blink_forward(batch, mode=trace_mode, trace=True).trace
  one = {k: np.asarray(jax.device_get(v))[0] for k, v in trace._asdict().items()}
  picture = render(pipe.family.view(image, pipe.cfg, pipe.preprocessing), one, answers,
                   question=question + caption, first_scan_layer=pipe.blink.first_scan_layer,
                   region_size=pipe.blink.region_size)
  picture.save(str(out))
  return answers
