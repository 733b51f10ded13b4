"""The work behind visualize.py: load, run each mode on one image + question, render the PNG."""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from blink_jax.blink.config import parse_overrides
from blink_jax.blink.visualize import render
from blink_jax.data.image_preprocessing import load_image
from blink_jax.pipeline import Pipeline


def run(*, checkpoint: str, image: str, question: str, out: str, token_sr: str | None,
        modes: Sequence[str], max_new_tokens: int, dtype: str, blink_overrides: Sequence[str]):
  pipe = Pipeline.from_hf(checkpoint, dtype=dtype)
  if not token_sr and "tokensr" in modes:
    modes = [m for m in modes if m != "tokensr"]
    print("no --token_sr given: showing vanilla and interp only")
  pipe = pipe.with_blink_for_checkpoint(token_sr or None, parse_overrides(blink_overrides))
  blink = pipe.blink
  img = load_image(image, name=image)
  batch = pipe.prepare([img], [question])
  answers = {m: pipe.generate(batch, max_new_tokens, mode=m)[0] for m in modes}
  trace_mode = "tokensr" if "tokensr" in modes else "interp"
  trace = pipe.blink_forward(batch, mode=trace_mode, trace=True).trace
  one = {k: np.asarray(jax.device_get(v))[0] for k, v in trace._asdict().items()}
  picture = render(pipe.family.view(img, pipe.cfg, pipe.preprocessing), one, answers, question=question,
                   first_scan_layer=blink.first_scan_layer, region_size=blink.region_size)
  picture.save(out)
  print(f"wrote {out}")
  for m, a in answers.items():
    print(f"{m}: {a}")
  return answers
