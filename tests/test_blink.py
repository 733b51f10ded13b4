"""Blink's static-slot forward equals a literal dynamic-length reference; its modes relate as the spec
says; it compiles once per shape; batched Blink generation equals per-example generation."""

import dataclasses
import itertools

import jax
import numpy as np
import pytest

import hf_fixtures
from blink_jax.blink.config import BlinkConfig
from blink_jax.models.token_sr import TokenSRLayer, init_token_sr
from blink_jax.inference.pipeline import Pipeline
from blink_reference import reference_blink

BASE = BlinkConfig(mode="interp", first_scan_layer=1, last_scan_layer=6, region_size=2, max_regions=1,
                   token_sr_channels=8)
QUESTIONS = ["what is in this image ?", "describe it", "how many cat are there ?", "red or blue sky ?"]


@pytest.fixture(scope="module")
def pipe(blink_ckpt):
  return Pipeline.from_hf(blink_ckpt, buckets=(96, 128))


@pytest.fixture(scope="module")
def xla_pipe(blink_ckpt):
  """The same model with XLA's attention kernel (the accelerators' default; `pipe` gets the CPU's)."""
  return Pipeline.from_hf(blink_ckpt, buckets=(96, 128), attention="xla")


@pytest.fixture(scope="module")
def splash_pipe(blink_ckpt):
  """The same model with the TPU's splash kernel (Pallas interpret mode on CPU)."""
  return Pipeline.from_hf(blink_ckpt, buckets=(96, 128), attention="splash")


@pytest.fixture(scope="module")
def batch(pipe):
  return pipe.prepare(list(hf_fixtures.sample_photos().values()), QUESTIONS)


def _reference_all(pipe, blink, batch, params=None, sr_fn=None):
  out = []
  for i in range(len(batch.lengths)):
    n = int(batch.lengths[i])
    out.append(reference_blink(pipe.model, blink, params or pipe.params, batch.ids[i, :n],
                               batch.pixels[i], batch.image_start, sr_fn))
  return out


def _events(traces):
  """What happened across a batch: per-example decision signatures, drop-then-expand, both blocks live."""
  sigs = {(t["region"] * t["live"]).tobytes() + t["live"].tobytes() for _, t in traces}
  drop_then_expand = any(
      any(t["dropped"][i].any() and t["expanded"][j].any() for i in range(len(t["dropped"]))
          for j in range(i, len(t["expanded"])))
      for _, t in traces)
  full = any(t["live"].all(axis=1).any() for _, t in traces)
  return len(sigs), drop_then_expand, full


def _thresholds_with_events(pipe, blink, batch):
  """Searches (with the fast reference) thresholds under which the events under test really happen."""
  for tau_exp, tau_drop in itertools.product(np.arange(0.115, 0.17, 0.005), np.arange(0.08, 0.125, 0.005)):
    if tau_drop > tau_exp:
      continue
    cand = dataclasses.replace(blink, tau_exp=float(tau_exp), tau_drop=float(tau_drop))
    n_sigs, drop_expand, full = _events(_reference_all(pipe, cand, batch))
    if n_sigs >= 3 and drop_expand and (full or blink.max_regions == 1):
      return cand
  raise AssertionError("no thresholds make the required events happen on this model")


def _assert_matches_reference(pipe, blink, batch, out, refs):
  trace = jax.tree.map(np.asarray, out.trace)
  logits = np.asarray(out.logits)
  for i, (ref_logits, ref) in enumerate(refs):
    n = int(batch.lengths[i])
    np.testing.assert_array_equal(trace.live[i], ref["live"], err_msg=f"example {i}")
    np.testing.assert_array_equal(np.where(trace.live[i], trace.region[i], -1),
                                  np.where(ref["live"], ref["region"], -1), err_msg=f"example {i}")
    np.testing.assert_array_equal(trace.expanded[i], ref["expanded"])
    np.testing.assert_array_equal(trace.dropped[i], ref["dropped"])
    # The side-product saliency equals the one read off the explicit attention matrix.
    np.testing.assert_allclose(trace.saliency[i], ref["saliency"], atol=1e-6)
    np.testing.assert_allclose(logits[i, :n], ref_logits, atol=1e-5, err_msg=f"example {i}")


K2 = dict(max_regions=2, position_ids="fractional", after_scan="drop", saliency_norm="visual")


# The fast tier: K2 (two regions, fractional positions, drop, visual norm) on the CPU's kernel. The full
# tier: one region, and K2 on XLA's and the splash kernel (each equals the CPU's in test_attention_kernels).
@pytest.mark.parametrize("variant,pipe_name", [pytest.param(dict(max_regions=1), "pipe", marks=pytest.mark.slow),
                                                        (K2, "pipe"),
                                                        pytest.param(K2, "xla_pipe", marks=pytest.mark.slow),
                                                        pytest.param(K2, "splash_pipe", marks=pytest.mark.slow)])
def test_static_slots_equal_literal_reference(batch, variant, pipe_name, request):
  pipe = request.getfixturevalue(pipe_name)
  blink = _thresholds_with_events(pipe, dataclasses.replace(BASE, **variant), batch)
  out = pipe.with_blink(blink).blink_forward(batch, mode="interp", trace=True)
  refs = _reference_all(pipe, blink, batch)
  n_sigs, drop_expand, full = _events(refs)
  assert n_sigs >= 3 and drop_expand
  assert full or blink.max_regions == 1
  _assert_matches_reference(pipe, blink, batch, out, refs)


def test_trained_tokensr_path_equals_reference(pipe, batch):
  blink = _thresholds_with_events(pipe, dataclasses.replace(BASE, max_regions=2, mode="tokensr"), batch)
  tsr = init_token_sr(blink.num_scan_layers, 8, 2, pipe.cfg.text.hidden_size, jax.random.key(1))
  # Give the zero-initialised last conv weights, so TokenSR differs from interpolation.
  proj = tsr["layers"]["layers"]["project"]
  proj["kernel"] = 0.05 * jax.random.normal(jax.random.key(2), proj["kernel"].shape)
  sr_layer = TokenSRLayer(8)

  def sr_fn(j, grid):
    layer = jax.tree.map(lambda x: x[j], tsr["layers"]["layers"])
    _, out = sr_layer.apply({"params": layer}, None, np.asarray(grid, np.float32)[None])
    return np.asarray(out[0], np.float64)

  out = pipe.with_blink(blink, tsr).blink_forward(batch, mode="tokensr", trace=True)
  refs = _reference_all(pipe, blink, batch, sr_fn=sr_fn)
  _assert_matches_reference(pipe, blink, batch, out, refs)
  interp = pipe.with_blink(blink).blink_forward(batch, mode="interp")
  assert np.abs(np.asarray(out.logits) - np.asarray(interp.logits)).max() > 1e-3


def test_untrained_tokensr_equals_interp_and_no_expansion_equals_vanilla(pipe, batch):
  blink = dataclasses.replace(BASE, tau_exp=0.0, tau_drop=0.0, max_regions=2)
  p = pipe.with_blink(blink)
  interp = p.blink_forward(batch, mode="interp", trace=True)
  tokensr = p.blink_forward(batch, mode="tokensr")
  assert np.asarray(interp.trace.live).any()
  np.testing.assert_array_equal(np.asarray(interp.logits), np.asarray(tokensr.logits))
  never = pipe.with_blink(dataclasses.replace(blink, tau_exp=1.0))
  vanilla = np.asarray(pipe.logits(batch))
  quiet = np.asarray(never.blink_forward(batch, mode="interp").logits)
  for i, n in enumerate(batch.lengths):
    np.testing.assert_allclose(quiet[i, :n], vanilla[i, :n], atol=1e-5)
    assert np.abs(np.asarray(interp.logits)[i, :n] - vanilla[i, :n]).max() > 1e-3


def test_one_program_serves_every_expansion_pattern(pipe):
  blink = dataclasses.replace(BASE, tau_exp=0.13, tau_drop=0.1, max_regions=2)
  p = pipe.with_blink(blink)
  photos = list(hf_fixtures.sample_photos().values())
  patterns = set()
  for shift in range(4):
    qs = QUESTIONS[shift:] + QUESTIONS[:shift]
    b = p.prepare(photos[::-1] if shift % 2 else photos, [q + " cat" * shift for q in qs])
    trace = p.blink_forward(b, mode="interp", trace=True).trace
    patterns.add(np.asarray(trace.live).tobytes() + np.asarray(trace.region).tobytes())
  assert len(patterns) >= 3
  (fn,) = p._blink_fns.values()
  assert fn._cache_size() == 1


def test_blink_generation_batched_equals_alone(pipe, batch):
  blink = _thresholds_with_events(pipe, dataclasses.replace(BASE, max_regions=2), batch)
  p = pipe.with_blink(blink)
  trace = p.blink_forward(batch, mode="interp", trace=True).trace
  assert len({np.asarray(trace.live[i]).tobytes() + np.asarray(trace.region[i]).tobytes()
              for i in range(3)}) >= 2
  three = dataclasses.replace(batch, ids=batch.ids[:3], lengths=batch.lengths[:3], pixels=batch.pixels[:3])
  together = p.generate_tokens(three, max_new_tokens=6, mode="interp")
  for i in range(3):
    alone = p.prepare([list(hf_fixtures.sample_photos().values())[i]], [QUESTIONS[i]])
    np.testing.assert_array_equal(p.generate_tokens(alone, max_new_tokens=6, mode="interp")[0],
                                  together[i], err_msg=f"example {i}")
  assert not np.array_equal(together, p.generate_tokens(three, max_new_tokens=6))


def test_bad_blink_configs_name_the_field(pipe):
  with pytest.raises(ValueError, match="region_size=4 must divide both sides of the 6x6"):
    pipe.with_blink(dataclasses.replace(BASE, region_size=4))
  with pytest.raises(ValueError, match="scan layers 1..9"):
    pipe.with_blink(dataclasses.replace(BASE, last_scan_layer=9))
  with pytest.raises(ValueError, match="mode='fast'"):
    pipe.with_blink(dataclasses.replace(BASE, mode="fast"))
  from blink_jax.blink.config import from_mapping
  with pytest.raises(ValueError, match=r"unknown fields \['tau_expand'\]"):
    from_mapping({"tau_expand": 0.1})
