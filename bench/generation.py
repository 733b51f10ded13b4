"""Generation: time to first token and decode speed, vanilla vs Blink (interp, tokensr) and, where its
environment is given, EasyDeL's LLaVA on the same checkpoint and inputs (bench/easydel_baseline.py).

Decode speed is measured two ways: end to end, ms per step = (time of N tokens - time of 1) / (N - 1)
through Pipeline.generate_tokens (tokens/s over the batch); and one compiled decode step alone
(generate.decode_step on the cache of the mode's own prefill, the modes timed in turns, median of
`--step_repeats` steps), which is not a difference of two timings and so carries far less noise: the
Blink / vanilla decode ratios are taken from it. Beside them, the step's floor on this host
(bytes_floor_call: one program reading every decoder weight and the KV cache once, with the
multiply-adds they carry), so a step's time reads as a multiple of what any implementation must pay,
and vanilla's step with the decoder's params in the stacked layout (models/layer_stack.py; the
pipeline's own is `--layer_layout`, auto: per_layer on CPU), in turns with the others.

  python -m bench.generation [--shape medium|qwen_medium] [--batches 1,8] [--new_tokens 32] [--easydel_python PY]
      [--layer_layout auto|stacked|per_layer]
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import tempfile

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from bench import common
from bench.easydel_baseline import EasyDeL, checked
from blink_jax.data.prompt_batch import PromptBatch
from blink_jax.inference.generate import decode_step, first_positions
from blink_jax.models import token_sr
from blink_jax.inference.pipeline import Pipeline

flags.DEFINE_enum("shape", "medium", list(common.SHAPES), "Model shape (7b needs an accelerator; tiny only checks the script runs).")
flags.DEFINE_list("batches", ["1", "8"], "Batch sizes.")
flags.DEFINE_integer("new_tokens", 32, "Tokens generated per example.")
flags.DEFINE_integer("repeats", 3, "Timed repeats of each generate call (median).")
flags.DEFINE_integer("step_repeats", 60, "Timed decode steps alone per mode (median).")
flags.DEFINE_string("easydel_python", "", "Python of a venv with bench/requirements-easydel.txt; when "
                    "given, EasyDeL's LLaVA is timed in the same run (checked against transformers first).")
flags.DEFINE_integer("text_tokens", 70, "Text tokens per prompt.")
flags.DEFINE_string("dtype", "float32", "Compute dtype.")
flags.DEFINE_string("ckpt_dir", os.path.join(tempfile.gettempdir(), "blink_bench_ckpt"), "Checkpoint cache.")
flags.DEFINE_enum("layer_layout", "auto", ["auto", "stacked", "per_layer"], "The pipeline's decoder params layout.")
FLAGS = flags.FLAGS


def decode_step_call(pipe: Pipeline, mode: str, batch: PromptBatch, room: int):
  """A zero-argument call running one compiled decode step of `mode` (what greedy_generate's loop body
  runs) on the cache of the mode's prefill, its cache donated and carried from call to call; it writes
  the new token at the room's positions 1 .. room - 1 in turn."""
  batch = pipe.layout_for(batch, mode)
  params = pipe.mode_params(mode)
  ids, pixels, lengths = (jnp.asarray(x) for x in (batch.ids, batch.pixels, batch.lengths))
  with pipe.partitioner.activated():
    logits, cache, valid, _ = jax.jit(pipe.prefill_fn(mode, batch.image_start), static_argnums=4)(
        params, ids, pixels, lengths, room)
  s0 = cache.length - room
  step = jax.jit(lambda p, tok, t, first, c, v: decode_step(pipe.model, p, tok, t, s0, first, c, v),
                 donate_argnums=4)
  first = first_positions(pipe.model, params, ids, pixels, lengths)
  tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  state = {"cache": cache, "valid": valid}
  positions = itertools.cycle(range(1, room))

  def call():
    with pipe.partitioner.activated():
      out, state["cache"], state["valid"] = step(params, tokens, jnp.int32(next(positions)), first,
                                                 state["cache"], state["valid"])
    return out
  return call


def bytes_floor_call(pipe: Pipeline, batch: PromptBatch, room: int):
  """(a zero-argument call of the least any decode step must do at this batch, the bytes it reads).

  One compiled program that reads every decoder weight once as a [B, k] x [k, n] product (all of
  the language model's matrices, the LM head included, the embedding table only where it is the
  tied head) and the whole vanilla KV cache once as one query per kv head against it: the bytes a
  step of any implementation must stream, with the multiply-adds they carry. Its time is this host's
  floor for a decode step; at batch 1 it is set by memory bandwidth."""
  flat = flax.traverse_util.flatten_dict(pipe.params["language_model"], sep="/")
  tied = pipe.cfg.text.tie_word_embeddings
  mats = [w for k, w in flat.items() if w.ndim >= 2 and (tied or "embed_tokens" not in k)]
  t = pipe.cfg.text
  b = batch.ids.shape[0]
  s = batch.ids.shape[1] + room
  cache = jnp.zeros((t.num_layers, b, t.num_kv_heads, s, t.head_dim), jnp.dtype(pipe.cfg.dtype))
  xs = [jnp.ones((b, int(np.prod(w.shape[:-1]))), w.dtype) for w in mats]
  q = jnp.ones((b, t.num_kv_heads, t.head_dim), cache.dtype)

  @jax.jit
  def floor(mats, xs, q, k, v):
    out = sum(jnp.sum(x @ w.reshape(x.shape[1], -1)) for w, x in zip(mats, xs))
    return out + jnp.sum(jnp.einsum("bkd,lbksd->lbks", q, k)) + jnp.sum(jnp.einsum("bkd,lbksd->lbkd", q, v))

  nbytes = sum(w.nbytes for w in mats) + 2 * cache.nbytes
  return (lambda: floor(mats, xs, q, cache, cache)), nbytes


def main(_):
  ckpt = common.hf_checkpoint(FLAGS.shape, FLAGS.ckpt_dir)
  pipe = common.pipeline(FLAGS.shape, ckpt, dtype=FLAGS.dtype, layer_layout=FLAGS.layer_layout)
  stacked = common.pipeline(FLAGS.shape, ckpt, dtype=FLAGS.dtype, layer_layout="stacked")
  if FLAGS.easydel_python and pipe.family.name != "llava":
    raise SystemExit(f"--easydel_python: the EasyDeL baseline runs LLaVA shapes; {FLAGS.shape} is {pipe.family.name}")
  # No EOS: every example generates exactly new_tokens, so runs are comparable.
  no_eos = lambda p: dataclasses.replace(p, cfg=dataclasses.replace(p.cfg, eos_token_id=-1, extra_eos_token_ids=()))  # noqa: E731
  pipe, stacked = no_eos(pipe), no_eos(stacked)
  blink = common.blink_for(pipe)
  tsr = token_sr.init_for(blink, pipe.cfg, jax.random.key(1))
  pipe = pipe.with_blink(blink, tsr)
  easydel = EasyDeL(FLAGS.easydel_python, ckpt, FLAGS.dtype) if FLAGS.easydel_python else None
  from skimage import data
  photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
  modes = ("vanilla", "interp", "tokensr")
  n = FLAGS.new_tokens
  rows, records = [], []
  for b in [int(x) for x in FLAGS.batches]:
    batch = pipe.prepare([photos[i % 4] for i in range(b)], prompts=[common.prompt(FLAGS.text_tokens, pipe)] * b)
    record = {"batch": b}
    calls = {(mode, k): (lambda mode=mode, k=k: pipe.generate_tokens(batch, k, mode)) for mode in modes for k in (1, n)}
    if easydel is not None:
      record["easydel_check"] = checked(easydel, batch, ckpt, FLAGS.dtype, n, pipe.generate_tokens(batch, n))
      calls.update({("easydel", k): easydel.call("generate", k) for k in (1, n)})
    seconds = common.time_interleaved(calls, repeats=FLAGS.repeats)
    floor_call, record["floor_bytes"] = bytes_floor_call(pipe, batch, n)
    steps = common.time_interleaved({**{mode: decode_step_call(pipe, mode, batch, n) for mode in modes},
                                     "floor": floor_call, "stacked": decode_step_call(stacked, "vanilla", batch, n)},
                                    repeats=FLAGS.step_repeats, warmup=2)
    record["floor_ms"] = 1e3 * steps.pop("floor")
    record["layer_layout"] = pipe.cfg.layer_layout
    record["stacked_vanilla_step_ms"] = 1e3 * steps.pop("stacked")
    for mode in modes + (("easydel",) if easydel else ()):
      first, full = seconds[mode, 1], seconds[mode, n]
      record[mode] = {"ttft_seconds": first, "total_seconds": full,
                      "decode_tokens_per_sec": b * (n - 1) / max(full - first, 1e-9),
                      "decode_ms_per_step": 1e3 * (full - first) / (n - 1)}
      if mode in steps:
        record[mode]["step_alone_ms"] = 1e3 * steps[mode]
    records.append(record)
    v = record["vanilla"]
    row = [b, f"{v['ttft_seconds'] * 1e3:.0f}", f"{v['decode_ms_per_step']:.1f}", f"{v['step_alone_ms']:.1f}",
           f"{record['floor_ms']:.1f} ({record['floor_bytes'] / 2**20:.0f} MiB)", f"{v['step_alone_ms'] / record['floor_ms']:.2f}",
           f"{record['stacked_vanilla_step_ms']:.1f}", f"{v['step_alone_ms'] / record['stacked_vanilla_step_ms']:.2f}"]
    row += [f"{record[m]['step_alone_ms'] / v['step_alone_ms']:.3f}" for m in ("interp", "tokensr")]
    row += [f"{record[m]['ttft_seconds'] / v['ttft_seconds']:.3f}" for m in ("interp", "tokensr")]
    if easydel is not None:
      e = record["easydel"]
      row += [f"{e['ttft_seconds'] * 1e3:.0f}", f"{e['decode_ms_per_step']:.1f}",
              f"{v['ttft_seconds'] / e['ttft_seconds']:.3f}", f"{v['decode_ms_per_step'] / e['decode_ms_per_step']:.3f}",
              f"{v['step_alone_ms'] / e['decode_ms_per_step']:.3f}", f"{e['decode_ms_per_step'] / record['floor_ms']:.2f}"]
    rows.append(row)
  header = ["batch", "van TTFT ms", "van decode ms/step", f"van step alone ms ({pipe.cfg.layer_layout})",
            "floor ms (bytes)", "van step/floor", "stacked van step ms", "van step/stacked", "interp step/van", "tokensr step/van",
            "interp TTFT/van", "tokensr TTFT/van"]
  if easydel is not None:
    header += ["EasyDeL TTFT ms", "EasyDeL decode ms/step", "TTFT van/EasyDeL", "decode van/EasyDeL",
               "van step alone/EasyDeL decode", "EasyDeL decode/floor"]
    easydel.close()
  common.write(f"generation_{FLAGS.shape}", {"new_tokens": n, "records": records}, rows, header)
  common.bar_plot(f"generation_{FLAGS.shape}", [f"batch {r['batch']}" for r in records],
                  {m: [r[m]["decode_tokens_per_sec"] for r in records] for m in modes + (("easydel",) if easydel else ())},
                  "decode tokens / s", f"Greedy decoding ({FLAGS.shape}, {jax.devices()[0].platform})")


if __name__ == "__main__":
  app.run(main)
