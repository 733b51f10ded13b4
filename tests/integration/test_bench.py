"""The bench scripts run end to end on a tiny model (bench.aot: the tiny configs, compiled for a small
TPU topology) and write what bench/README.md says they do.

Figures are not checked (they are noise on a tiny model); the compile-count script's own check is.
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow   # whole jobs in subprocesses: the full tier only

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(module, tmp_path, *args):
  results = tmp_path / "results"
  cmd = [sys.executable, "-m", module, f"--results_dir={results}", *args]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                        env={**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": ""})
  assert proc.returncode == 0, proc.stderr[-3000:]
  return results


def test_prefill_bench(tmp_path):
  results = _run("bench.prefill", tmp_path, "--shape=tiny", "--batches=1,2", "--repeats=1",
                 f"--ckpt_dir={tmp_path / 'ckpt'}")
  out = json.loads((results / "prefill_tiny_text70.json").read_text())
  assert (results / "prefill_tiny_text70.png").exists()
  assert [r["batch"] for r in out["records"]] == [1, 2]
  for record in out["records"]:
    for mode in ("vanilla", "interp", "tokensr", "torch_sdpa", "torch_eager"):
      assert record[mode]["seconds"] > 0
    assert record["blink_length"] > record["vanilla_length"]  # room for the SR slots
    assert 0 < record["saliency_seconds"] and 0 < record["scan_layer_seconds"]


def test_generation_bench(tmp_path):
  results = _run("bench.generation", tmp_path, "--shape=tiny", "--batches=2", "--repeats=1",
                 "--new_tokens=4", f"--ckpt_dir={tmp_path / 'ckpt'}")
  out = json.loads((results / "generation_tiny.json").read_text())
  assert all(out["records"][0][m]["decode_tokens_per_sec"] > 0 for m in ("vanilla", "interp", "tokensr"))


def test_training_bench(tmp_path):
  results = _run("bench.training", tmp_path, "--shape=tiny", "--batch=2", "--steps=2")
  out = json.loads((results / "training_tiny.json").read_text())
  assert out["flops_per_step"] > 0 and out["seconds_per_step"] > 0


def test_compiles_bench_passes_its_own_check(tmp_path):
  results = _run("bench.compiles", tmp_path, "--prompts=16", "--batch=2")
  out = json.loads((results / "compiles.json").read_text())
  for mode, record in out["records"].items():
    assert record["buckets_hit"] >= 2, mode  # the stream really spans buckets
    assert record["programs"] == record["buckets_hit"], mode
    assert record["compiles_second_pass"] == 0, mode


def test_aot_bench(tmp_path):
  results = _run("bench.aot", tmp_path, "--configs=tokensr,eval", "--topologies=v5e:2x2", "--nomax_batch")
  out = json.loads((results / "aot.json").read_text())["results"]
  assert [(r["config"], r["topology"]) for r in out] == [("tokensr", "v5e:2x2"), ("eval", "v5e:2x2"),
                                                         ("eval", "v5e:2x2")]
  assert "all_modes" in out[1] and all(r["fits"] for r in out[2]["records"])
  assert (results / "aot_blink.json").exists()
