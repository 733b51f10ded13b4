"""The bench's timing helpers: calls timed in another process report their own figure, and the EasyDeL
baseline refuses what it cannot run with a clear error (tests/integration/test_bench.py runs the
scripts themselves)."""

import numpy as np
import pytest

from bench import common
from bench.easydel_baseline import EasyDeL, unpadded
from blink_jax.data.prompt_batch import PromptBatch


def test_a_call_that_timed_itself_is_taken_at_its_figure():
  seconds = common.time_interleaved({"remote": lambda: common.Measured(123.0), "local": lambda: None},
                                    repeats=3, warmup=0)
  assert seconds["remote"] == 123.0
  assert 0 <= seconds["local"] < 1.0


def test_easydel_baseline_names_a_missing_interpreter(tmp_path):
  with pytest.raises(SystemExit, match="--easydel_python .*not a file.*requirements-easydel.txt"):
    EasyDeL(str(tmp_path / "no-such-python"), tmp_path)


def test_easydel_baseline_takes_prompts_of_one_length():
  batch = PromptBatch(ids=np.ones((2, 8), np.int32), lengths=np.array([8, 5], np.int32),
                      pixels=np.zeros((2, 4, 4, 3), np.float32), image_start=1)
  with pytest.raises(ValueError, match="one length"):
    unpadded(batch)
  same = PromptBatch(ids=np.ones((2, 8), np.int32), lengths=np.array([6, 6], np.int32),
                     pixels=np.zeros((2, 4, 4, 3), np.float32), image_start=1)
  assert unpadded(same).ids.shape == (2, 6)
