"""Every command the README shows runs as written, as a subprocess, in README order: the main job,
the evaluation examples, visualize.py, the TPU pod command's train.py. Checkpoints, data and buckets
the README names are replaced by small stand-ins (SUBSTITUTES); a README command that names anything
else fails here, so a new example cannot go untested. Optional `[...]` groups are run with their
contents unless they are a generic `--config.FIELD=VALUE ...` pattern; the test commands themselves
are not run (this is one of them)."""

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import time

import jax
import pytest
from PIL import Image

import gcs_fixtures
import hf_fixtures
import qwen_fixtures
from blink_jax.blink.config import BlinkConfig
from blink_jax.checkpoint import export_token_sr
from blink_jax.data.sample_images import write_sample_images
from blink_jax.eval import sample_benchmarks
from blink_jax.eval.readers import read_rows
from blink_jax.models.token_sr import init_token_sr

pytestmark = pytest.mark.slow   # the README's jobs, whole: the full tier only

ROOT = pathlib.Path(__file__).resolve().parents[2]

# What a command must print, and the overrides that shrink a pod-sized job to this machine (the pod's
# multi-host path is tested by test_resume_and_multihost.py's two-process run).
EXPECT = {"eval.py --config configs/eval.py": "tokensr: TokenSR from runs/tokensr/export (train.py's default job)"}
SHRINK = {"train.py --config configs/tokensr_7b.py": [
              "--config.train.steps=2", "--config.train.batch_size=8", "--config.checkpoint.every=1",
              "--config.data.workers=0", "--config.distributed.enabled=False", "--config.blink.token_sr_channels=8"],
          # LLaVA-1.5-7B's programs compiled for a v5e-8 at a smaller batch, two of the three modes
          "blink_jax.aot --config configs/eval_7b.py": ["--config.batch_size=8", "--config.modes=vanilla,interp"],
          # TokenSR on the small Qwen2.5-VL, one small grid bucket, the scanning layers of the Qwen eval
          # command's stand-in below (so both evaluations answer interp with the same settings)
          "train.py --config configs/tokensr_qwen2_5_vl_7b.py": [
              "--config.train.steps=2", "--config.train.batch_size=8", "--config.train.grad_accum_steps=1",
              "--config.checkpoint.every=1", "--config.data.workers=0", "--config.distributed.enabled=False",
              "--config.model.preprocessing=8x8", "--config.blink.first_scan_layer=1", "--config.blink.last_scan_layer=2",
              "--config.model.dtype=float32", "--config.model.param_dtype=float32"],
          # Qwen2.5-VL on two benchmarks, its images in small grid buckets
          "Qwen2.5-VL-7B-Instruct": ["--config.benchmarks=pope,vstar", "--config.model.preprocessing=8x8,8x12,12x8",
                                     "--config.batch_size=8", "--config.prompt_buckets=256,512",
                                     "--config.blink.first_scan_layer=1", "--config.blink.last_scan_layer=2",
                                     "--config.model.dtype=float32", "--config.model.param_dtype=float32"]}
UNSUBSTITUTED = ("$", "/ckpts/", "/data/", "/mnt/", "gs://")


def readme_commands() -> list[str]:
  """The README's indented code lines, continuation lines joined, outside ``` fences."""
  commands, current, fenced = [], "", False
  for line in (ROOT / "README.md").read_text().splitlines():
    if line.startswith("```"):
      fenced = not fenced
      continue
    if fenced or not line.startswith("    "):
      continue
    current += " " + line.strip().rstrip("\\").strip()
    if not line.rstrip().endswith("\\"):
      commands.append(current.strip())
      current = ""
  return commands


def runnable(command: str) -> list[str] | None:
  """The python invocation in a README line (setup chains and the gcloud wrapper unwrapped), or None
  for the test commands and lines that are not commands."""
  if command.startswith("gcloud"):
    command = re.search(r'--command "(.*)"', command).group(1)
  command = command.split("&&")[-1].strip()
  if not re.match(r"(\.venv/bin/)?python3? ", command) or " -m pytest" in command:
    return None
  command = re.sub(r"\[([^\]]*)\]", lambda m: "" if "FIELD=VALUE" in m.group(1) or "..." in m.group(1)
                   else m.group(1), command)
  return [sys.executable] + shlex.split(command)[1:]


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
  """The small stand-ins for what the README's commands name."""
  root = tmp_path_factory.mktemp("readme")
  ckpt = root / "llava-1.5-7b-hf"   # 20 layers, 8x8 grid: the spec's layers 12..18 and p=4 apply
  hf_fixtures.build_checkpoint(ckpt, image_size=112, kv_heads=2, text_layers=20, seed=5, max_shard_size=None)
  blink = BlinkConfig(token_sr_channels=8)
  export = root / "tokensr_7b_export"
  export_token_sr(export, init_token_sr(blink.num_scan_layers, 8, blink.region_size, 64, jax.random.key(0)),
                  blink, 64)
  qwen_fixtures.build_checkpoint(root / "Qwen2.5-VL-7B-Instruct", seed=2)
  Image.fromarray(hf_fixtures.sample_photos()["chelsea"]).save(root / "cat.jpg")
  write_sample_images(root / "llava_train_images", 8)
  samples = sample_benchmarks.write_samples(root / "samples")
  pope = sample_benchmarks.write_llava_layout(list(read_rows(samples["pope"])), root / "pope")
  return {"root": root, "ckpt": ckpt, "export": export, "samples": root / "samples", "pope": pope}


def _substitutes(s, bucket):
  return {
      "/mnt/ckpts/llava-1.5-7b-hf": str(s["ckpt"]), "/ckpts/llava-1.5-7b-hf": str(s["ckpt"]),
      "/ckpts/Qwen2.5-VL-7B-Instruct": str(s["root"] / "Qwen2.5-VL-7B-Instruct"),
      "/ckpts/runs/tokensr_7b/export": str(s["export"]), "runs/tokensr_7b/export": str(s["export"]),
      "cat.jpg": str(s["root"] / "cat.jpg"),
      # orbax/TFDS reach GCS through tensorstore/gfile, which the emulator does not serve: local stand-ins
      "gs://$BUCKET/llava_train_images": str(s["root"] / "llava_train_images"),
      "gs://$BUCKET/tfds": str(s["root"] / "pod_tfds"), "gs://$BUCKET/runs/tokensr_7b": str(s["root"] / "pod_run"),
      # benchmark data is read through fsspec: the GCS emulator
      "gs://$BUCKET": bucket,
      "/data/pope/llava_pope_test.jsonl": s["pope"]["questions"], "/data/coco/val2014": s["pope"]["image_folder"],
      "/data/pope/labels.jsonl": s["pope"]["annotations"],
      "$TPU": "unused",
  }


def test_every_readme_command_runs_as_written(stand_ins, tmp_path, gcs_emulator):
  work = tmp_path / "checkout"   # the commands' cwd: the repository's entry points, a fresh runs/
  work.mkdir()
  for name in ("train.py", "eval.py", "visualize.py", "configs"):
    os.symlink(ROOT / name, work / name)
  samples = stand_ins["samples"] / "parquet"
  gcs_fixtures.upload(samples / "mme", f"{gcs_emulator}/lmms-lab/MME/data")
  gcs_fixtures.upload(samples / "gqa", f"{gcs_emulator}/lmms-lab/GQA/testdev_balanced_instructions")
  gcs_fixtures.upload(samples / "gqa_images", f"{gcs_emulator}/lmms-lab/GQA/testdev_balanced_images")
  gcs_fixtures.upload(stand_ins["samples"] / "folder" / "vstar", f"{gcs_emulator}/vstar_bench")
  gcs_fixtures.upload(samples / "hrbench_4k", f"{gcs_emulator}/HR-Bench/4k")
  # with the persistent compilation cache the README recommends: later commands load the programs
  # earlier ones compiled (the same model, buckets and modes) rather than compile them again
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache")}
  substitutes = _substitutes(stand_ins, gcs_emulator)
  ran = []
  for line in readme_commands():
    args = runnable(line)
    if args is None:
      continue
    # longest first, so a path is not half-replaced by a shorter key
    for key in sorted(substitutes, key=len, reverse=True):
      args = [a.replace(key, substitutes[key]) for a in args]
    left = [a for a in args[1:] if any(u in a.replace(gcs_emulator, "") for u in UNSUBSTITUTED)]
    assert not left, f"README command names {left}, which this test does not stand in for: {line}"
    args += next((extra for key, extra in SHRINK.items() if key in line), [])
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    # the full tier's longest test: `pytest -rP` shows where its time goes
    print(f"{time.perf_counter() - start:6.0f} s  {line}", flush=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{line}\n{out[-4000:]}"
    for key, text in EXPECT.items():
      if line.endswith(key) or f"{key} [" in line:
        assert text in out, f"{line}\n{out[-3000:]}"
    ran.append(line)
  scripts = [re.search(r"(\w+\.py)", r).group(1) for r in ran]
  assert scripts.count("train.py") >= 3 and scripts.count("eval.py") >= 4 and "visualize.py" in scripts, ran
  # The default train + eval pair shows Blink working: every mode's predictions exist, Blink expanded.
  results = json.loads((work / "runs" / "eval" / "results.json").read_text())
  assert results["pope"]["tokensr"]["expansions"] > 0 and results["pope"]["interp"]["questions_expanded"] > 0
  assert (work / "blink.png").exists()
  assert any((tmp_path / "jax_cache").iterdir())
