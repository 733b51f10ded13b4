"""The bench scripts run end to end on a tiny model (bench.aot: the tiny configs, compiled for a small
TPU topology) and write what docs/benchmarks.md says they do.

Figures are not checked (they are noise on a tiny model); the compile-count script's own check is.
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow   # whole jobs in subprocesses: the full tier only

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
  """Where the scripts build their random checkpoints on first use: built once for the whole file."""
  return tmp_path_factory.mktemp("bench_ckpts")


def _run(module, tmp_path, *args):
  results = tmp_path / "results"
  cmd = [sys.executable, "-m", module, f"--results_dir={results}", *args]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                        env={**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": ""})
  assert proc.returncode == 0, proc.stderr[-3000:]
  return results


def test_prefill_bench(tmp_path, ckpt_dir):
  results = _run("bench.prefill", tmp_path, "--shape=tiny", "--batches=1,2", "--repeats=1",
                 f"--ckpt_dir={ckpt_dir}")
  out = json.loads((results / "prefill_tiny_text70.json").read_text())
  assert (results / "prefill_tiny_text70.png").exists()
  assert [r["batch"] for r in out["records"]] == [1, 2]
  for record in out["records"]:
    for mode in ("vanilla", "interp", "tokensr", "torch_sdpa", "torch_eager"):
      assert record[mode]["seconds"] > 0
    assert record["blink_length"] > record["vanilla_length"]  # room for the SR slots
    assert 0 < record["saliency_seconds"] and 0 < record["scan_layer_seconds"]


def test_generation_bench(tmp_path, ckpt_dir):
  results = _run("bench.generation", tmp_path, "--shape=tiny", "--batches=2", "--repeats=1",
                 "--new_tokens=4", f"--ckpt_dir={ckpt_dir}")
  out = json.loads((results / "generation_tiny.json").read_text())
  record = out["records"][0]
  # the floor reads every decoder weight (tiny: 4 layers of 128 wide, a 512 x 128 head) and the cache
  assert record["floor_ms"] > 0 and record["floor_bytes"] > 4 * (4 * 128 * 128 + 3 * 128 * 256) * 4 + 512 * 128 * 4
  for mode in ("vanilla", "interp", "tokensr"):
    assert out["records"][0][mode]["step_alone_ms"] > 0, mode
    assert out["records"][0][mode]["ttft_seconds"] > 0, mode


def test_zoom_bench(tmp_path, ckpt_dir):
  results = _run("bench.zoom", tmp_path, "--shape=tiny", "--batches=2", "--repeats=1", "--new_tokens=2",
                 f"--ckpt_dir={ckpt_dir}")
  record = json.loads((results / "zoom_tiny.json").read_text())["records"][0]
  assert record["zoomed_prompt_tokens"] > record["prompt_tokens"]          # the crop's tokens
  assert record["zoom_prefill_device_seconds"] == pytest.approx(
      record["seconds"]["zoom_pass_1"] + record["seconds"]["zoom_pass_2"])
  assert set(record["compiled_bytes"]) == {"vanilla", "zoom_pass_1", "zoom_pass_2", "tokensr"}


def test_easydel_worker_reads_the_checkpoint_in_the_hubs_layout(tmp_path, ckpt_dir):
  """The EasyDeL baseline's copy of a transformers-5 checkpoint is the llava-hf layout (the vision tower
  under `vision_model`), and transformers loads it to the same weights with no key missing."""
  import numpy as np
  import torch
  import transformers
  from safetensors.numpy import load_file

  from bench import common
  from bench.easydel_worker import hub_layout
  ckpt = common.hf_checkpoint("tiny", ckpt_dir)
  copy = hub_layout(ckpt, tmp_path / "hub")
  keys = set(load_file(copy / "model.safetensors"))
  assert "vision_tower.vision_model.embeddings.patch_embedding.weight" in keys
  assert not any(k.startswith("vision_tower.") and not k.startswith("vision_tower.vision_model.") for k in keys)
  original = transformers.LlavaForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32).state_dict()
  model, info = transformers.LlavaForConditionalGeneration.from_pretrained(copy, dtype=torch.float32,
                                                                             output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  for name, value in model.state_dict().items():
    np.testing.assert_array_equal(value.numpy(), original[name].numpy(), err_msg=name)


@pytest.mark.skipif(not os.environ.get("BLINK_EASYDEL_PYTHON"),
                    reason="set BLINK_EASYDEL_PYTHON to the python of a venv with bench/requirements-easydel.txt")
def test_generation_bench_with_easydel(tmp_path, ckpt_dir):
  results = _run("bench.generation", tmp_path, "--shape=tiny", "--batches=1", "--repeats=1", "--new_tokens=4",
                 "--step_repeats=3", f"--easydel_python={os.environ['BLINK_EASYDEL_PYTHON']}",
                 f"--ckpt_dir={ckpt_dir}")
  record = json.loads((results / "generation_tiny.json").read_text())["records"][0]
  check = record["easydel_check"]
  assert check["logits_max_abs_diff_vs_transformers"] <= 1e-2 * check["logits_max_abs"]
  assert record["easydel"]["ttft_seconds"] > 0


@pytest.mark.parametrize("shape", ["tiny", "qwen_tiny"])
def test_training_bench(tmp_path, shape):
  results = _run("bench.training", tmp_path, f"--shape={shape}", "--batch=2", "--steps=2")
  out = json.loads((results / f"training_{shape}.json").read_text())
  assert out["flops_per_step"] > 0 and out["seconds_per_step"] > 0


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_compiles_bench_passes_its_own_check(tmp_path, ckpt_dir, family):
  results = _run("bench.compiles", tmp_path, "--prompts=16", "--batch=2", f"--family={family}",
                 f"--ckpt_dir={ckpt_dir}")
  out = json.loads((results / ("compiles.json" if family == "llava" else f"compiles_{family}.json")).read_text())
  for mode, record in out["records"].items():
    assert record["buckets_hit"] >= 2, mode  # the stream really spans (image shape, length) buckets
    assert record["programs"] == record["buckets_hit"], mode
    assert record["compiles_second_pass"] == 0, mode


def test_aot_bench(tmp_path):
  results = _run("bench.aot", tmp_path, "--configs=tokensr,eval", "--topologies=v5e:2x2", "--nomax_batch")
  out = json.loads((results / "aot.json").read_text())["results"]
  assert [(r["config"], r["topology"]) for r in out] == [("tokensr", "v5e:2x2"), ("eval", "v5e:2x2"),
                                                         ("eval", "v5e:2x2")]
  assert "all_modes" in out[1] and all(r["fits"] for r in out[2]["records"])
  assert (results / "aot_blink.json").exists()
