"""Evaluation of Qwen2.5-VL-7B-Instruct, vanilla and Blink with the spec's settings carried to its
28-layer decoder (scanning layers 10..16, ours: the relative depth of 12..18 of 32; p = 4, C = 512,
tau_exp = 3/36, tau_drop = tau_exp / 2), images in the default grid buckets (up to 32x32 visual
tokens), bf16, the model sharded over every chip (fsdp). Sized for a v5e-8 (`aot.topology`; `python
-m blink_jax.aot --config configs/eval_qwen2_5_vl_7b.py` checks it fits). Set the checkpoint and data
on the command line:

  python eval.py --config configs/eval_qwen2_5_vl_7b.py \\
      --config.model.hf_checkpoint=/ckpts/Qwen2.5-VL-7B-Instruct --config.modes=vanilla,interp ...
"""

import dataclasses

from blink_jax.blink.config import defaults_for
from blink_jax.inference.pipeline import DEFAULT_BUCKETS
from configs import eval as eval_config


def get_config():
  c = eval_config.get_config()
  c.model.preset = "qwen2.5-vl-7b"   # the shape when no checkpoint is given (aot sizing)
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "bfloat16"
  c.model.preprocessing = "buckets"
  c.blink = type(c.blink)(dataclasses.asdict(defaults_for(None, 28)))   # layers 10..16, p = 4
  c.token_sr = ""
  c.batch_size = 64                  # 8 per chip on a v5e-8
  # 64-token steps past 1024 too: a 32x32 bucket's 1024 visual tokens + the chat template + the question
  c.prompt_buckets = ",".join(str(b) for b in sorted(set(DEFAULT_BUCKETS) | {1088, 1152, 1216}))
  c.mesh.update(dict(data=1, fsdp=-1, tensor=1))
  c.aot.topology = "v5e:2x4"
  c.output_dir = "runs/eval_qwen2_5_vl_7b"
  return c
