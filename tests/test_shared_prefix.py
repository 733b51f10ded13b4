"""A batch's shared prompt prefix run once (models/shared_prefix.py, what training's steps do) gives the
one-pass prompt's numbers: the plain model's logits, and Blink's prefill's logits and decisions (its
slots' positions counted after the cached prefix), both families."""

import dataclasses

import jax
import numpy as np
import pytest

import hf_fixtures
from blink_jax.blink.config import BlinkConfig
from blink_jax.blink.prefill import blink_prefill
from blink_jax.inference.pipeline import Pipeline
from blink_jax.models.shared_prefix import logits_after_prefix

QUESTIONS = ["what is in this image ?", "describe it", "how many cats are there in the picture ?"]


@pytest.mark.parametrize("preset", ["tiny", "qwen2.5-vl-tiny"])
def test_the_prefix_run_once_equals_the_one_pass_prompt(preset):
  pipe = Pipeline.from_preset(preset)
  batch = pipe.prepare(list(hf_fixtures.sample_photos().values())[:3], QUESTIONS)
  p, lengths = batch.image_start, np.asarray(batch.lengths)
  args = (pipe.params, batch.ids, batch.pixels, batch.lengths)
  shared = np.asarray(jax.jit(logits_after_prefix, static_argnums=(0, 5))(pipe.model, *args, p))
  whole = np.asarray(pipe.logits(batch))
  assert p > 8 and shared.shape[1] == batch.ids.shape[1] - p
  for i, n in enumerate(lengths):
    np.testing.assert_allclose(shared[i, :n - p], whole[i, p:n], atol=2e-5)
  # Blink's prefill: saliency-driven expansions and a drop at the scanning layers, then the slots' tokens.
  blink = dataclasses.replace(BlinkConfig(mode="interp", first_scan_layer=1, last_scan_layer=4, region_size=2,
                                          max_regions=2, tau_exp=0.0, tau_drop=0.0),
                              position_ids="fractional").validate(pipe.model.visual_grid(batch.pixels.shape),
                                                                  pipe.cfg.text.num_layers)
  run = jax.jit(lambda shared_prefix, *a: blink_prefill(pipe.model, blink, *a, image_start=p, all_logits=True,
                                                        trace=True, shared_prefix=shared_prefix), static_argnums=0)
  once, one_pass = run(True, *args), run(False, *args)
  assert np.asarray(one_pass.trace.expanded).any()
  for field in ("region", "live", "expanded", "dropped"):
    np.testing.assert_array_equal(getattr(once.trace, field), getattr(one_pass.trace, field), err_msg=field)
  np.testing.assert_allclose(once.trace.saliency, one_pass.trace.saliency, atol=1e-6)
  for i, n in enumerate(lengths):
    np.testing.assert_allclose(np.asarray(once.logits)[i, :n - p], np.asarray(one_pass.logits)[i, p:n], atol=2e-5)
