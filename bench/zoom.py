"""Attention-guided zoom's cost beside vanilla and Blink (tokensr) on one model, timed in turns in the
same run: the prompt pass (zoom: pass 1, [prefix ; image] through every layer and the question up to
its layer; the crops cut and preprocessed on the host; pass 2, [crop ; question] after pass 1's cache;
each part and their sum), greedy generation end to end through the
Pipeline, and the compiled memory of each program (pass 1 and pass 2 against vanilla's prefill: no
attention matrix is materialised, so pass 1 costs at most what vanilla's prompt pass does).

  python -m bench.zoom [--shape medium|tiny] [--batches 1,8] [--new_tokens 16] [--repeats 5]
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

import jax
import jax.numpy as jnp
from absl import app, flags

from bench import common
from blink_jax.blink.prefill import blink_prefill
from blink_jax.inference import zoom as zoom_lib
from blink_jax.models.token_sr import init_for

flags.DEFINE_enum("shape", "medium", ["tiny", "medium", "7b"], "Model shape (LLaVA geometry; 7b needs an "
                  "accelerator; tiny only checks the script runs).")
flags.DEFINE_list("batches", ["1", "8"], "Batch sizes.")
flags.DEFINE_integer("new_tokens", 16, "Tokens generated per example.")
flags.DEFINE_integer("repeats", 5, "Timed repeats (median reported).")
flags.DEFINE_integer("text_tokens", 70, "Text tokens per prompt besides the visual ones.")
flags.DEFINE_string("ckpt_dir", os.path.join(tempfile.gettempdir(), "blink_bench_ckpt"),
                    "Where the random HF checkpoint is built (reused).")
FLAGS = flags.FLAGS


def main(_):
  ckpt = common.hf_checkpoint(FLAGS.shape, FLAGS.ckpt_dir)
  blink = common.blink_for(common.pipeline(FLAGS.shape, ckpt))
  pipe = common.pipeline(FLAGS.shape, ckpt).with_blink(blink)
  pipe = pipe.with_blink(blink, init_for(blink, pipe.cfg, jax.random.key(1)))
  zoom = pipe.zoom.resolved(pipe.cfg.text.num_layers)
  model = pipe.model
  from skimage import data
  photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
  params = pipe.mode_params("tokensr")

  rows, records = [], []
  for b in [int(x) for x in FLAGS.batches]:
    batch = pipe.prepare([photos[i % 4] for i in range(b)], prompts=[common.prompt(FLAGS.text_tokens, pipe)] * b)
    boxes = pipe.zoom_boxes(batch)
    zoomed = pipe.zoomed(batch, boxes)
    blink_batch = pipe.layout_for(batch, "tokensr")
    on_device = lambda x: tuple(jnp.asarray(a) for a in (x.ids, x.pixels, x.lengths))  # noqa: E731
    prefill = jax.jit(lambda p, i, x, ln: model.apply({"params": p}, i, x, ln, method="prefill")[0])
    pass_1 = pipe.zoom_program(batch.image_start)
    prefix = pass_1(params, *on_device(batch))[1]
    pass_2 = jax.jit(lambda p, i, x, ln, pre: zoom_lib.answer_prefill(model)(p, i, x, ln, 0, pre)[0])
    tokensr = jax.jit(lambda p, i, x, ln: blink_prefill(model, dataclasses.replace(blink, mode="tokensr"), p, i, x, ln,
                                                        image_start=batch.image_start).logits)
    args = {"vanilla": (prefill, (params, *on_device(batch))), "zoom_pass_1": (pass_1, (params, *on_device(batch))),
            "zoom_pass_2": (pass_2, (params, *on_device(zoomed), prefix)), "tokensr": (tokensr, (params, *on_device(blink_batch)))}
    calls = {name: (lambda fn=fn, a=a: fn(*a)) for name, (fn, a) in args.items()}
    calls["zoom_crops"] = lambda: pipe.zoomed(batch, boxes).pixels    # host: crop, preprocess, re-tokenise
    calls.update({f"generate_{m}": (lambda m=m: pipe.generate_tokens(batch, FLAGS.new_tokens, m))
                  for m in ("vanilla", "tokensr", "zoom")})
    seconds = common.time_interleaved(calls, repeats=FLAGS.repeats)
    zoom_device = seconds["zoom_pass_1"] + seconds["zoom_pass_2"]
    record = {"batch": b, "prompt_tokens": int(batch.lengths.sum()), "zoomed_prompt_tokens": int(zoomed.lengths.sum()),
              "seconds": seconds, "zoom_prefill_device_seconds": zoom_device,
              "zoom_prefill_seconds": zoom_device + seconds["zoom_crops"],
              "compiled_bytes": {name: common.compiled_bytes(fn, *a) for name, (fn, a) in args.items()}}
    records.append(record)
    v, mib = seconds["vanilla"], record["compiled_bytes"]
    rows.append([b, f"{v * 1e3:.1f}", f"{seconds['tokensr'] / v:.2f}", f"{seconds['zoom_pass_1'] / v:.2f}",
                 f"{seconds['zoom_pass_2'] / v:.2f}", f"{zoom_device / v:.2f}", f"{record['zoom_prefill_seconds'] / v:.2f}",
                 f"{seconds['generate_tokensr'] / seconds['generate_vanilla']:.2f}",
                 f"{seconds['generate_zoom'] / seconds['generate_vanilla']:.2f}",
                 f"{mib['vanilla'] / 2**20:.0f}", f"{mib['zoom_pass_1'] / 2**20:.0f}", f"{mib['zoom_pass_2'] / 2**20:.0f}"])
  header = ["batch", "vanilla prefill ms", "tokensr/van", "zoom pass1/van", "pass2/van", "zoom device/van",
            "zoom +crops/van", "gen tokensr/van", "gen zoom/van", "van MiB", "pass1 MiB", "pass2 MiB"]
  common.write(f"zoom_{FLAGS.shape}", {"blink": dataclasses.asdict(blink), "zoom": dataclasses.asdict(zoom),
                                       "new_tokens": FLAGS.new_tokens, "records": records}, rows, header)


if __name__ == "__main__":
  app.run(main)
