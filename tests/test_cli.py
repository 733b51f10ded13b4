"""The jobs' command lines report a user's mistake in one line naming it (blink_jax/cli.py); the
traceback comes back on request."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(tmp_path, *args, **env):
  return subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                        env={**os.environ, **env})


@pytest.mark.parametrize("args, says", [
    ((ROOT / "train.py", "--config.train.stepz=3"), 'no such config field: \'stepz\' Did you mean "steps"'),
    ((ROOT / "eval.py", "--config.modes=vanilla,fast"), "unknown mode 'fast'"),
])
def test_a_user_error_is_one_line(tmp_path, args, says):
  proc = _run(tmp_path, *args)
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert proc.returncode == 2 and len(errors) == 1 and says in errors[0], proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  again = _run(tmp_path, *args, BLINK_TRACEBACK="1")
  assert again.returncode != 0 and "Traceback" in again.stderr
