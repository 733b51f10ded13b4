"""The LLaVA a job's `config.model` describes, for train.py, eval.py and the aot command alike: its
shape (the checkpoint's config.json or a named preset), its params (loaded from model.hf_checkpoint,
random from the preset, or abstract: shapes with shardings) and the prompt tokens before the image."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from blink_jax import families
from blink_jax import sharding as shd
from blink_jax.convert.hf_llava import abstract_params, load_hf_llava
from blink_jax.data.prompt import vicuna_v1_prompt
from blink_jax.models import presets
from blink_jax.models.llava import Llava
from blink_jax.models.llava_config import LlavaConfig, read_hf_config
from blink_jax.tokenizer import Tokenizer


def model_config(model_cfg: ml_collections.ConfigDict) -> LlavaConfig:
  """The model's shape: model.hf_checkpoint's config.json, or the named model.preset."""
  runtime = dict(dtype=model_cfg.dtype, param_dtype=model_cfg.param_dtype, remat=model_cfg.remat,
                 attention=model_cfg.attention)
  if model_cfg.hf_checkpoint:
    family = families.of_checkpoint(model_cfg.hf_checkpoint)
    if family.name != "llava":
      raise ValueError(f"{model_cfg.hf_checkpoint}: a {family.name} checkpoint; training TokenSR and the aot "
                       f"command run LLaVA-1.5 only so far (eval.py and Pipeline run {family.name} in vanilla "
                       "mode)")
    return read_hf_config(model_cfg.hf_checkpoint, **runtime)
  return presets.get(model_cfg.preset, **runtime)


def build(model_cfg: ml_collections.ConfigDict, partitioner: shd.Partitioner, seed: int,
          abstract: bool = False) -> tuple[LlavaConfig, Any]:
  """The frozen LLaVA: loaded from model.hf_checkpoint, or random-initialised from model.preset; with
  `abstract`, only shapes with shardings (nothing is read but config.json; see sharding.create)."""
  cfg = model_config(model_cfg)
  if model_cfg.hf_checkpoint and not abstract:
    return load_hf_llava(model_cfg.hf_checkpoint, partitioner=partitioner, dtype=cfg.dtype,
                         param_dtype=cfg.param_dtype, remat=cfg.remat, attention=cfg.attention)
  shardings = partitioner.shardings(abstract_params(cfg))
  model = Llava(cfg)
  v = cfg.vision

  def init(rng):
    ids = jnp.zeros((1, 8), jnp.int32)
    pixels = jnp.zeros((1, v.image_size, v.image_size, v.num_channels))
    return nn.meta.unbox(model.init(rng, ids, pixels, jnp.zeros((1, 8), jnp.int32),
                                    jnp.ones((1, 8), bool))["params"])

  return cfg, shd.create(init, shardings, jax.random.key(seed), abstract=abstract)


def prompt_prefix(model_cfg: ml_collections.ConfigDict, cfg: LlavaConfig) -> np.ndarray:
  """The prompt tokens before the image: the checkpoint's tokenizer on the vicuna_v1 template, or, for
  a random model, a fixed stand-in of model.prefix_len tokens starting with BOS."""
  if model_cfg.hf_checkpoint:
    ids = Tokenizer(model_cfg.hf_checkpoint).encode_prompt(vicuna_v1_prompt(""), cfg.num_image_tokens)
    return ids[:int(np.argmax(ids == cfg.image_token_id))]
  rng = np.random.default_rng(0)
  rest = rng.integers(3, cfg.text.vocab_size, model_cfg.prefix_len - 1)
  rest = np.where(rest == cfg.image_token_id, 3, rest)
  return np.concatenate([[cfg.bos_token_id], rest]).astype(np.int32)
