"""The decoder's two params layouts (models/layer_stack.py): per_layer params are the stacked layers,
and every inference path (logits, Blink's prefill, greedy generation in each mode, continuation
scores) gives the same numbers with either; 'auto' picks by platform and job."""


import jax
import numpy as np
import pytest

import hf_fixtures
from blink_jax.blink.config import BlinkConfig
from blink_jax.models import token_sr
from blink_jax.models.layer_stack import resolve_layout
from blink_jax.models.vision_language import text_layer_params
from blink_jax.inference.pipeline import Pipeline
from blink_jax.train.loop import check_settings
from configs import tokensr

BLINK = BlinkConfig(first_scan_layer=1, last_scan_layer=6, region_size=2, max_regions=1, token_sr_channels=8,
                    tau_exp=0.0, tau_drop=0.0)


@pytest.fixture(scope="module")
def pipes(blink_ckpt):
  stacked = Pipeline.from_hf(blink_ckpt, buckets=(96, 128), layer_layout="stacked")
  per_layer = Pipeline.from_hf(blink_ckpt, buckets=(96, 128), layer_layout="per_layer")
  tsr = token_sr.init_for(BLINK, stacked.cfg, jax.random.key(3))
  return stacked.with_blink(BLINK, tsr), per_layer.with_blink(BLINK, tsr)


@pytest.fixture(scope="module")
def batch(pipes):
  questions = ["what is in this image ?", "describe it", "how many cat are there ?", "red or blue sky ?"]
  return pipes[0].prepare(list(hf_fixtures.sample_photos().values()), questions)


def test_auto_is_per_layer_for_inference_on_cpu_only_and_training_stays_stacked():
  assert resolve_layout("auto", "cpu") == "per_layer"
  assert resolve_layout("auto", "tpu") == resolve_layout("auto", "gpu") == "stacked"
  assert resolve_layout("auto", "cpu", training=True) == "stacked"
  assert resolve_layout("stacked", "cpu") == "stacked"
  with pytest.raises(ValueError, match="for inference"):
    resolve_layout("per_layer", "cpu", training=True)
  with pytest.raises(ValueError, match="layer_layout='unrolled' is unknown"):
    resolve_layout("unrolled", "cpu")
  config = tokensr.get_config()
  config.model.layer_layout = "per_layer"
  with pytest.raises(ValueError, match="training scans its layers"):
    check_settings(config)


def test_per_layer_params_are_the_stacked_layers(pipes):
  stacked, per_layer = pipes
  assert stacked.cfg.layer_layout == "stacked" and per_layer.cfg.layer_layout == "per_layer"
  layers = per_layer.params["language_model"]["layers"]
  assert sorted(layers) == sorted(f"layer_{i}" for i in range(stacked.cfg.text.num_layers))
  for i in range(stacked.cfg.text.num_layers):
    jax.tree.map(np.testing.assert_array_equal, text_layer_params(per_layer.params, i),
                 text_layer_params(stacked.params, i))
  rest = lambda p: {k: v for k, v in p["language_model"].items() if k != "layers"}  # noqa: E731
  jax.tree.map(np.testing.assert_array_equal, rest(per_layer.params), rest(stacked.params))


def _blink_prefills_agree(pipes, batch, mode):
  """Blink's prefill (logits, regions, expansions) is the same from either layout."""
  a, b = (p.blink_forward(batch, mode, trace=True) for p in pipes)
  np.testing.assert_allclose(b.logits, a.logits, atol=2e-5, rtol=1e-5)
  np.testing.assert_array_equal(b.trace.region, a.trace.region)
  np.testing.assert_array_equal(b.expansions, a.expansions)
  assert int(np.asarray(a.expansions).sum()) > 0   # tau_exp = 0: the scanning layers expand


def test_logits_and_blink_prefill_agree_across_layouts(pipes, batch):
  stacked, per_layer = pipes
  np.testing.assert_allclose(per_layer.logits(batch), stacked.logits(batch), atol=2e-5, rtol=1e-5)
  _blink_prefills_agree(pipes, batch, "tokensr")


@pytest.mark.slow   # every mode's prefill, greedy generation and scores (the fast tier: the prefills)
@pytest.mark.parametrize("mode", ["vanilla", "interp", "tokensr"])
def test_generation_and_scores_agree_across_layouts(pipes, batch, mode):
  """Greedy tokens with their expansions, and the scores of those tokens as continuations, are the
  same from either layout."""
  if mode != "vanilla":
    _blink_prefills_agree(pipes, batch, mode)
  a, b = (p.generate_tokens(batch, max_new_tokens=6, mode=mode, with_expansions=True) for p in pipes)
  np.testing.assert_array_equal(b[0], a[0])
  np.testing.assert_array_equal(b[1], a[1])
  continuations = [list(row[:4]) for row in a[0]]
  sa, sb = (p.loglikelihood(batch, continuations, mode=mode) for p in pipes)
  np.testing.assert_allclose(sb.logprob, sa.logprob, atol=1e-4, rtol=1e-5)
  np.testing.assert_array_equal(sb.greedy, sa.greedy)
  assert sa.greedy.all()    # the continuation is each mode's own greedy output


def test_a_random_model_has_the_same_weights_in_either_layout():
  """train.py's default job trains TokenSR for the random preset (stacked) that eval.py evaluates
  (per_layer on CPU): one seed must give one model."""
  from blink_jax import backbone
  from blink_jax import sharding as shd
  config = tokensr.get_config()
  partitioner = shd.Partitioner.single_device()
  _, stacked = backbone.build(config.model, partitioner, 0, training=True)
  cfg, per_layer = backbone.build(config.model, partitioner, 0, training=False)
  assert cfg.layer_layout == "per_layer"
  for i in range(cfg.text.num_layers):
    jax.tree.map(np.testing.assert_array_equal, text_layer_params(per_layer, i), text_layer_params(stacked, i))
  rest = lambda p: {k: v for k, v in p.items() if k != "language_model"}  # noqa: E731
  jax.tree.map(np.testing.assert_array_equal, rest(per_layer), rest(stacked))
