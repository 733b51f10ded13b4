"""TokenSR distillation against LLaVA-1.5-7B on a TPU slice, sized for a v5e-8 (`aot.topology`:
`python -m blink_jax.aot --config configs/tokensr_7b.py` compiles its train step there and checks it
fits with 10% HBM headroom; docs/tpu.md has what fits where). Set the checkpoint and data on the
command line:

  python train.py --config configs/tokensr_7b.py \\
      --config.model.hf_checkpoint=/ckpts/llava-1.5-7b-hf \\
      --config.data.image_folder=gs://bucket/llava_images --config.data.data_dir=gs://bucket/tfds \\
      --config.workdir=gs://bucket/runs/tokensr_7b
"""

import dataclasses

from blink_jax.blink.config import BlinkConfig
from configs import tokensr


def get_config():
  c = tokensr.get_config()
  c.model.preset = "llava-1.5-7b"    # the shape when no checkpoint is given (aot sizing, random runs)
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "bfloat16"
  c.blink = type(c.blink)(dataclasses.asdict(BlinkConfig()))   # the spec's defaults: layers 12..18, p=4
  c.data.workers = 16
  c.train.steps = 20000
  c.train.batch_size = 256           # global; 32 per chip on a v5e-8 (8.7 of its 16 GiB)
  c.train.learning_rate = 1e-4
  c.train.warmup_steps = 500
  c.checkpoint.every = 1000
  c.mesh.update(dict(data=1, fsdp=-1, tensor=1))   # the frozen 7B backbone sharded over every chip
  c.aot.topology = "v5e:2x4"
  c.distributed.enabled = True
  c.train.log_every = 50
  return c
