"""TokenSR distillation against LLaVA-1.5-13B (beyond the paper's 7B), sized for a v5e-8
(`aot.topology`; `python -m blink_jax.aot --config configs/tokensr_13b.py` checks the fit). The spec's
Blink settings carried to 40 layers (blink.config.defaults_for): the same relative scanning depth.

  python train.py --config configs/tokensr_13b.py \\
      --config.model.hf_checkpoint=/ckpts/llava-1.5-13b-hf \\
      --config.data.image_folder=gs://bucket/llava_images --config.data.data_dir=gs://bucket/tfds \\
      --config.workdir=gs://bucket/runs/tokensr_13b
"""

import dataclasses

from blink_jax.blink.config import defaults_for
from blink_jax.models import presets
from configs import tokensr_7b


def get_config():
  c = tokensr_7b.get_config()
  c.model.preset = "llava-1.5-13b"
  cfg = presets.get(c.model.preset)
  c.blink = type(c.blink)(dataclasses.asdict(defaults_for(cfg.vision.grid, cfg.text.num_layers)))
  c.train.batch_size = 256           # global; 32 per chip on a v5e-8, in 2 micro-batches of 16
  c.train.grad_accum_steps = 2
  c.aot.topology = "v5e:2x4"
  return c
