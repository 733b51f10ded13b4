"""The paper's ablations as settings (BlinkConfig.region_choice, schedule, token_sr_arch): a random
choice takes random regions under the same trigger, a fixed schedule re-expands the top region at
every scanning layer whatever rho, an MLP TokenSR is per-token and starts as interpolation; each
runs through Blink's prefill and a TokenSR export."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hf_fixtures
from blink_jax.blink.config import BlinkConfig
from blink_jax.blink.dtr import BlockState, decide
from blink_jax.checkpoint import export_token_sr, load_token_sr
from blink_jax.inference.pipeline import Pipeline
from blink_jax.models.token_sr import TokenSRLayer, bilinear_2x, init_token_sr
from blink_jax.inference import token_sr_teacher

BASE = BlinkConfig(mode="interp", first_scan_layer=1, last_scan_layer=6, region_size=2, max_regions=1,
                   token_sr_channels=8)


def _shares(batch=256, regions=16, seed=0):
  return jnp.asarray(np.random.default_rng(seed).dirichlet(np.full(regions, 0.5), batch), jnp.float32)


def test_random_region_choice_draws_regions_under_the_same_trigger():
  shares = _shares()
  empty = BlockState.empty(shares.shape[0], 1)
  salient = decide(shares, empty, dataclasses.replace(BASE, tau_exp=0.0))
  drawn = decide(shares, empty, dataclasses.replace(BASE, tau_exp=0.0, region_choice="random"))
  assert bool(salient.expanded.all()) and bool(drawn.expanded.all())          # the same trigger
  np.testing.assert_array_equal(salient.state.region[:, 0], np.argmax(shares, axis=1))
  picked = np.asarray(drawn.state.region[:, 0])
  assert np.mean(picked == np.argmax(shares, axis=1)) < 0.25                  # not the salient one
  assert len(set(picked.tolist())) == 16                                      # every region drawn
  again = decide(shares, empty, dataclasses.replace(BASE, tau_exp=0.0, region_choice="random"))
  np.testing.assert_array_equal(again.state.region, drawn.state.region)      # reproducible
  alone = decide(shares[3:4], BlockState.empty(1, 1), dataclasses.replace(BASE, tau_exp=0.0, region_choice="random"))
  assert int(alone.state.region[0, 0]) == picked[3]                           # batched = alone
  never = decide(shares, empty, dataclasses.replace(BASE, tau_exp=1.0, tau_drop=0.0, region_choice="random"))
  assert not bool(never.expanded.any())                                       # no trigger, no region


def test_oracle_region_choice_expands_the_given_region_under_the_same_trigger():
  shares = _shares(batch=6)
  empty = BlockState.empty(6, 1)
  oracle = jnp.asarray([3, 0, 15, -1, 7, 7], jnp.int32)
  cfg = dataclasses.replace(BASE, tau_exp=0.0, region_choice="oracle")
  picked = np.asarray(decide(shares, empty, cfg, oracle=oracle).state.region[:, 0])
  np.testing.assert_array_equal(picked[[0, 1, 2, 4, 5]], [3, 0, 15, 7, 7])
  assert picked[3] == int(np.argmax(shares[3]))                              # -1: saliency's region
  never = decide(shares, empty, dataclasses.replace(cfg, tau_exp=1.0, tau_drop=0.0), oracle=oracle)
  assert not bool(never.expanded.any())
  with pytest.raises(ValueError, match="needs each example's target region"):
    decide(shares, empty, cfg)


def test_fixed_schedule_re_expands_the_top_regions_whatever_rho():
  shares = _shares(batch=8)
  cfg = dataclasses.replace(BASE, tau_exp=1.0, tau_drop=0.0, schedule="fixed", max_regions=2)
  first = decide(shares, BlockState.empty(8, 2), cfg)
  assert bool(first.expanded.all())
  top2 = np.argsort(-np.asarray(shares), axis=1)[:, :2]
  np.testing.assert_array_equal(np.sort(first.state.region, axis=1), np.sort(top2, axis=1))
  later = decide(_shares(batch=8, seed=1), first.state, cfg)
  assert bool(later.dropped.all()) and bool(later.expanded.all())
  assert not bool(decide(shares, BlockState.empty(8, 2), dataclasses.replace(cfg, schedule="dynamic")).expanded.any())


def test_mlp_token_sr_is_per_token_and_starts_as_interpolation(tmp_path):
  params = init_token_sr(2, 8, 2, 16, jax.random.key(0), arch="mlp")
  assert params["layers"]["layers"]["expand"]["kernel"].shape == (2, 1, 1, 8, 32)
  x = jax.random.normal(jax.random.key(1), (3, 2, 2, 16))
  layer = jax.tree.map(lambda a: a[0], params["layers"]["layers"])
  _, out = TokenSRLayer(8, arch="mlp").apply({"params": layer}, None, x)
  np.testing.assert_allclose(out, bilinear_2x(x), atol=1e-6)
  blink = dataclasses.replace(BASE, mode="tokensr", token_sr_arch="mlp", last_scan_layer=2)   # 2 layers
  export_token_sr(tmp_path / "export", params, blink, 16)
  loaded, trained_for = load_token_sr(tmp_path / "export", width=16)
  assert trained_for.token_sr_arch == "mlp"
  jax.tree.map(np.testing.assert_array_equal, loaded, params)


def test_ablations_run_through_blinks_prefill(blink_ckpt):
  pipe = Pipeline.from_hf(blink_ckpt, buckets=(96, 128))
  batch = pipe.prepare(list(hf_fixtures.sample_photos().values())[:2], ["what is in this image ?", "describe it"])
  fixed = pipe.with_blink(dataclasses.replace(BASE, tau_exp=1.0, tau_drop=0.0, schedule="fixed"))
  trace = fixed.blink_forward(batch, mode="interp", trace=True).trace
  assert bool(np.asarray(trace.expanded).all())          # every scanning layer, every example
  drawn = pipe.with_blink(dataclasses.replace(BASE, tau_exp=0.0, tau_drop=0.0, region_choice="random"))
  trace = drawn.blink_forward(batch, mode="interp", trace=True).trace
  first = np.asarray(trace.region)[:, 0, 0]               # the region each example expanded first
  assert bool(np.asarray(trace.expanded)[:, 0].all())
  assert (first != np.asarray(trace.shares)[:, 0].argmax(-1)).any()
  oracle = pipe.with_blink(dataclasses.replace(BASE, tau_exp=0.0, tau_drop=0.0, region_choice="oracle"))
  photo = list(hf_fixtures.sample_photos().values())[0]
  h, w = photo.shape[:2]
  middle = [w / 2 - 1, h / 2 - 1, w / 2 + 1, h / 2 + 1]
  assert oracle.target_region(photo, middle) == 4                 # a 6 x 6 grid of p = 2: 3 x 3 regions
  trace = oracle.blink_forward(batch, mode="interp", trace=True, targets=[middle, [0, 0, 2, 2]]).trace
  np.testing.assert_array_equal(np.asarray(trace.region)[:, :, 0], [[4] * 6, [0] * 6])


def test_unknown_ablation_settings_are_named():
  for field in ("region_choice", "schedule", "token_sr_arch", "sr_source"):
    with pytest.raises(ValueError, match=f"{field}='x'"):
      dataclasses.replace(BASE, **{field: "x"}).validate(6, 8)


def test_teacher_sr_source_writes_the_re_encoded_target_into_the_slots(blink_ckpt, monkeypatch):
  """sr_source="teacher" puts token_sr_teacher.teacher_tokens' layer-i tokens of the target into the slots a
  decision fills at scanning layer i: with a stand-in teacher that interpolates the target's own
  layer-i states (what interp writes), the prefill equals interp's; the real teacher changes it."""
  pipe = Pipeline.from_hf(blink_ckpt, buckets=(96, 128))
  photos = list(hf_fixtures.sample_photos().values())[:2]
  batch = pipe.prepare(photos, ["what is in this image ?", "describe it"])
  targets = [[0, 0, 2, 2], [photos[1].shape[1] - 2, photos[1].shape[0] - 2, photos[1].shape[1], photos[1].shape[0]]]
  # p = 3 on the fixture's 6 x 6 grid: the teacher's grid pools evenly to 2p x 2p
  oracle = dataclasses.replace(BASE, tau_exp=1.0, tau_drop=0.0, region_choice="oracle", schedule="fixed",
                               region_size=3)
  interp = pipe.with_blink(oracle).blink_forward(batch, mode="interp", targets=targets)
  teacher = pipe.with_blink(dataclasses.replace(oracle, sr_source="teacher"))
  real = teacher.blink_forward(batch, mode="interp", targets=targets)
  assert np.abs(np.asarray(real.logits) - np.asarray(interp.logits)).max() > 1e-3

  def interpolated_target(model, backbone, prefix_ids, pixels, region, blink):
    states, _ = token_sr_teacher.scan_layer_visual_states(model, backbone, prefix_ids, pixels, blink)
    n, b, _, d = states.shape
    grid, p = model.visual_grid(pixels.shape), blink.region_size
    r0, c0 = token_sr_teacher.region_corner(region, grid, p)
    take = jax.vmap(lambda g, y, x: jax.lax.dynamic_slice(g, (y, x, 0), (p, p, d)))
    return jax.vmap(lambda g: bilinear_2x(take(g, r0, c0)))(states.reshape(n, b, *grid, d))

  monkeypatch.setattr(token_sr_teacher, "teacher_tokens", interpolated_target)
  stand_in = pipe.with_blink(dataclasses.replace(oracle, sr_source="teacher")).blink_forward(
      batch, mode="interp", targets=targets)
  np.testing.assert_allclose(np.asarray(stand_in.logits), np.asarray(interp.logits), atol=2e-4)
  with pytest.raises(ValueError, match="sr_source='teacher'.*region_choice='oracle'"):
    dataclasses.replace(BASE, sr_source="teacher").validate(6, 8)
