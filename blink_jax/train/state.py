"""What training holds: the frozen backbone, the trainable params (selected by a path regex), the
optimizer and its state, all created directly in their shardings."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import traverse_util
from jax.sharding import Mesh

from blink_jax import sharding as shd
from blink_jax.blink.config import BlinkConfig
from blink_jax.convert.hf_llava import abstract_params, load_hf_llava
from blink_jax.data.prompt import vicuna_v1_prompt
from blink_jax.models.llava import Llava
from blink_jax.models import presets
from blink_jax.models.llava_config import LlavaConfig, read_hf_config
from blink_jax.models.token_sr import init_token_sr
from blink_jax.tokenizer import Tokenizer


class TrainState(NamedTuple):
  step: jax.Array
  params: dict[str, jax.Array]   # trainable leaves, flat {'token_sr/layers/...': array}
  opt_state: Any


def flatten(tree: Any) -> dict[str, Any]:
  return traverse_util.flatten_dict(tree, sep="/")


def unflatten(flat: dict[str, Any]) -> Any:
  return traverse_util.unflatten_dict(flat, sep="/")


def split_trainable(params: Any, pattern: str) -> tuple[dict, dict]:
  """(trainable, frozen) flat dicts; trainable = leaves whose path fully matches `pattern`."""
  flat = flatten(params)
  rx = re.compile(pattern)
  trainable = {k: v for k, v in flat.items() if rx.fullmatch(k)}
  if not trainable:
    raise ValueError(f"config.train.trainable={pattern!r} matches no param; paths look like "
                     f"{sorted(flat)[:3]}")
  return trainable, {k: v for k, v in flat.items() if k not in trainable}


def schedule(train_cfg: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up then cosine decay to final_lr_fraction of the peak."""
  steps = max(train_cfg.steps, 2)
  return optax.warmup_cosine_decay_schedule(
      0.0, train_cfg.learning_rate, min(max(1, train_cfg.warmup_steps), steps - 1), steps,
      end_value=train_cfg.learning_rate * train_cfg.final_lr_fraction)


def optimizer(train_cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return optax.chain(optax.clip_by_global_norm(train_cfg.clip_norm),
                     optax.adamw(schedule(train_cfg), weight_decay=train_cfg.weight_decay))


def model_config(model_cfg: ml_collections.ConfigDict) -> LlavaConfig:
  """The model's shape: model.hf_checkpoint's config.json, or the named model.preset."""
  runtime = dict(dtype=model_cfg.dtype, param_dtype=model_cfg.param_dtype, remat=model_cfg.remat,
                 attention=model_cfg.attention)
  if model_cfg.hf_checkpoint:
    return read_hf_config(model_cfg.hf_checkpoint, **runtime)
  return presets.get(model_cfg.preset, **runtime)


def backbone(model_cfg: ml_collections.ConfigDict, mesh: Mesh, rules, seed: int,
             abstract: bool = False) -> tuple[LlavaConfig, Any]:
  """The frozen LLaVA: loaded from model.hf_checkpoint, or random-initialised from model.preset; with
  `abstract`, only shapes with shardings (nothing is read but config.json; see sharding.create)."""
  cfg = model_config(model_cfg)
  if model_cfg.hf_checkpoint and not abstract:
    return load_hf_llava(model_cfg.hf_checkpoint, mesh=mesh, rules=rules, dtype=cfg.dtype,
                         param_dtype=cfg.param_dtype, remat=cfg.remat, attention=cfg.attention)
  shardings = shd.logical_shardings(abstract_params(cfg), mesh, rules)
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


def init_train_state(cfg: LlavaConfig, blink: BlinkConfig, train_cfg, mesh: Mesh, rules, seed: int,
                     tx: optax.GradientTransformation, frozen_params: Any,
                     abstract: bool = False) -> tuple[TrainState, dict]:
  """(TrainState with fresh TokenSR + optimizer state, frozen flat params); with `abstract` (and
  abstract frozen_params), only their shapes with shardings (see sharding.create)."""
  token_sr = init_token_sr(blink.num_scan_layers, blink.token_sr_channels, blink.region_size,
                           cfg.text.hidden_size, jax.random.key(seed + 1), mesh=mesh, rules=rules,
                           dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
                           abstract=abstract)
  trainable, frozen = split_trainable({**frozen_params, "token_sr": token_sr}, train_cfg.trainable)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  # Optimizer moments follow their params' shardings; its scalars (counts) are replicated.
  opt_shapes = jax.eval_shape(tx.init, trainable)
  param_shardings = {k: v.sharding for k, v in trainable.items()}
  opt_shardings = jax.tree.map(lambda _: replicated, opt_shapes)
  opt_shardings = _mirror_param_shardings(opt_shapes, opt_shardings, param_shardings)
  opt_state = shd.create(tx.init, opt_shardings, trainable, abstract=abstract)
  step = shd.create(lambda: jnp.zeros((), jnp.int32), replicated, abstract=abstract)
  return TrainState(step, trainable, opt_state), frozen


def _mirror_param_shardings(opt_shapes, default, param_shardings):
  """Gives every optimizer-state dict keyed like the params its params' shardings."""
  def visit(shape_node, default_node):
    if isinstance(shape_node, dict) and set(shape_node) == set(param_shardings):
      return dict(param_shardings)
    if isinstance(shape_node, tuple) and not hasattr(shape_node, "_fields"):
      return tuple(visit(a, b) for a, b in zip(shape_node, default_node))
    if hasattr(shape_node, "_fields"):
      return type(shape_node)(*(visit(a, b) for a, b in zip(shape_node, default_node)))
    return default_node
  return visit(opt_shapes, default)
