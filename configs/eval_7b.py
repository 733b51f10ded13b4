"""Evaluation of LLaVA-1.5-7B with the spec's Blink settings (layers 12..18, p = 4, C = 512,
tau_exp = 3/36, tau_drop = tau_exp / 2), bf16, the model sharded over every chip (fsdp). Sized for a
v5e-8 (`aot.topology`; `python -m blink_jax.aot --config configs/eval_7b.py` checks it fits). Set the
checkpoint, TokenSR export and data on the command line:

  python eval.py --config configs/eval_7b.py --config.model.hf_checkpoint=/ckpts/llava-1.5-7b-hf \\
      --config.token_sr=/ckpts/runs/tokensr_7b/export --config.benchmarks=mme,pope ...
"""

import dataclasses

from blink_jax.blink.config import BlinkConfig
from configs import eval as eval_config


def get_config():
  c = eval_config.get_config()
  c.model.preset = "llava-1.5-7b"    # the shape when no checkpoint is given (aot sizing)
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "bfloat16"
  c.blink = type(c.blink)(dataclasses.asdict(BlinkConfig()))   # the spec's defaults
  c.token_sr = ""
  c.batch_size = 64                  # 8 per chip on a v5e-8
  c.mesh.update(dict(data=1, fsdp=-1, tensor=1))
  c.aot.topology = "v5e:2x4"
  c.output_dir = "runs/eval_7b"
  return c
