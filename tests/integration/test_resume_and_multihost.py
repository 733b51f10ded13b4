"""train.py as users run it, in subprocesses: killed (SIGKILL) and preempted (SIGTERM) runs resume to
bit-identical params over the same batches; two processes train together with jax.distributed."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import portpicker
import pytest

from blink_jax.checkpoint import load_token_sr
from blink_jax.train.loop import PREEMPTED_EXIT_CODE

pytestmark = pytest.mark.slow   # whole jobs in subprocesses: the full tier only

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _launch(workdir, *extra, devices=8, env_extra=None):
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
         "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT), **(env_extra or {})}
  args = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs/tokensr.py"),
          f"--config.workdir={workdir}", "--config.data.sample_images=8", "--config.train.batch_size=8",
          "--config.log_batch_indices=True", "--config.train.log_every=5", *extra]
  return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _finish(proc, timeout=300, returncode=0):
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == returncode, out[-3000:]
  return out


def _wait_for(pred, proc, timeout=240):
  start = time.time()
  while not pred():
    assert proc.poll() is None, f"run ended before the event: {proc.communicate()[0][-2000:]}"
    assert time.time() - start < timeout
    time.sleep(0.05)


def _logged_step(workdir):
  f = workdir / "batches_process0.jsonl"
  lines = f.read_text().splitlines() if f.exists() else []
  return json.loads(lines[-1])["step"] if lines else -1


def _batches(workdir):
  """step -> example indices, the last run's record winning (a restarted run replays steps)."""
  out = {}
  for line in (workdir / "batches_process0.jsonl").read_text().splitlines():
    row = json.loads(line)
    out[row["step"]] = row["index"]
  return out


def test_sigkill_and_sigterm_resume_bit_identical(tmp_path):
  # tens of steps, a checkpoint every 10: killed after the first, preempted between the second and third
  steps = ["--config.train.steps=40", "--config.checkpoint.every=10"]
  ref, cut = tmp_path / "ref", tmp_path / "cut"
  _finish(_launch(ref, *steps))

  first = _launch(cut, *steps)
  _wait_for(lambda: (cut / "checkpoints" / "10").exists() and _logged_step(cut) >= 12, first)
  first.send_signal(signal.SIGKILL)
  first.wait()

  second = _launch(cut, *steps)
  _wait_for(lambda: (cut / "batches_process0.jsonl").read_text().count('"step": 10,') >= 2
            and _logged_step(cut) >= 15, second)
  second.send_signal(signal.SIGTERM)
  out = _finish(second, returncode=PREEMPTED_EXIT_CODE)   # "rerun me", not success
  assert "for preemption; rerun the same command" in out
  saved = sorted(int(p.name) for p in (cut / "checkpoints").iterdir() if p.name.isdigit())
  preempted_at = saved[-1]
  assert 15 < preempted_at < 40 and preempted_at % 10, (saved, out[-500:])
  assert not (cut / "export").exists()

  out = _finish(_launch(cut, *steps))
  assert f"resumed from {cut / 'checkpoints'} at step {preempted_at}" in out

  assert _batches(cut) == _batches(ref)
  width = 128
  a, _ = load_token_sr(ref / "export", width=width)
  b, _ = load_token_sr(cut / "export", width=width)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_two_processes_with_jax_distributed(tmp_path):
  port = portpicker.pick_unused_port()
  procs = [_launch(tmp_path / "run", "--config.train.steps=12", "--config.checkpoint.every=6",
                   "--config.distributed.enabled=True",
                   f"--config.distributed.coordinator_address=localhost:{port}",
                   "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}",
                   devices=2)
           for i in range(2)]
  for p in procs:
    _finish(p)
  summaries = [json.loads((tmp_path / "run" / f"summary_process{i}.json").read_text()) for i in range(2)]
  assert [s["step"] for s in summaries] == [12, 12]
  assert summaries[0]["params_sha256"] == summaries[1]["params_sha256"]
  seen = [set(i for row in _per_process_batches(tmp_path / "run", p) for i in row) for p in range(2)]
  assert seen[0].isdisjoint(seen[1])  # each process read its own shard of the data


def _per_process_batches(workdir, process):
  rows = (workdir / f"batches_process{process}.jsonl").read_text().splitlines()
  return [json.loads(r)["index"] for r in rows]
