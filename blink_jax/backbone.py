"""The model a job's `config.model` describes (LLaVA-1.5 or Qwen2.5-VL: families.py), for train.py,
eval.py and the aot command alike: its shape (the checkpoint's config.json or a named preset), its
params (loaded from model.hf_checkpoint, random from the preset, or abstract: shapes with shardings)
and the prompt tokens before the image."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from blink_jax import families
from blink_jax import sharding as shd
from blink_jax.checkpoint import load_model
from blink_jax.models import presets, vision_language
from blink_jax.models.layer_stack import per_layer_params, resolve_layout
from blink_jax.data.tokenizer import Tokenizer, byte_level_tokenizer


def model_config(model_cfg: ml_collections.ConfigDict, platform: str = "cpu", training: bool = False) -> Any:
  """The model's shape: model.hf_checkpoint's config.json, or the named model.preset; its decoder's
  layer layout resolved for `platform` and the job (layer_stack.resolve_layout)."""
  runtime = dict(dtype=model_cfg.dtype, param_dtype=model_cfg.param_dtype, remat=model_cfg.remat,
                 attention=model_cfg.attention,
                 layer_layout=resolve_layout(model_cfg.layer_layout, platform, training))
  if model_cfg.hf_checkpoint:
    return families.read_hf_config(model_cfg.hf_checkpoint, **runtime)
  return presets.get(model_cfg.preset, **runtime)


def build(model_cfg: ml_collections.ConfigDict, partitioner: shd.Partitioner, seed: int, *, training: bool,
          abstract: bool = False) -> tuple[Any, Any]:
  """The frozen model: loaded from model.hf_checkpoint, or random-initialised from model.preset; with
  `abstract`, only shapes with shardings (nothing is read but config.json; see sharding.create).
  `training`: for a train step (its layers stacked)."""
  cfg = model_config(model_cfg, partitioner.platform, training)
  family = families.of_config(cfg)
  if model_cfg.get("params") and not abstract:   # an SFT run's export of this model
    stacked = family.model(cfg.replace(layer_layout="stacked"))
    like = shd.create(lambda r: nn.meta.unbox(stacked.init(r, *stacked.init_args())["params"]),
                      partitioner.shardings(vision_language.abstract_params(stacked)), jax.random.key(0),
                      abstract=True)
    return cfg, _in_layout(load_model(model_cfg.params, like), cfg)
  if model_cfg.hf_checkpoint and not abstract:
    return family.load(model_cfg.hf_checkpoint, partitioner=partitioner, dtype=cfg.dtype,
                       param_dtype=cfg.param_dtype, remat=cfg.remat, attention=cfg.attention,
                       layer_layout=cfg.layer_layout)
  shardings = partitioner.shardings(vision_language.abstract_params(family.model(cfg)))
  # Initialised stacked whatever the layout, so a seed gives the same weights in either (train.py's
  # default job trains TokenSR for the random model eval.py then evaluates, per_layer on CPU).
  model = family.model(cfg.replace(layer_layout="stacked"))

  def init(rng):
    return _in_layout(nn.meta.unbox(model.init(rng, *model.init_args())["params"]), cfg)

  return cfg, shd.create(init, shardings, jax.random.key(seed), abstract=abstract)


def _in_layout(params: Any, cfg: Any) -> Any:
  """Params with stacked decoder layers in cfg's layer layout."""
  if cfg.layer_layout != "per_layer":
    return params
  text = params["language_model"]
  return {**params, "language_model": {**text, "layers": per_layer_params(text["layers"])}}


def random_model_config(preset: str, *, dtype: str = "float32", param_dtype: str | None = None,
                        attention: str = "auto", layer_layout: str = "auto") -> ml_collections.ConfigDict:
  """A job's `config.model` for the random model of a named preset (no checkpoint)."""
  return ml_collections.ConfigDict(dict(hf_checkpoint="", preset=preset, dtype=dtype,
                                        param_dtype=param_dtype or dtype, remat=False, attention=attention,
                                        layer_layout=layer_layout, preprocessing="auto"))


def tokenizer(model_cfg: ml_collections.ConfigDict, cfg: Any) -> Tokenizer:
  """The checkpoint's tokenizer.json, or for a random model a byte-level tokenizer at its ids."""
  placeholder = families.of_config(cfg).image_placeholder
  if model_cfg.hf_checkpoint:
    return Tokenizer(model_cfg.hf_checkpoint, image_placeholder=placeholder)
  return byte_level_tokenizer(cfg.image_token_id, cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id,
                              image_placeholder=placeholder)


def prompt_prefix(model_cfg: ml_collections.ConfigDict, cfg: Any) -> np.ndarray:
  """The prompt tokens before the image: the model's tokenizer (tokenizer()) on its family's template,
  as eval.py's prompts have them, so TokenSR is distilled on the visual states it meets at inference."""
  ids = tokenizer(model_cfg, cfg).encode_prompt(families.of_config(cfg).prompt(""), 1)
  return ids[:int(np.argmax(ids == cfg.image_token_id))]
