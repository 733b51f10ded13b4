"""Prefill: latency and tokens/s of vanilla / interp / tokensr at several batch sizes, the same
forward pass in transformers (sdpa and eager) and, where its environment is given, EasyDeL's LLaVA
(bench/easydel_baseline.py) on the same weights and inputs, the compiled memory of each mode, and the
saliency side product's share of a scanning layer.

  python -m bench.prefill [--shape medium|qwen_medium|7b|tiny] [--attention auto|xla|blocked|splash] [--batches 1,8,32] [--repeats 5]
                          [--easydel_python PY]
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

# On a GPU, JAX would otherwise take 75% of its memory up front and leave too little to PyTorch.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp
from absl import app, flags

from bench import common
from bench.easydel_baseline import EasyDeL, checked
from blink_jax.blink.config import BlinkConfig
from blink_jax.blink.prefill import blink_prefill, slot_layout
from blink_jax.blink.saliency import last_token_shares
from blink_jax.models.attention_kernels import IMPLEMENTATIONS, resolve
from blink_jax.models.llama import LayerInputs
from blink_jax.models.vision_language import decoder_layer, text_layer_params
from blink_jax.models.token_sr import init_for
from blink_jax.inference.pipeline import Pipeline

flags.DEFINE_enum("shape", "medium", list(common.SHAPES), "Model shape (7b needs an accelerator; tiny only checks the script runs).")
flags.DEFINE_list("batches", ["1", "8", "32"], "Batch sizes.")
flags.DEFINE_integer("repeats", 5, "Timed repeats (median reported).")
flags.DEFINE_string("dtype", "float32", "Compute dtype (bfloat16 on GPU/TPU).")
flags.DEFINE_enum("attention", "auto", list(IMPLEMENTATIONS), "Attention kernel of the JAX model "
                  "(auto: blocked on CPU, splash on TPU, xla elsewhere).")
flags.DEFINE_bool("torch", True, "Also time transformers (sdpa, eager).")
flags.DEFINE_integer("text_tokens", 70, "Text tokens per prompt besides the visual ones (LLaVA's "
                     "vicuna_v1 prompts carry about 60-100); long ones make Blink cross a bucket.")
flags.DEFINE_string("easydel_python", "", "Python of a venv with bench/requirements-easydel.txt; when "
                    "given, EasyDeL's LLaVA is timed in the same run (checked against transformers first).")
flags.DEFINE_string("ckpt_dir", os.path.join(tempfile.gettempdir(), "blink_bench_ckpt"),
                    "Where the random HF checkpoint is built (reused).")
FLAGS = flags.FLAGS



def saliency_share(pipe: Pipeline, blink: BlinkConfig, batch) -> tuple[float, float]:
  """(seconds of one scanning layer on the full layout, seconds of its saliency side product)."""
  cfg = pipe.cfg
  layout = slot_layout(pipe.model, blink, batch.image_start, batch.ids.shape[1], batch.pixels.shape)
  b, s, d = batch.ids.shape[0], layout.full_len, cfg.text.hidden_size
  h = jax.random.normal(jax.random.key(0), (b, s, d), jnp.dtype(cfg.dtype))
  positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.float32), (b, s))
  if layout.mrope:   # multimodal RoPE: (temporal, height, width) positions
    positions = jnp.repeat(positions[..., None], 3, axis=-1)
  valid = jnp.ones((b, s), bool)
  layer_params = text_layer_params(pipe.params, blink.first_scan_layer)
  layer = decoder_layer(cfg)
  last = jnp.full((b,), s - 1)

  @jax.jit
  def run_layer(p, h):
    (out, _), kv = layer.apply({"params": p}, (h, LayerInputs(positions, None)), (valid, None))
    return out, kv.k

  _, keys = run_layer(layer_params, h)

  @jax.jit
  def saliency(p, h, keys):   # what Blink's prefill adds to a scanning layer
    return last_token_shares(layer, p, h, positions, last, keys, valid, batch.image_start, layout.num_visual,
                             layout.grid, blink)

  return (common.time_call(run_layer, layer_params, h, repeats=FLAGS.repeats),
          common.time_call(saliency, layer_params, h, keys, repeats=FLAGS.repeats))


def main(_):
  import torch
  torch.set_num_threads(os.cpu_count())
  shape = common.SHAPES[FLAGS.shape]
  ckpt = common.hf_checkpoint(FLAGS.shape, FLAGS.ckpt_dir)
  pipe = common.pipeline(FLAGS.shape, ckpt, dtype=FLAGS.dtype, attention=FLAGS.attention)  # default length buckets
  if FLAGS.easydel_python and pipe.family.name != "llava":
    raise SystemExit(f"--easydel_python: the EasyDeL baseline runs LLaVA shapes; {FLAGS.shape} is {pipe.family.name}")
  kernel = resolve(FLAGS.attention)
  blink = common.blink_for(pipe)
  params = {**pipe.params, "token_sr": init_for(blink, pipe.cfg, jax.random.key(1))}
  model = pipe.model
  # The same model on XLA's attention kernel, to show what the chosen kernel gains in this run.
  xla_model = type(model)(pipe.cfg.replace(attention="xla")) if kernel != "xla" else None
  easydel = EasyDeL(FLAGS.easydel_python, ckpt, FLAGS.dtype) if FLAGS.easydel_python else None
  from skimage import data
  photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]

  rows, records = [], []
  for b in [int(x) for x in FLAGS.batches]:
    batch = pipe.prepare([photos[i % 4] for i in range(b)], prompts=[common.prompt(FLAGS.text_tokens, pipe)] * b)
    blink_batch = pipe.with_blink(blink).layout_for(batch, "tokensr")
    vanilla = lambda m: jax.jit(lambda p, i, x, l: m.apply({"params": p}, i, x, l, method="prefill")[0])  # noqa: E731
    fns = {"vanilla": (vanilla(model), batch)}
    for mode in ("interp", "tokensr"):
      cfg = dataclasses.replace(blink, mode=mode)
      fns[mode] = (jax.jit(lambda p, i, x, l, cfg=cfg: blink_prefill(model, cfg, p, i, x, l,
                                                                      image_start=batch.image_start).logits),
                   blink_batch)
    if xla_model is not None:
      fns["vanilla_xla_attention"] = (vanilla(xla_model), batch)
    args = {mode: (params, *(jnp.asarray(x) for x in (used.ids, used.pixels, used.lengths)))
            for mode, (_, used) in fns.items()}
    calls = {mode: (lambda fn=fn, a=args[mode]: fn(*a)) for mode, (fn, _) in fns.items()}
    if FLAGS.torch:
      calls.update({f"torch_{impl}": common.torch_forward(ckpt, batch, impl, FLAGS.dtype) for impl in ("sdpa", "eager")})
    if easydel is not None:
      easydel_check = checked(easydel, batch, ckpt, FLAGS.dtype)
      calls["easydel"] = easydel.call("prefill")
    seconds = common.time_interleaved(calls, repeats=FLAGS.repeats)
    tokens = int(batch.lengths.sum())
    record = {"batch": b, "prompt_tokens": tokens, "vanilla_length": int(batch.ids.shape[1]),
              "blink_length": int(blink_batch.ids.shape[1]) + blink.num_slots}
    for name, sec in seconds.items():
      record[name] = {"seconds": sec, "tokens_per_sec": tokens / sec}
      if name in fns:
        record[name]["compiled_bytes"] = common.compiled_bytes(fns[name][0], *args[name])
    if easydel is not None:
      record["easydel_check"] = easydel_check
    layer_s, sal_s = saliency_share(pipe, blink, batch)
    record["scan_layer_seconds"], record["saliency_seconds"] = layer_s, sal_s
    records.append(record)
    v = record["vanilla"]["seconds"]
    row = [b, tokens, f"{record['vanilla_length']}/{record['blink_length']}", f"{v * 1e3:.1f}", f"{record['interp']['seconds'] / v:.3f}",
           f"{record['tokensr']['seconds'] / v:.3f}", f"{100 * sal_s / layer_s:.2f}%"]
    if FLAGS.torch:
      row += [f"{v / record['torch_sdpa']['seconds']:.3f}", f"{v / record['torch_eager']['seconds']:.3f}"]
    if xla_model is not None:
      row += [f"{record['vanilla_xla_attention']['seconds'] / v:.3f}"]
    if easydel is not None:
      row += [f"{v / record['easydel']['seconds']:.3f}"]
    row += [f"{record['vanilla']['compiled_bytes'] / 2**20:.0f}", f"{record['tokensr']['compiled_bytes'] / 2**20:.0f}"]
    rows.append(row)

  header = ["batch", "tokens", "len van/blink", "vanilla ms", "interp/van", "tokensr/van", "saliency/layer"]
  if FLAGS.torch:
    header += ["jax/sdpa", "jax/eager"]
  if xla_model is not None:
    header += ["xla-attn/van"]
  if easydel is not None:
    header += ["jax/EasyDeL"]
    easydel.close()
  header += ["van MiB", "tsr MiB"]
  name = f"prefill_{FLAGS.shape}_text{FLAGS.text_tokens}"
  common.write(name, {"shape": shape, "blink": dataclasses.asdict(blink), "attention": kernel,
                                          "peak_device_bytes": common.peak_device_bytes(),
                                          "records": records}, rows, header)
  series = {m: [r[m]["tokens_per_sec"] for r in records] for m in ("vanilla", "interp", "tokensr")}
  if FLAGS.torch:
    series.update({f"torch {i}": [r[f"torch_{i}"]["tokens_per_sec"] for r in records] for i in ("sdpa", "eager")})
  if easydel is not None:
    series["EasyDeL"] = [r["easydel"]["tokens_per_sec"] for r in records]
  common.bar_plot(name, [f"batch {r['batch']}" for r in records], series,
                  "prompt tokens / s", f"Prefill throughput ({FLAGS.shape}, {jax.devices()[0].platform})")


if __name__ == "__main__":
  app.run(main)
