"""Evaluation of LLaVA-1.5-13B (beyond the paper's 7B) with the spec's Blink settings carried to 40
layers (scanning 15..22; blink.config.defaults_for), bf16, sharded over every chip; sized for a v5e-8
(`aot.topology`; `python -m blink_jax.aot --config configs/eval_13b.py` checks the fit).

  python eval.py --config configs/eval_13b.py --config.model.hf_checkpoint=/ckpts/llava-1.5-13b-hf \\
      --config.token_sr=/ckpts/runs/tokensr_13b/export --config.benchmarks=mme,pope ...
"""

import dataclasses

from blink_jax.blink.config import defaults_for
from blink_jax.models import presets
from configs import eval_7b


def get_config():
  c = eval_7b.get_config()
  c.model.preset = "llava-1.5-13b"
  cfg = presets.get(c.model.preset)
  c.blink = type(c.blink)(dataclasses.asdict(defaults_for(cfg.vision.grid, cfg.text.num_layers)))
  c.batch_size = 32
  c.aot.topology = "v5e:2x4"
  c.output_dir = "runs/eval_13b"
  return c
