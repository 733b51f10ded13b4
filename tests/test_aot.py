"""Ahead-of-time compilation for TPU topologies (libtpu, no TPU): the tiny default train step and
Blink's generation programs (LLaVA-1.5 and Qwen2.5-VL) compile for v5e:2x2 and fit; the abstract programs are the jobs' own
(same shapes, dtypes and shardings as the materialised ones); bad topologies, meshes and a missing
libtpu are named. libtpu is held by one process at a time, so it is only ever loaded in subprocesses."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import pytest

from blink_jax import aot
from blink_jax import sharding as shd
from blink_jax.eval.runner import build_pipeline
from blink_jax.train.step import train_program
from configs import eval as eval_config
from train_fixtures import set_fields, tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
KEYS = {"program", "topology", "attention", "batch", "args_gib", "out_gib", "temp_gib", "total_gib", "hbm_gib", "fits",
        "compile_s"}


def _aot(tmp_path, config, *extra):
  out = tmp_path / "aot.json"
  # a persistent compilation cache set: aot must not use it (it measures the compile)
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "PYTHONPATH": str(ROOT),
         "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache")}
  proc = subprocess.run([sys.executable, "-m", "blink_jax.aot", "--config", str(ROOT / config),
                         f"--json={out}", *extra], cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=600)
  return proc, (json.loads(out.read_text()) if out.exists() else None)


# v6e (a second chip, the same program) and Qwen2.5-VL's programs in the full tier.
@pytest.mark.parametrize("topology,hbm", [("v5e:2x2", 16.0), pytest.param("v6e:2x2", 32.0, marks=pytest.mark.slow)])
def test_tiny_train_step_compiles_with_splash_attention_and_fits(tmp_path, topology, hbm):
  proc, records = _aot(tmp_path, "configs/tokensr.py", f"--topology={topology}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert not (tmp_path / "jax_cache").exists()   # compiled, not loaded: its seconds are a compile's
  (step,) = records
  assert KEYS <= set(step) and step["program"] == "train_step" and step["topology"] == topology
  assert step["fits"] and step["hbm_gib"] == hbm and 0 < step["total_gib"] < 1
  # attention="auto" is the Pallas splash kernel on a TPU mesh, compiled (not interpreted) for it.
  assert f"| train_step | {topology} | data4xfsdp1xtensor1 | splash | 8 |" in proc.stdout


@pytest.mark.slow   # the fast tier compiles the train step for TPU; the README test lowers these on CPU
def test_blink_and_zoom_generation_compile_for_v5e_and_fit(tmp_path):
  proc, records = _aot(tmp_path, "configs/eval.py", "--config.modes=vanilla,interp,tokensr,zoom",
                       "--config.token_sr=")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert [r["program"].split(" ")[0] for r in records] == [
      f"{program}_{mode}" for mode in ("vanilla", "interp", "tokensr") for program in ("prefill", "generate")] + [
      "zoom_pass_1", "prefill_zoom", "generate_zoom"]
  assert all(r["fits"] and r["topology"] == "v5e:2x2" and r["batch"] == 8 and r["attention"] == "splash"
             for r in records)


@pytest.mark.slow
def test_qwen_blink_generation_compiles_for_v5e_and_fits(qwen_ckpt, tmp_path):
  """Qwen2.5-VL's programs (window-attention ViT, multimodal RoPE, Blink over a non-square bucket) from a
  small checkpoint's config.json: nothing else is read."""
  proc, records = _aot(tmp_path, "configs/eval.py", "--config.modes=vanilla,interp", "--config.token_sr=",
                       f"--config.model.hf_checkpoint={qwen_ckpt}", "--config.model.preprocessing=8x12",
                       "--config.blink.first_scan_layer=1", "--config.blink.last_scan_layer=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert [r["program"].split(" ")[0] for r in records] == [
      f"{program}_{mode}" for mode in ("vanilla", "interp") for program in ("prefill", "generate")]
  assert all(r["fits"] and r["topology"] == "v5e:2x2" and r["attention"] == "splash" for r in records)


@pytest.mark.slow
def test_qwen_train_step_compiles_for_v5e_and_fits(tmp_path):
  """The TokenSR train step on Qwen2.5-VL (the tiny preset, a non-square 8x12 bucket; the teacher's
  crops re-encoded at 4x4 tokens) compiles for TPU like LLaVA's."""
  proc, records = _aot(tmp_path, "configs/tokensr.py", "--config.model.preset=qwen2.5-vl-tiny",
                       "--config.model.preprocessing=8x12")
  assert proc.returncode == 0, proc.stderr[-3000:]
  (step,) = records
  assert step["program"] == "train_step" and step["fits"] and step["attention"] == "splash" and step["batch"] == 8


def test_bad_topology_and_mesh_are_named(tmp_path):
  proc, _ = _aot(tmp_path, "configs/tokensr.py", "--topology=v5e:9x9")
  assert proc.returncode != 0 and "unknown TPU topology 'v5e:9x9'" in proc.stderr
  proc, _ = _aot(tmp_path, "configs/tokensr.py", "--topology=v5e:2x2", "--config.mesh.data=3")
  assert proc.returncode != 0 and "does not fit topology v5e:2x2 (4 devices)" in proc.stderr
  with pytest.raises(ValueError, match="unknown TPU topology 'tpu7:2x2'"):
    aot.topology_devices("tpu7:2x2")


def test_missing_libtpu_is_named(monkeypatch):
  monkeypatch.setattr(aot.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(RuntimeError, match="needs libtpu: pip install -r requirements-tpu.txt"):
    aot.topology_devices("v5e:2x2")


def _abstract(tree):
  return jax.tree.map(lambda x: (x.shape, x.dtype, x.sharding), tree)


def test_abstract_programs_are_the_jobs_own(tmp_path):
  config = tiny_config(tmp_path)
  partitioner = shd.Partitioner.from_config(config)
  real, shapes = (train_program(config, partitioner, abstract=a) for a in (False, True))
  assert _abstract((real.state, real.frozen)) == _abstract((shapes.state, shapes.frozen))
  ec = set_fields(eval_config.get_config(), {"token_sr": ""})
  real, shapes = (build_pipeline(ec, partitioner, abstract=a).pipe for a in (False, True))
  assert _abstract(real.mode_params("tokensr")) == _abstract(shapes.mode_params("tokensr", abstract=True))


@pytest.mark.parametrize("gib_per_example,curve,expected,most_compiles", [
    (0.1, 1.0, 128, 4),     # affine memory: 1 + 0.1 b <= 14.4 up to b = 134; the line's guess is confirmed
    (0.1, 1.6, 16, 12),     # memory grows faster than the line: the guess fails, bisection finds the answer
])
def test_max_batch_finds_the_largest_fitting_multiple(monkeypatch, tmp_path, gib_per_example, curve, expected,
                                                      most_compiles):
  config = tiny_config(tmp_path, **{"mesh.data": 4, "mesh.fsdp": 2})   # batch-parallel ways: 8
  monkeypatch.setattr(aot, "topology_devices", lambda name: (jax.devices(), 16.0))
  tried = []

  def fake_compile(c, topology):
    b = c.train.batch_size
    tried.append(b)
    total = 1 + gib_per_example * b ** curve
    return [aot.Record("train_step", topology, "", "splash", b, 0, 0, 0, total, 16.0, total <= 0.9 * 16.0, 0.0)]
  monkeypatch.setattr(aot, "compile_config", fake_compile)
  assert aot.max_batch(config, "v5e:2x4") == expected
  assert all(b % 8 == 0 for b in tried) and len(tried) <= most_compiles and len(set(tried)) == len(tried)


def _search_from_own_batch(monkeypatch, tmp_path, memory):
  """max_batch for a train config of global batch 32 on 8 batch-parallel devices of 16 GiB, whose
  program takes memory(b) GiB per device; the own batch comes measured. (result, batches compiled)"""
  config = tiny_config(tmp_path, **{"mesh.data": 4, "mesh.fsdp": 2, "train.batch_size": 32})
  monkeypatch.setattr(aot, "topology_devices", lambda name: (jax.devices(), 16.0))
  tried = []

  def record(b):
    total = memory(b)
    return aot.Record("train_step", "v5e:2x4", "", "splash", b, 0, 0, 0, total, 16.0, total <= 0.9 * 16.0, 0.0)

  def fake_compile(c, topology):
    tried.append(c.train.batch_size)
    return [record(c.train.batch_size)]
  monkeypatch.setattr(aot, "compile_config", fake_compile)
  return aot.max_batch(config, "v5e:2x4", measured=[record(32)]), tried


def test_max_batch_starts_its_line_at_the_configs_own_batch_without_compiling_it_again(monkeypatch, tmp_path):
  """The own batch (32) comes measured, so the search compiles its double, the line's guess and the
  multiple above: 64, 128, 136 (memory 1 + 0.1 b fits 14.4 GiB up to b = 134)."""
  assert _search_from_own_batch(monkeypatch, tmp_path, lambda b: 1 + 0.1 * b) == (128, [64, 128, 136])


def test_max_batch_follows_the_line_while_every_batch_fits(monkeypatch, tmp_path):
  """Memory that grows slower than the line through the own batch and its double (1 + 0.3 b^0.8 GiB,
  within 14.4 up to b = 115): the line's guess (104) and the multiple above (112) both fit, and the
  search goes on along the line through them (120 does not fit), not half-way to the limit."""
  assert _search_from_own_batch(monkeypatch, tmp_path, lambda b: 1 + 0.3 * b ** 0.8) == (112, [64, 104, 112, 120])


def test_max_batch_draws_no_line_through_neighbouring_multiples(monkeypatch, tmp_path):
  """The confirming multiple (136) takes less memory than the guess below it (13.7 against 13.8 GiB;
  otherwise 1 + 0.1 b): XLA's buffer assignment varies that much between neighbouring batches. The
  line through those two does not rise, and the search compiled a batch far too large (2112 here,
  4096 on v5p-8); the line through 128 and 64 guesses within the budget, and 144 ends the search."""
  memory = lambda b: 1 + 0.1 * b - (0.9 if b == 136 else 0)   # noqa: E731
  assert _search_from_own_batch(monkeypatch, tmp_path, memory) == (136, [64, 128, 136, 144])


def test_a_stopped_search_resumes_from_its_log_without_compiling_a_batch_twice(monkeypatch, tmp_path):
  """A search stopped after its second compile (here: an exception from the third) resumes from its log
  with the same answer and the same batches as one run through (memory 1 + 0.3 b^0.8: 64, 104, 112,
  120), compiling only those it had not; a log line of another config is not taken for this one's."""
  config = tiny_config(tmp_path, **{"mesh.data": 4, "mesh.fsdp": 2, "train.batch_size": 32})
  monkeypatch.setattr(aot, "topology_devices", lambda name: (jax.devices(), 16.0))
  log = tmp_path / "search.jsonl"
  other = config.copy_and_resolve_references()
  other.model.dtype = "float32" if config.model.dtype != "float32" else "bfloat16"
  log.write_text(json.dumps({"search": aot.search_key(other, "v5e:2x4"), "batch": 104, "peak_gib": 99.0,
                             "fits": False, "compile_s": 1.0}) + "\n")
  tried = []

  def fake_compile(c, topology, stop_after=None):
    if stop_after is not None and len(tried) == stop_after:
      raise KeyboardInterrupt
    b = c.train.batch_size
    tried.append(b)
    total = 1 + 0.3 * b ** 0.8
    return [aot.Record("train_step", topology, "", "splash", b, 0, 0, 0, total, 16.0, total <= 0.9 * 16.0, 1.5)]

  own = fake_compile(config, "v5e:2x4")
  tried.clear()
  monkeypatch.setattr(aot, "compile_config", lambda c, t: fake_compile(c, t, stop_after=2))
  with pytest.raises(KeyboardInterrupt):
    aot.max_batch(config, "v5e:2x4", measured=own, log=log)
  assert tried == [64, 104]
  config.train.batch_size = 32
  monkeypatch.setattr(aot, "compile_config", fake_compile)
  assert aot.max_batch(config, "v5e:2x4", measured=own, log=log) == 112
  assert tried == [64, 104, 112, 120]
  lines = aot.read_search_log(log, aot.search_key(config, "v5e:2x4"))
  assert [(line["batch"], line["fits"], line["compile_s"]) for line in lines] == [
      (32, True, 1.5), (64, True, 1.5), (104, True, 1.5), (112, True, 1.5), (120, False, 1.5)]


def test_a_program_too_large_to_compile_is_reported_as_not_fitting(tmp_path):
  """libtpu refuses to compile a program whose temporaries exceed HBM: that is a NO, not a crash."""
  proc, records = _aot(tmp_path, "configs/tokensr.py", "--topology=v5e:2x2", "--config.model.preset=llava-1.5-7b",
                       "--config.model.dtype=bfloat16", "--config.model.param_dtype=bfloat16",
                       "--config.blink.first_scan_layer=12", "--config.blink.last_scan_layer=18",
                       "--config.blink.region_size=4", "--config.train.batch_size=1024")
  assert proc.returncode == 0, proc.stderr[-3000:]
  (step,) = records
  assert not step["fits"] and step["args_gib"] is None and step["temp_gib"] > 16
  assert "| NO |" in proc.stdout
