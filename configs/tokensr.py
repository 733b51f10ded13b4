"""TokenSR distillation (or, with train.objective="sft", supervised fine-tuning). With no overrides: the embedded default (a small random LLaVA-shaped model,
the sample photographs scikit-image ships, CPU, a few minutes). Every field can be overridden with
--config.FIELD=VALUE; configs/tokensr_7b.py is the LLaVA-1.5-7B preset."""

import dataclasses

import ml_collections

from blink_jax.blink.config import BlinkConfig
from blink_jax.data.image_preprocessing import DEFAULT_MAX_PIXELS
from blink_jax.eval.readers import SOURCE_FIELDS

def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.workdir = "runs/tokensr"
  c.seed = 0
  c.log_batch_indices = False      # write each step's example indices to workdir (resume checks)
  c.resume_despite_changes = False  # resume even if config/data differ from workdir/run.json (warns)

  c.model = ml_collections.ConfigDict()
  c.model.hf_checkpoint = ""       # a llava-hf or Qwen2.5-VL checkpoint directory; empty: random model from preset
  c.model.params = ""              # an SFT run's export/model (params for that checkpoint or preset); empty: its own
  c.model.preset = "tiny"          # models/presets.py: tiny | medium | llava-1.5-7b | llava-1.5-13b | qwen2.5-vl-tiny | ...
  c.model.dtype = "float32"
  c.model.param_dtype = "float32"
  c.model.remat = False
  c.model.attention = "auto"    # prompt-pass attention kernel: auto (blocked on CPU, splash on TPU, xla elsewhere) | xla | blocked | splash
  c.model.layer_layout = "auto"  # decoder params: auto (per_layer for inference on CPU, else stacked) | stacked | per_layer (inference only)
  c.model.preprocessing = "auto"   # blink_jax/families.py: LLaVA pad (auto) | crop; Qwen one grid bucket, e.g. 24x32 (auto: 32x32)

  c.blink = ml_collections.ConfigDict(dataclasses.asdict(BlinkConfig(
      first_scan_layer=2, last_scan_layer=4, region_size=2, token_sr_channels=32)))

  c.data = ml_collections.ConfigDict()
  c.data.name = ""                 # a TFDS dataset name (e.g. "coco/2017") in data_dir
  c.data.data_dir = ""             # local or gs://; default: workdir/tfds
  c.data.split = "train"
  c.data.image_folder = ""         # a folder of images, built into TFDS array_record once
  c.data.image_key = "image"
  c.data.sample_images = 64        # embedded default: how many sample images to write
  c.data.workers = 0               # grain multiprocessing workers (0: threads in-process)
  c.data.region = "saliency"       # saliency: the most salient region for examples with a question
                                   # (random for those without); random: always random
  c.data.max_question_tokens = 48  # question tokens kept (from the end) for saliency
  c.data.max_image_pixels = DEFAULT_MAX_PIXELS  # larger images: reduced-scale JPEG decode, else skipped (0: no limit)
  c.data.max_consecutive_skips = 1000   # stop with an error after this many unusable images in a row
  # train.objective="sft": (image, question, answer) examples from a source as eval.py reads them
  # (format llava | parquet | tfds | folder, and its fields); a step's sequence holds the image's tokens
  # plus max_text_tokens (template, question and answer; longer examples are skipped and named)
  # benchmark: ask each row's question as eval.py asks that benchmark's (e.g. fine_detail; "": as is)
  c.data.sft = ml_collections.ConfigDict({f: "" for f in SOURCE_FIELDS + ("benchmark",)})
  c.data.sft_validation = ml_collections.ConfigDict({f: "" for f in SOURCE_FIELDS + ("benchmark",)})  # held out
  c.data.max_text_tokens = 64

  c.train = ml_collections.ConfigDict()
  c.train.objective = "distill"    # distill: TokenSR against the frozen model (spec); sft: answers' cross-entropy
  c.train.steps = 600
  c.train.batch_size = 8           # global
  c.train.grad_accum_steps = 1
  c.train.learning_rate = 3e-3
  c.train.final_lr_fraction = 0.1
  c.train.warmup_steps = 10
  c.train.weight_decay = 0.0
  c.train.clip_norm = 1.0
  c.train.temperature = 1.0
  c.train.cosine_weight = 0.1
  c.train.trainable = "token_sr/.*"  # regex over param paths; everything else is frozen
  c.train.log_every = 50
  c.train.validate_every = 0       # sft: score data.sft_validation every so many steps (0: never)
  c.train.patience = 0             # sft: stop once answer accuracy has not improved for this many validations (0: never)
  c.train.sft_expand = 0.0         # sft: share of examples with a target box fine-tuned with its region expanded at
                                   # every scanning layer, the teacher's tokens in the slots (sft.py; 0: plain)

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 200
  c.checkpoint.keep = 3
  c.checkpoint.async_save = True
  c.checkpoint.fallback_on_corrupt = True  # a checkpoint that fails to restore: warn, set it aside, use the previous

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.sharding_rules = ""             # overrides of sharding.DEFAULT_RULES, e.g. "embed=fsdp,mlp=tensor"

  c.aot = ml_collections.ConfigDict()
  c.aot.topology = "v5e:2x2"       # what `python -m blink_jax.aot` compiles this job for by default

  c.distributed = ml_collections.ConfigDict()
  c.distributed.enabled = False    # jax.distributed.initialize() (multi-host)
  c.distributed.coordinator_address = ""   # empty: auto-detected (TPU pods, SLURM)
  c.distributed.num_processes = 1
  c.distributed.process_id = 0
  return c
