"""Compilations over a stream of varied prompts and images: one program per (mode, image shape,
length bucket), none after warm-up.

  python -m bench.compiles [--prompts 200] [--batch 4] [--family llava|qwen2_5_vl]

llava: the embedded default's random model (one image shape). qwen2_5_vl: a small random Qwen2.5-VL
(bench/common.py) whose images fall in grid buckets by their aspect ratio (--qwen_grids), so the
programs are one per (grid bucket, prompt bucket) hit.
"""

from __future__ import annotations

import collections

import jax
import jax.monitoring
import numpy as np
from absl import app, flags

from bench import common
from blink_jax.blink.config import from_mapping
from blink_jax.inference.pipeline import Pipeline
from configs import tokensr

flags.DEFINE_integer("prompts", 200, "Prompts in the stream.")
flags.DEFINE_integer("batch", 4, "Batch size.")
flags.DEFINE_enum("family", "llava", ["llava", "qwen2_5_vl"], "Base model family.")
flags.DEFINE_string("qwen_grids", "8x8,8x12,12x8,4x12,12x4", "Qwen2.5-VL grid buckets (model.preprocessing).")
flags.DEFINE_string("ckpt_dir", "/tmp/blink_bench_ckpt", "Where the random Qwen2.5-VL checkpoint is built.")
FLAGS = flags.FLAGS

_EVENTS = collections.Counter()
_SECONDS = collections.Counter()


def _listen(name, seconds, **_):
  if name == "/jax/core/compile/backend_compile_duration":
    _EVENTS["compiles"] += 1
    _SECONDS["compiles"] += seconds


def pipeline(buckets) -> Pipeline:
  if FLAGS.family == "qwen2_5_vl":
    ckpt = common.hf_checkpoint("qwen_small", FLAGS.ckpt_dir)
    pipe = Pipeline.from_hf(ckpt, preprocessing=FLAGS.qwen_grids, buckets=buckets)
    return pipe.with_blink(common.blink_for(pipe))
  c = tokensr.get_config()
  pipe = Pipeline.from_preset(c.model.preset, buckets=buckets)
  return pipe.with_blink(from_mapping(c.blink.to_dict()))


def main(_):
  jax.monitoring.register_event_duration_secs_listener(_listen)
  # Qwen2.5-VL's chat template is longer (and byte-level here): larger buckets.
  buckets = (256, 320, 384, 448, 512, 640) if FLAGS.family == "llava" else (256, 384, 512, 640, 768, 1024)
  pipe = pipeline(buckets)
  from skimage import data
  photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.camera()]
  rng = np.random.default_rng(0)
  by_shape = collections.defaultdict(list)   # a batch holds one image shape (Qwen2.5-VL's grid buckets)
  for _ in range(FLAGS.prompts):
    p = photos[rng.integers(len(photos))]
    h, w = p.shape[:2]
    y, x = rng.integers(0, h // 3), rng.integers(0, w // 3)
    crop = p[y:y + rng.integers(h // 2, h - y), x:x + rng.integers(w // 2, w - x)]
    by_shape[pipe.grid_of(crop)].append((crop, "what is this " * int(rng.integers(1, 30))))
  stream = []
  for shape, items in by_shape.items():
    for i in range(0, len(items), FLAGS.batch):
      part = items[i:i + FLAGS.batch]
      part += [part[-1]] * (FLAGS.batch - len(part))
      stream.append(([im for im, _ in part], [q for _, q in part]))

  rows, record = [], {}
  for mode in ("vanilla", "tokensr"):
    lengths = set()
    before, secs = _EVENTS["compiles"], _SECONDS["compiles"]
    for images, questions in stream:
      batch = pipe.prepare(images, questions)
      lengths.add((batch.pixels.shape[1:3], pipe.layout_for(batch, mode).ids.shape[1]))
      pipe.generate_tokens(batch, max_new_tokens=2, mode=mode)
    first_pass = _EVENTS["compiles"] - before
    compile_seconds = _SECONDS["compiles"] - secs
    before = _EVENTS["compiles"]
    for images, questions in stream:  # the same stream again: everything is compiled
      pipe.generate_tokens(pipe.prepare(images, questions), max_new_tokens=2, mode=mode)
    again = _EVENTS["compiles"] - before
    programs = sum(fn._cache_size() for key, fn in pipe._generate_fns.items() if key[1] == mode)
    record[mode] = {"buckets_hit": len(lengths), "programs": programs, "backend_compiles_first_pass": first_pass,
                    "compile_seconds": compile_seconds, "compiles_second_pass": again}
    rows.append([mode, len(lengths), programs, first_pass, f"{compile_seconds:.1f}", again,
                 "PASS" if programs == len(lengths) and again == 0 else "FAIL"])
  name = "compiles" if FLAGS.family == "llava" else f"compiles_{FLAGS.family}"
  common.write(name, {"family": FLAGS.family, "prompts": FLAGS.prompts, "batch": FLAGS.batch, "buckets": buckets,
                      "records": record}, rows,
               ["mode", "(image shape, bucket)s hit", "generate programs", "backend compiles (all)", "compile s",
                "compiles on 2nd pass", "programs == buckets, 0 after warm-up"])
  common.bar_plot(name, list(record), {"buckets hit": [r["buckets_hit"] for r in record.values()],
                                             "programs": [r["programs"] for r in record.values()]},
                  "count", f"Compilations over {FLAGS.prompts} prompts")


if __name__ == "__main__":
  app.run(main)
