"""Blink's links measured against ground-truth boxes: a box's centre maps to the visual token that sees
it under each family's preprocessing, and eval.py's diagnostics report per scanning layer where the
saliency looked, what Blink expanded and dropped, and accuracy split by whether the target was expanded."""

import json

import pytest

from blink_jax import families
from blink_jax.eval import runner
from blink_jax.models import presets
from test_eval import _config


def test_a_pixel_maps_to_the_token_that_sees_it():
  llava, cfg = families.FAMILIES["llava"], presets.get("llava-1.5-7b")          # 336 px, 24 x 24 tokens
  # 200 x 100 (width x height): padded to a 200-px square (50 px above), or cropped to its middle 100 px.
  assert llava.token_at(100, 50, 100, 200, cfg, "pad") == (12, 12)
  assert llava.token_at(0, 0, 100, 200, cfg, "pad") == (6, 0)
  assert llava.token_at(100, 50, 100, 200, cfg, "crop") == (12, 12)
  assert llava.token_at(10, 50, 100, 200, cfg, "crop") is None                   # cropped away
  qwen, qcfg = families.FAMILIES["qwen2_5_vl"], presets.get("qwen2.5-vl-7b")
  rows, cols = (s // qcfg.vision.unit for s in qwen.resized_shape(600, 900, qcfg, "buckets"))
  assert qwen.token_at(899, 599, 600, 900, qcfg, "buckets") == (rows - 1, cols - 1)
  assert qwen.token_at(450, 300, 600, 900, qcfg, "buckets") == (rows // 2, cols // 2)


def test_eval_reports_each_link_on_the_fine_detail_task(tmp_path):
  """A fixed schedule expands the top region at each of the 3 scanning layers and drops it at the 2
  after the first, so the target is expanded exactly when it was the top region at some layer; an
  untrained TokenSR is interpolation, so it is exactly as close to the teacher's tokens."""
  config = _config(tmp_path, benchmarks="fine_detail", modes="vanilla,tokensr", diagnostics=True,
                   **{"blink.schedule": "fixed"})
  results = runner.evaluate(config)
  found = results["fine_detail"]["tokensr"]["diagnostics"]
  assert found == json.loads((tmp_path / "out" / "fine_detail" / "tokensr.diagnostics.json").read_text())
  assert "diagnostics" not in results["fine_detail"]["vanilla"]
  assert found["questions"] == 8 and len(found["hit_rate_per_layer"]) == 3 and found["chance"] == 1 / 16
  assert found["expanded_per_question"] == 3 and found["dropped_per_question"] == 2
  rates = found["hit_rate_per_layer"]
  assert max(rates) <= found["target_expanded"] <= min(1, sum(rates))
  assert found["interp_kl"] > 0 and found["interp_cosine_distance"] > 0
  assert abs(found["token_sr_kl"] - found["interp_kl"]) < 1e-6
  assert abs(found["token_sr_cosine_distance"] - found["interp_cosine_distance"]) < 1e-5


@pytest.mark.slow   # a second evaluation (the full tier)
def test_the_oracle_region_choice_expands_every_target_in_eval(tmp_path):
  """eval.py hands each question's box to the oracle region choice; interp's diagnostics (no
  fidelity: that is tokensr's) then find every target expanded."""
  oracle = _config(tmp_path, benchmarks="fine_detail", modes="vanilla,interp", diagnostics=True,
                   **{"blink.region_choice": "oracle"})
  found = runner.evaluate(oracle)["fine_detail"]["interp"]["diagnostics"]
  assert found["target_expanded"] == 1.0 and "token_sr_kl" not in found
