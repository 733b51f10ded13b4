"""Greedy generation mechanics: EOS stops an example, buckets bound compilations."""

import dataclasses

import jax
import numpy as np

import hf_fixtures
from blink_jax.inference.pipeline import Pipeline


def _batch(pipe, n_words):
  photos = list(hf_fixtures.sample_photos().values())
  questions = [hf_fixtures.long_question(n, seed=n) for n in n_words]
  return pipe.prepare([photos[i % len(photos)] for i in range(len(questions))], questions)


def test_eos_stops_each_example_on_its_own(mha_ckpt):
  pipe = Pipeline.from_hf(mha_ckpt, buckets=(64, 128))
  batch = _batch(pipe, [3, 10, 20])
  free = pipe.generate_tokens(batch, max_new_tokens=6)
  eos = int(free[0, 2])  # pretend the third token of example 0 is EOS
  pipe_eos = Pipeline(dataclasses.replace(pipe.cfg, eos_token_id=eos), pipe.params, pipe.tokenizer,
                           pipe.partitioner, buckets=pipe.buckets)
  out = pipe_eos.generate_tokens(batch, max_new_tokens=6)
  for i in range(3):
    row = list(free[i])
    stop = row.index(eos) if eos in row else len(row)
    np.testing.assert_array_equal(out[i, :stop + 1], free[i, :stop + 1])
    assert (out[i, stop + 1:] == pipe.cfg.pad_token_id).all()
  assert pipe_eos.decode(out)[0] == pipe.tokenizer.decode(free[0, :2])


def test_prompt_stream_compiles_once_per_bucket(mha_ckpt):
  pipe = Pipeline.from_hf(mha_ckpt, buckets=(64, 128, 256))
  lengths_seen = set()
  for n in [1, 4, 9, 30, 44, 70, 100, 2, 55, 150]:
    batch = _batch(pipe, [n, max(1, n // 2)])
    lengths_seen.add(batch.ids.shape[1])
    pipe.generate_tokens(batch, max_new_tokens=3)
  (fn,) = pipe._generate_fns.values()
  assert lengths_seen == {64, 128, 256}
  assert fn._cache_size() == 3


def test_bfloat16_load_and_run(gqa_ckpt):
  pipe = Pipeline.from_hf(gqa_ckpt, dtype="bfloat16")
  leaf = pipe.params["language_model"]["embed_tokens"]["embedding"]
  assert leaf.dtype == jax.numpy.bfloat16
  ref = Pipeline.from_hf(gqa_ckpt)
  batch = _batch(ref, [5, 12])
  out = np.asarray(pipe.logits(batch)).astype(np.float32)
  full = np.asarray(ref.logits(batch))
  n = int(batch.lengths.min())
  assert np.isfinite(out).all()
  # bf16 keeps the arg-max on a peaky random model and stays within bf16 rounding of f32.
  assert (out[:, :n].argmax(-1) == full[:, :n].argmax(-1)).mean() > 0.9
