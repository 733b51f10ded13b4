"""The tokenizer wrapper: byte-level ids stable across processes, round trips, placeholder errors."""

import os
import subprocess
import sys

import pytest

from blink_jax.tokenizer import byte_level_tokenizer

PROBE = ("from blink_jax.tokenizer import byte_level_tokenizer;"
         "print(byte_level_tokenizer(511).encode('USER: <image>\\n这是什么? ASSISTANT:'))")


def test_byte_level_ids_do_not_depend_on_the_process_hash_seed():
  outs = {subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")}
  assert len(outs) == 1


def test_byte_level_round_trip_and_image_expansion():
  tok = byte_level_tokenizer(511)
  ids = tok.encode_prompt("USER: <image>\n这是什么? ASSISTANT:", 4)
  assert ids[0] == 1 and list(ids).count(511) == 4
  assert tok.decode(ids) == "USER: \n这是什么? ASSISTANT:"
  with pytest.raises(ValueError, match="2 '<image>' placeholders; expected exactly 1"):
    tok.encode_prompt("<image> and <image>", 4)
  with pytest.raises(ValueError, match="0 '<image>' placeholders"):
    tok.encode_prompt("no image here", 4)
