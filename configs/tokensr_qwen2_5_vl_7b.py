"""TokenSR distillation against Qwen2.5-VL-7B-Instruct on a TPU slice, sized for a v5e-8
(`aot.topology`; `python -m blink_jax.aot --config configs/tokensr_qwen2_5_vl_7b.py` compiles its train
step there and checks it fits with 10% HBM headroom). Blink's settings carried to the 28-layer decoder
(scanning layers 10..16, p = 4, C = 512: configs/eval_qwen2_5_vl_7b.py's, so its export serves that
eval config). Every training image takes the 32x32 grid bucket (896 x 896 px, 1024 visual tokens:
one compiled step); the teacher re-encodes each region's crop as an 8x8-token image. Set the
checkpoint and data on the command line:

  python train.py --config configs/tokensr_qwen2_5_vl_7b.py \\
      --config.model.hf_checkpoint=/ckpts/Qwen2.5-VL-7B-Instruct \\
      --config.data.image_folder=gs://bucket/llava_images --config.data.data_dir=gs://bucket/tfds \\
      --config.workdir=gs://bucket/runs/tokensr_qwen2_5_vl_7b
"""

import dataclasses

from blink_jax.blink.config import defaults_for
from configs import tokensr


def get_config():
  c = tokensr.get_config()
  c.workdir = "runs/tokensr_qwen2_5_vl_7b"
  c.model.preset = "qwen2.5-vl-7b"   # the shape when no checkpoint is given (aot sizing, random runs)
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "bfloat16"
  c.model.preprocessing = "32x32"    # one grid bucket for every training image
  c.blink = type(c.blink)(dataclasses.asdict(defaults_for(None, 28)))   # layers 10..16, p = 4
  c.data.workers = 16
  c.train.steps = 20000
  c.train.batch_size = 256           # global: 2 micro-batches of 128 (16 per chip on a v5e-8: 10.4 of its 16 GiB)
  c.train.grad_accum_steps = 2
  c.train.learning_rate = 1e-4
  c.train.warmup_steps = 500
  c.checkpoint.every = 1000
  c.mesh.update(dict(data=1, fsdp=-1, tensor=1))   # the frozen backbone sharded over every chip
  c.aot.topology = "v5e:2x4"
  c.distributed.enabled = True
  return c
