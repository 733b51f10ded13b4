"""The fine-detail experiment's one command, tiny (a few steps a stage, one seed): every stage runs
(task, the encoder's pretraining, expansion-aware fine-tuning with the encoder frozen, distillation, the learnability
curves, evaluation of every arm) and the results page holds every arm x mode x sub-task with its
interval, the curves and the diagnostics."""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp

from blink_jax.data.fine_detail import CATEGORIES

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_tiny_experiment_writes_its_results_page(tmp_path):
  # The command as a user runs it on a CPU: one device (not the 8 virtual ones conftest gives the
  # tests, whose collectives XLA aborts as stuck when the 2 cores are busy) and no reach for libtpu,
  # which a concurrent ahead-of-time test may hold; compiled as the in-process tests compile (XLA's
  # cheapest, most of this chain's time), since it checks what the chain writes, not its speed.
  proc = subprocess.run([sys.executable, "-m", "experiments.fine_detail", f"--out={tmp_path}", "--seeds=0", "--tiny"],
                        cwd=ROOT, capture_output=True, text=True, timeout=900,
                        env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "",
                             "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"})
  # The failure's own lines, without absl's info log and a crash's list of extension modules.
  errors = [line for line in proc.stderr.splitlines() if not re.match(r"I\d{4} |Extension modules:", line)]
  assert proc.returncode == 0, "\n".join(errors)[-4000:]
  results = json.loads((tmp_path / "results.json").read_text())
  pooled = results["pooled"]
  assert set(pooled) == {"blink", "random_region", "oracle_region", "oracle_always", "oracle_teacher", "fixed_schedule",
                         "no_drop", "zoom", "oracle_zoom"}
  for arm in pooled.values():
    assert set(arm) == {"all", *CATEGORIES}
    for cell in arm["all"].values():
      low, high = cell[1], cell[2]
      assert low <= cell[0] <= high
  diagnostics = results["per_seed"]["0"]["arms"]["blink"]["tokensr"]["diagnostics"]
  assert diagnostics["questions"] == 8 and "token_sr_kl" in diagnostics
  assert "zoom - vanilla" in pooled["oracle_zoom"]["all"]
  seed = results["per_seed"]["0"]
  assert list(seed["seconds"]) == ["pretraining", "fine-tuning", "validation and learnability curves", "distillation",
                                   "choices on validation", "test arms", "pictures"]
  assert set(seed["chosen"]) == {"blink.tau_exp", "zoom.box"}
  tau = seed["chosen"]["blink.tau_exp"]
  assert set(seed["sft_log"]) == {"1", "2", "3", "4"} and "loss" in seed["sft_log"]["4"]    # every logged step
  assert [v[0] for v in seed["sft_validation"]] == [2, 4] and seed["sft_stopped_at"] == 4   # validated every 2 steps
  assert json.loads((tmp_path / "seed0" / "sft" / "run.json").read_text())["config"]["train"]["sft_expand"] == 0.5
  assert seed["validation_tried"]["blink.tau_exp"][str(tau)] == max(seed["validation_tried"]["blink.tau_exp"].values())
  record = json.loads((tmp_path / "seed0" / "test" / "blink" / "fine_detail" / "tokensr.run.json").read_text())
  assert record["blink"]["tau_exp"] == tau                 # the test split ran with what validation chose
  curve = seed["curve"]
  assert set(curve) == {"6", "24"} and all("accuracy" in c["oracle_zoom"] for c in curve.values())
  encoder = seed["pretraining"]["curve"]        # the encoder's readout per size x view scale x sub-task
  assert set(encoder) == {"6", "24"} and all(set(c) == {"1", "2", "4"} for c in encoder.values())
  assert set(encoder["24"]["2"]) == {"dot_colour", "digit", "count"}
  assert set(seed["pretraining"]["loss"]) == {"1", "2", "3", "4"}
  with ocp.StandardCheckpointer() as ckptr:     # fine-tuning started from the pretrained encoder and kept it
    pretrained, tuned = (ckptr.restore(tmp_path / "seed0" / stage / "export" / "model")
                         for stage in ("pretrain", "sft"))
  vision = [k for k in pretrained if k.startswith("vision_tower/")]
  assert vision and all(np.array_equal(pretrained[k], tuned[k]) for k in vision)
  assert not np.array_equal(pretrained["multi_modal_projector/linear_1/kernel"],
                            tuned["multi_modal_projector/linear_1/kernel"])
  vanilla = {arm: (tmp_path / "seed0" / "test" / arm / "fine_detail" / "vanilla.jsonl").read_text() for arm in pooled}
  assert len(set(vanilla.values())) == 1        # every arm's vanilla answers are the first arm's
  teacher = results["per_seed"]["0"]["arms"]["oracle_teacher"]["tokensr"]["diagnostics"]
  record = json.loads((tmp_path / "seed0" / "test" / "oracle_teacher" / "fine_detail" / "tokensr.run.json").read_text())
  assert record["blink"]["sr_source"] == "teacher" and teacher["target_expanded"] == 1.0   # every question
  moved = results["changed"]
  assert set(moved["blink"]) == {"interp", "tokensr"} and all(0 <= v <= 100 for v in moved["blink"].values())
  page = (tmp_path / "results.md").read_text()
  assert "## oracle_region" in page and "tokensr - vanilla" in page and "hit rate per scanning layer" in page
  assert "differ from vanilla" in page and "accuracy vs detail size" in page and "encoder's readout" in page
  assert "(stopped at 4)" in page and "Minutes each stage took" in page and "zoom's crop held the target" in page
  assert (tmp_path / "hit_rate.png").stat().st_size > 0
  assert all((tmp_path / "seed0" / f"decisions_{c}.png").exists() for c in CATEGORIES)
