"""The README's set-up command's job, for real, as a user runs it: train.py's embedded default (fewer
steps) in a fresh checkout, then eval.py's default on what it exported. Proves the hand-off of the
trained TokenSR (eval names the export and Blink expands with it); every other README command is
checked in-process by tests/test_readme_commands.py."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from test_readme_commands import readme_commands, runnable

pytestmark = pytest.mark.slow   # whole jobs in subprocesses: the full tier only

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: pathlib.Path) -> str:
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0, f"{args}\n{out[-4000:]}"
  return out


def test_main_job_then_eval_on_its_export(tmp_path):
  for name in ("train.py", "eval.py", "configs"):
    (tmp_path / name).symlink_to(ROOT / name)
  main_job = runnable(readme_commands()[0])
  assert main_job == ["train.py", "--config", "configs/tokensr.py"], main_job
  out = _run(main_job + ["--config.train.steps=20", "--config.train.log_every=10",
                         "--config.data.sample_images=16"], tmp_path)
  assert "step 20/20" in out and (tmp_path / "runs/tokensr/export/blink.json").exists(), out[-2000:]
  out = _run(["eval.py", "--config", "configs/eval.py", "--config.benchmarks=pope,vstar"], tmp_path)
  assert "tokensr: TokenSR from runs/tokensr/export (train.py's default job)" in out, out[-2000:]
  results = json.loads((tmp_path / "runs/eval/results.json").read_text())
  for bench in ("pope", "vstar"):
    assert results[bench]["tokensr"]["answered"] == results[bench]["questions"] > 0
  assert results["pope"]["tokensr"]["expansions"] > 0 and results["pope"]["interp"]["questions_expanded"] > 0
