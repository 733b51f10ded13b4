"""Evaluation. With no overrides: the embedded default (the random model train.py's default trains,
with its exported TokenSR when that run exists; a few generated questions of every benchmark and
format; CPU, minutes). For LLaVA-1.5-7B:

  python eval.py --config configs/eval.py --config.model.hf_checkpoint=/ckpts/llava-1.5-7b-hf \
      --config.token_sr=runs/tokensr_7b/export --config.blink.first_scan_layer=12 ... \
      --config.benchmarks=mme,pope --config.sources.mme.format=parquet \
      --config.sources.mme.path=gs://bucket/lmms-lab/MME/data --config.model.dtype=bfloat16
"""

import dataclasses

import ml_collections

from blink_jax.blink.config import RANDOM_MODEL_THRESHOLDS, BlinkConfig
from blink_jax.data.image_preprocessing import DEFAULT_MAX_PIXELS
from blink_jax.eval.benchmarks import BENCHMARKS, BLINK_MODES
from blink_jax.inference.zoom import ZoomConfig
from blink_jax.eval.readers import SOURCE_FIELDS
from blink_jax.inference.pipeline import DEFAULT_BUCKETS
from configs import tokensr



def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.output_dir = "runs/eval"
  c.seed = 0
  c.benchmarks = ",".join(BENCHMARKS)   # comma-separated
  c.modes = ",".join(BLINK_MODES)     # comma-separated, of vanilla, interp, tokensr, zoom
  c.batch_size = 8
  c.max_new_tokens = 16
  # Blink modes against vanilla: resamples of the paired bootstrap interval (0: the difference only)
  c.bootstrap_samples = 1000
  # Blink modes on benchmarks whose questions carry the target's box (fine_detail): per scanning layer
  # the saliency's hit rate, expansions and drops, accuracy by whether the target was expanded (zoom:
  # whether its crop holds the target)
  # (eval/diagnostics.py; one more traced prefill per batch)
  c.diagnostics = False
  c.max_image_pixels = DEFAULT_MAX_PIXELS  # larger images: reduced-scale JPEG decode, else a counted skip (0: no limit)
  c.prompt_buckets = ",".join(str(b) for b in DEFAULT_BUCKETS)
  # train.py's export/ directory. "auto": for the embedded model, the default train job's export
  # (runs/tokensr/export) when it exists; otherwise (and with ""), untrained TokenSR (= interp).
  c.token_sr = "auto"
  c.model = tokensr.get_config().model
  # The embedded model is random: thresholds at which Blink acts on its nearly uniform saliency.
  c.blink = ml_collections.ConfigDict(dataclasses.asdict(BlinkConfig(
      first_scan_layer=2, last_scan_layer=4, region_size=2, token_sr_channels=32, **RANDOM_MODEL_THRESHOLDS)))
  # Mode zoom (attention-guided zoom, ViCrop): the layer whose attention guides the crop (-1: 14 of
  # 32 carried to the model's depth), the crop's share of the image side, rel-att's division
  c.zoom = ml_collections.ConfigDict(dataclasses.asdict(ZoomConfig()))
  # Per benchmark: where its data is. All fields empty: the embedded sample.
  #   parquet: path (file, directory or glob; local or gs://), images (GQA's image parquet)
  #   llava:   questions (.jsonl), image_folder, annotations (.jsonl, optional)
  #   tfds:    name, data_dir, split
  # Images given by path are read only inside image_folder ("/" admits any absolute local path).
  c.sources = ml_collections.ConfigDict({name: {f: "" for f in SOURCE_FIELDS} for name in BENCHMARKS})
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  # python -m blink_jax.aot: the topology compiled for by default, and the prompt's text tokens
  c.aot = ml_collections.ConfigDict(dict(topology="v5e:2x2", text_tokens=64))
  c.sharding_rules = ""             # overrides of sharding.DEFAULT_RULES, e.g. "embed=fsdp,mlp=tensor"
  return c
