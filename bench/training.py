"""TokenSR training throughput: steps/s and examples/s of the jitted train step; FLOPs per step from
XLA's cost analysis, and model FLOPs utilisation when --peak_tflops (the device's peak) is given.

  python -m bench.training [--shape tiny|medium|qwen_tiny] [--batch 8] [--steps 20] [--peak_tflops 989]
"""

from __future__ import annotations

import time

import jax
from absl import app, flags

from bench import common
from blink_jax import sharding as shd
from blink_jax.train.step import train_program
from configs import tokensr

flags.DEFINE_enum("shape", "medium", ["tiny", "medium", "qwen_tiny"],
                  "tiny: the default job's model; qwen_tiny: its sizes as Qwen2.5-VL (preset qwen2.5-vl-tiny, "
                  "16x16-token images).")
flags.DEFINE_integer("batch", 8, "Global batch.")
flags.DEFINE_integer("steps", 20, "Timed steps.")
flags.DEFINE_float("peak_tflops", 0.0, "Device peak TFLOP/s for MFU (e.g. 989 for H100 bf16 dense).")
FLAGS = flags.FLAGS


def config():
  c = tokensr.get_config()
  c.train.batch_size = FLAGS.batch
  c.data.region = "random"   # images only: the batch is pixels
  if FLAGS.shape == "medium":
    c.model.preset = "medium"
    c.blink.update(first_scan_layer=3, last_scan_layer=4, region_size=4, token_sr_channels=64)
  if FLAGS.shape == "qwen_tiny":
    c.model.preset = "qwen2.5-vl-tiny"
    c.model.preprocessing = "16x16"
  return c


def main(_):
  c = config()
  partitioner = shd.Partitioner.from_config(c)
  program = train_program(c, partitioner)
  step, state, frozen, pixels = program.step, program.state, program.frozen, program.batch["pixels"]
  batch = {"pixels": jax.device_put(jax.random.normal(jax.random.key(0), pixels.shape), pixels.sharding)}
  flops = step.lower(state, frozen, batch).compile().cost_analysis().get("flops", 0.0)
  with partitioner.activated():
    state, m = step(state, frozen, batch)  # compile + warm-up
    jax.block_until_ready(m)
    t = time.perf_counter()
    for _ in range(FLAGS.steps):
      state, m = step(state, frozen, batch)
    jax.block_until_ready(m)
    seconds = (time.perf_counter() - t) / FLAGS.steps
  achieved = flops / seconds / 1e12
  mfu = achieved / FLAGS.peak_tflops if FLAGS.peak_tflops else None
  row = [FLAGS.shape, FLAGS.batch, f"{1 / seconds:.2f}", f"{FLAGS.batch / seconds:.1f}", f"{flops / 1e9:.1f}",
         f"{achieved * 1e3:.1f}", f"{100 * mfu:.1f}%" if mfu is not None else "n/a"]
  common.write(f"training_{FLAGS.shape}", {"batch": FLAGS.batch, "seconds_per_step": seconds, "flops_per_step": flops,
                                           "achieved_tflops": achieved, "mfu": mfu}, [row],
               ["model", "batch", "steps/s", "examples/s", "GFLOP/step", "GFLOP/s", "MFU"])
  common.bar_plot(f"training_{FLAGS.shape}", [FLAGS.shape], {"examples/s": [FLAGS.batch / seconds]},
                  "examples / s", f"TokenSR distillation ({jax.devices()[0].platform})")


if __name__ == "__main__":
  app.run(main)
