"""Pipeline.loglikelihood: vanilla equals transformers' log-probabilities on the same checkpoint;
the greedy flag agrees with generation in every mode; Blink scores against its own prefill."""

import dataclasses

import numpy as np
import pytest
import torch
from transformers import LlavaForConditionalGeneration

import hf_fixtures
from blink_jax.blink.config import BlinkConfig
from blink_jax.inference.pipeline import Pipeline

QUESTIONS = ["what is in this image ?", "describe it", hf_fixtures.long_question(120)]
CONTINUATIONS = [" red cat</s>", " a dog on the left", " yes</s>"]


def _images():
  photos = hf_fixtures.sample_photos()
  return [photos["chelsea"], photos["coffee"], photos["rocket"]]


def test_vanilla_equals_transformers_log_probs(gqa_ckpt):
  hf = LlavaForConditionalGeneration.from_pretrained(gqa_ckpt, dtype=torch.float32).eval()
  pipe = Pipeline.from_hf(gqa_ckpt, buckets=(64, 128, 256))
  batch = pipe.prepare(_images(), QUESTIONS)
  scores = pipe.loglikelihood(batch, CONTINUATIONS)
  for i, (text, cont) in enumerate(zip(batch.texts, CONTINUATIONS)):
    n = int(batch.lengths[i])
    whole = pipe.tokenizer.encode_prompt(text + cont, pipe.cfg.num_image_tokens)
    np.testing.assert_array_equal(whole[:n], batch.ids[i, :n])
    target = whole[n:]
    assert len(target) >= 2
    with torch.no_grad():
      px = torch.from_numpy(batch.pixels[i:i + 1]).permute(0, 3, 1, 2)
      logits = hf(input_ids=torch.from_numpy(whole[None].astype(np.int64)), pixel_values=px).logits[0]
    logp = torch.log_softmax(logits[n - 1:-1].double(), -1).numpy()
    ref = logp[np.arange(len(target)), target].sum()
    assert abs(scores.logprob[i] - ref) < 1e-3, (i, scores.logprob[i], ref)
    assert bool(scores.greedy[i]) == bool((logp.argmax(-1) == target).all())


@pytest.mark.parametrize("mode", [pytest.param("vanilla", marks=pytest.mark.slow),
                                  pytest.param("interp", marks=pytest.mark.slow), "tokensr"])
def test_greedy_flag_agrees_with_generation(blink_ckpt, mode):
  """A mode's own greedy tokens score as greedy, with the summed log-probability of its arg-maxes;
  change one token and the continuation is no longer greedy, and less likely."""
  blink = BlinkConfig(first_scan_layer=1, last_scan_layer=6, region_size=2, token_sr_channels=8, tau_exp=0.0,
                        tau_drop=0.0)
  pipe = Pipeline.from_hf(blink_ckpt, buckets=(96, 128, 192)).with_blink(blink)
  batch = pipe.prepare(_images(), QUESTIONS[:2] + ["how many cat are there ?"])
  tokens, expansions = pipe.generate_tokens(batch, max_new_tokens=5, mode=mode, with_expansions=True)
  # Score up to EOS (inclusive) when one is generated.
  conts = [list(t[:list(t).index(pipe.cfg.eos_token_id) + 1]) if pipe.cfg.eos_token_id in t else list(t)
           for t in tokens]
  scores = pipe.loglikelihood(batch, conts, mode=mode)
  assert scores.greedy.all(), scores
  np.testing.assert_array_equal(scores.expansions, expansions)
  if mode != "vanilla":
    assert (scores.expansions > 0).all()
  changed = [c[:-1] + [(c[-1] + 1) % pipe.cfg.text.vocab_size] for c in conts]
  worse = pipe.loglikelihood(batch, changed, mode=mode)
  assert not worse.greedy.any()
  assert (worse.logprob < scores.logprob).all()


@pytest.mark.slow
def test_blink_without_expansion_scores_as_vanilla(blink_ckpt):
  """tokensr (untrained: interp's path, test_blink.py) that never expands scores as vanilla (a fresh
  pipeline: test_readme_inference.py scores tokensr first under a mesh in the fast tier)."""
  never = BlinkConfig(first_scan_layer=1, last_scan_layer=6, region_size=2, token_sr_channels=8, tau_exp=1.0)
  pipe = Pipeline.from_hf(blink_ckpt, buckets=(96, 128, 256)).with_blink(never)
  batch = pipe.prepare(_images(), QUESTIONS)
  tokensr = pipe.loglikelihood(batch, CONTINUATIONS, mode="tokensr")
  vanilla = pipe.loglikelihood(batch, CONTINUATIONS)
  assert (tokensr.expansions == 0).all()
  np.testing.assert_allclose(tokensr.logprob, vanilla.logprob, atol=1e-4)


def test_text_continuations_need_the_prompt_text(mha_ckpt):
  pipe = Pipeline.from_hf(mha_ckpt)
  batch = pipe.prepare(_images()[:1], QUESTIONS[:1])
  with pytest.raises(ValueError, match="do not carry|does not carry"):
    pipe.loglikelihood(dataclasses.replace(batch, texts=None), [" red"])
  with pytest.raises(ValueError, match="2 continuations for a batch of 1"):
    pipe.loglikelihood(batch, [" red", " blue"])
