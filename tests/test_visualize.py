"""The picture command writes a PNG with one heat map per scanning layer; TokenSR exports round-trip."""

import jax
import numpy as np
import pytest
from PIL import Image

import hf_fixtures
from blink_jax.blink.config import BlinkConfig, defaults_for
from blink_jax.blink.config import parse_overrides
from blink_jax.visualize_job import run
from blink_jax.checkpoint import export_token_sr, load_token_sr
from blink_jax.models.token_sr import init_token_sr


def test_visualize_writes_png_with_answers(blink_ckpt, tmp_path):
  photo = tmp_path / "rocket.png"
  Image.fromarray(hf_fixtures.sample_photos()["rocket"]).save(photo)
  blink = BlinkConfig(first_scan_layer=1, last_scan_layer=6, region_size=2, tau_exp=0.12, tau_drop=0.1,
                      max_regions=2, token_sr_channels=8)
  tsr = init_token_sr(blink.num_scan_layers, 8, 2, 64, jax.random.key(0))
  export_token_sr(tmp_path / "export", tsr, blink, width=64)
  out = tmp_path / "blink.png"
  answers = run(checkpoint=str(blink_ckpt), image=str(photo), question="what is in this image ?",
                out=str(out), token_sr=str(tmp_path / "export"), modes=["vanilla", "interp", "tokensr"],
                max_new_tokens=4, dtype="float32", blink_overrides=["tau_exp=0.13"])
  assert set(answers) == {"vanilla", "interp", "tokensr"}
  assert answers["interp"] == answers["tokensr"]  # untrained TokenSR is interpolation
  img = Image.open(out)
  assert img.size[0] > 5 * 224  # input + 4 heat maps per row
  assert np.asarray(img).std() > 10


def test_token_sr_export_round_trip_and_width_check(tmp_path):
  blink = BlinkConfig(first_scan_layer=1, last_scan_layer=3, region_size=2, token_sr_channels=4)
  tsr = init_token_sr(3, 4, 2, 16, jax.random.key(3))
  export_token_sr(tmp_path / "e", tsr, blink, width=16)
  back, blink_back = load_token_sr(tmp_path / "e", width=16)
  assert blink_back == blink
  jax.tree.map(np.testing.assert_array_equal, tsr, back)
  with pytest.raises(ValueError, match="trained for LLM width 16"):
    load_token_sr(tmp_path / "e", width=32)
  with pytest.raises(FileNotFoundError, match="not a TokenSR export"):
    load_token_sr(tmp_path, width=16)


def test_override_parsing():
  assert parse_overrides(["tau_exp=0.1", "position_ids=fractional", "max_regions=2"]) == {
      "tau_exp": 0.1, "position_ids": "fractional", "max_regions": 2}


def test_blink_defaults_carried_to_other_checkpoints():
  assert defaults_for(24, 32) == BlinkConfig()                  # LLaVA-1.5-7B: the spec's defaults
  assert (defaults_for(24, 40).first_scan_layer, defaults_for(24, 40).last_scan_layer) == (15, 22)


@pytest.mark.slow   # a second whole visualize run (the first: with an export and overrides)
def test_visualize_any_checkpoint_without_overrides(blink_ckpt, tmp_path):
  photo = tmp_path / "coffee.png"
  Image.fromarray(hf_fixtures.sample_photos()["coffee"]).save(photo)
  answers = run(checkpoint=str(blink_ckpt), image=str(photo), question="what is in this image ?",
                out=str(tmp_path / "b.png"), token_sr=None, modes=["vanilla", "interp", "tokensr"],
                max_new_tokens=2, dtype="float32", blink_overrides=[])
  assert set(answers) == {"vanilla", "interp"} and Image.open(tmp_path / "b.png").size[0] > 224
