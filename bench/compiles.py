"""Compilations over a stream of varied prompts and images: one program per (mode, length bucket),
none after warm-up.

  python -m bench.compiles [--prompts 200] [--batch 4]
"""

from __future__ import annotations

import collections

import jax
import jax.monitoring
import numpy as np
from absl import app, flags

from bench import common
from blink_jax import backbone
from blink_jax import sharding as shd
from blink_jax.blink.config import from_mapping
from blink_jax.pipeline import Pipeline
from blink_jax.tokenizer import byte_level_tokenizer
from configs import tokensr

flags.DEFINE_integer("prompts", 200, "Prompts in the stream.")
flags.DEFINE_integer("batch", 4, "Batch size.")
FLAGS = flags.FLAGS

_EVENTS = collections.Counter()
_SECONDS = collections.Counter()


def _listen(name, seconds, **_):
  if name == "/jax/core/compile/backend_compile_duration":
    _EVENTS["compiles"] += 1
    _SECONDS["compiles"] += seconds


def main(_):
  jax.monitoring.register_event_duration_secs_listener(_listen)
  c = tokensr.get_config()
  partitioner = shd.Partitioner.single_device()
  cfg, params = backbone.build(c.model, partitioner, 0)
  tok = byte_level_tokenizer(cfg.image_token_id, cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id)
  buckets = (256, 320, 384, 448, 512, 640)
  pipe = Pipeline(cfg, params, tok, partitioner, buckets=buckets).with_blink(from_mapping(c.blink.to_dict()))
  from skimage import data
  photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.camera()]
  rng = np.random.default_rng(0)
  stream = []
  for i in range(0, FLAGS.prompts, FLAGS.batch):
    images = []
    for _ in range(FLAGS.batch):
      p = photos[rng.integers(len(photos))]
      h, w = p.shape[:2]
      y, x = rng.integers(0, h // 3), rng.integers(0, w // 3)
      images.append(p[y:y + rng.integers(h // 2, h - y), x:x + rng.integers(w // 2, w - x)])
    questions = ["what is this " * int(rng.integers(1, 30)) for _ in range(FLAGS.batch)]
    stream.append((images, questions))

  rows, record = [], {}
  for mode in ("vanilla", "tokensr"):
    lengths = set()
    before, secs = _EVENTS["compiles"], _SECONDS["compiles"]
    for images, questions in stream:
      batch = pipe.prepare(images, questions)
      lengths.add(pipe.layout_for(batch, mode).ids.shape[1])
      pipe.generate_tokens(batch, max_new_tokens=2, mode=mode)
    first_pass = _EVENTS["compiles"] - before
    compile_seconds = _SECONDS["compiles"] - secs
    before = _EVENTS["compiles"]
    for images, questions in stream:  # the same stream again: everything is compiled
      pipe.generate_tokens(pipe.prepare(images, questions), max_new_tokens=2, mode=mode)
    again = _EVENTS["compiles"] - before
    programs = sum(fn._cache_size() for key, fn in pipe._generate_fns.items()
                   if (key[1] is None) == (mode == "vanilla"))
    record[mode] = {"buckets_hit": len(lengths), "programs": programs, "backend_compiles_first_pass": first_pass,
                    "compile_seconds": compile_seconds, "compiles_second_pass": again}
    rows.append([mode, len(lengths), programs, first_pass, f"{compile_seconds:.1f}", again,
                 "PASS" if programs == len(lengths) and again == 0 else "FAIL"])
  common.write("compiles", {"prompts": FLAGS.prompts, "batch": FLAGS.batch, "buckets": buckets,
                            "records": record}, rows,
               ["mode", "buckets hit", "generate programs", "backend compiles (all)", "compile s",
                "compiles on 2nd pass", "programs == buckets, 0 after warm-up"])
  common.bar_plot("compiles", list(record), {"buckets hit": [r["buckets_hit"] for r in record.values()],
                                             "programs": [r["programs"] for r in record.values()]},
                  "count", f"Compilations over {FLAGS.prompts} prompts")


if __name__ == "__main__":
  app.run(main)
