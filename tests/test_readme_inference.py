"""The README's inference example, run as written: on the demo model (the line its comment offers,
Pipeline.from_preset) and on a LLaVA checkpoint the tests make (the README's path replaced by it),
over the tests' 8 devices (the mesh pads the example's two images). Scoring gives the same numbers whether
or not a generation ran before it on the pipeline (every mode runs: vanilla and interp generate, interp
traces, tokensr scores)."""

import pathlib
import re

import numpy as np
import pytest

from blink_jax.inference.pipeline import Pipeline

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
README_CKPT = '"/ckpts/llava-1.5-7b-hf"'


def _example() -> str:
  text = README.read_text()
  section = text[text.index("## Inference API"):]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _run(code: str) -> dict:
  namespace: dict = {}
  exec(compile(code, str(README), "exec"), namespace)   # noqa: S102 - the README's own code
  return namespace


def _check(ns: dict):
  assert ns["logits"].shape[0] == 2 and len(ns["texts"]) == 2
  assert ns["out"].trace is not None and ns["out"].logits.shape[0] == 2
  assert ns["scores"].logprob.shape == (2,) and np.isfinite(ns["scores"].logprob).all()
  assert ns["scores"].greedy.dtype == bool


def test_example_on_the_demo_model():
  code = _example()
  load = next(line for line in code.splitlines() if line.startswith("pipe = Pipeline.from_hf("))
  demo = re.search(r"# No checkpoint at hand\? (pipe = Pipeline\.from_preset\(.*?\)):", code).group(1)
  ns = _run(code.replace(load, demo))
  _check(ns)
  # tokensr on a pipeline that has run nothing yet (its first call initialises TokenSR, which once
  # failed under the mesh) scores as the example's pipeline does after generating in other modes.
  fresh = Pipeline.from_preset("tiny", partitioner=ns["partitioner"])
  first = fresh.loglikelihood(ns["batch"], [" Grey.</s>", " Coffee.</s>"], mode="tokensr")
  np.testing.assert_array_equal(first.logprob, ns["scores"].logprob)
  np.testing.assert_array_equal(first.expansions, ns["scores"].expansions)


@pytest.mark.slow   # the same run on a checkpoint's loading path (the fast tier runs it on the demo model)
def test_example_on_a_checkpoint(blink_ckpt):
  code = _example()
  assert README_CKPT in code
  _check(_run(code.replace(README_CKPT, repr(str(blink_ckpt)))))
