"""Generation: time to first token and decode speed (ms per step: (time of N tokens - time of 1) / (N - 1);
tokens/s over the batch), vanilla vs Blink (interp, tokensr).

  python -m bench.generation [--shape medium] [--batches 1,8] [--new_tokens 32]
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

import jax
from absl import app, flags

from bench import common
from blink_jax.models import token_sr
from blink_jax.pipeline import LlavaPipeline

flags.DEFINE_enum("shape", "medium", list(common.SHAPES), "Model shape (7b needs an accelerator; tiny only checks the script runs).")
flags.DEFINE_list("batches", ["1", "8"], "Batch sizes.")
flags.DEFINE_integer("new_tokens", 32, "Tokens generated per example.")
flags.DEFINE_integer("repeats", 3, "Timed repeats (median).")
flags.DEFINE_integer("text_tokens", 70, "Text tokens per prompt.")
flags.DEFINE_string("dtype", "float32", "Compute dtype.")
flags.DEFINE_string("ckpt_dir", os.path.join(tempfile.gettempdir(), "blink_bench_ckpt"), "Checkpoint cache.")
FLAGS = flags.FLAGS


def main(_):
  ckpt = common.hf_checkpoint(FLAGS.shape, FLAGS.ckpt_dir)
  pipe = LlavaPipeline.from_hf(ckpt, dtype=FLAGS.dtype)
  # No EOS: every example generates exactly new_tokens, so runs are comparable.
  pipe = LlavaPipeline(dataclasses.replace(pipe.cfg, eos_token_id=-1), pipe.params, pipe.tokenizer, pipe.mesh)
  blink = common.blink_for(pipe)
  tsr = token_sr.init_for(blink, pipe.cfg, jax.random.key(1))
  pipe = pipe.with_blink(blink, tsr)
  from skimage import data
  photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
  rows, records = [], []
  for b in [int(x) for x in FLAGS.batches]:
    batch = pipe.prepare([photos[i % 4] for i in range(b)], prompts=[common.prompt(FLAGS.text_tokens)] * b)
    record = {"batch": b}
    modes = ("vanilla", "interp", "tokensr")
    calls = {(mode, n): (lambda mode=mode, n=n: pipe.generate_tokens(batch, n, mode))
             for mode in modes for n in (1, FLAGS.new_tokens)}
    seconds = common.time_interleaved(calls, repeats=FLAGS.repeats)
    for mode in modes:
      first, full = seconds[mode, 1], seconds[mode, FLAGS.new_tokens]
      decode = b * (FLAGS.new_tokens - 1) / max(full - first, 1e-9)
      record[mode] = {"ttft_seconds": first, "total_seconds": full, "decode_tokens_per_sec": decode,
                      "decode_ms_per_step": 1e3 * (full - first) / (FLAGS.new_tokens - 1)}
    records.append(record)
    v = record["vanilla"]
    rows.append([b, f"{v['ttft_seconds'] * 1e3:.0f}", f"{v['decode_ms_per_step']:.1f}", f"{v['decode_tokens_per_sec']:.1f}"] +
                [f"{record[m]['ttft_seconds'] / v['ttft_seconds']:.3f}" for m in ("interp", "tokensr")] +
                [f"{record[m]['decode_tokens_per_sec'] / v['decode_tokens_per_sec']:.3f}" for m in ("interp", "tokensr")])
  common.write(f"generation_{FLAGS.shape}", {"new_tokens": FLAGS.new_tokens, "records": records}, rows,
               ["batch", "vanilla TTFT ms", "vanilla decode ms/step", "vanilla decode tok/s", "interp TTFT/van",
                "tokensr TTFT/van",
                "interp decode/van", "tokensr decode/van"])
  common.bar_plot(f"generation_{FLAGS.shape}", [f"batch {r['batch']}" for r in records],
                  {m: [r[m]["decode_tokens_per_sec"] for r in records] for m in ("vanilla", "interp", "tokensr")},
                  "decode tokens / s", f"Greedy decoding ({FLAGS.shape}, {jax.devices()[0].platform})")


if __name__ == "__main__":
  app.run(main)
