"""What training holds: the trainable params (selected by a path regex; the frozen backbone is
blink_jax/backbone.py's), the optimizer and its state, all created directly in their shardings."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

from blink_jax import sharding as shd
from blink_jax.blink.config import BlinkConfig
from blink_jax.models.llava_config import LlavaConfig
from blink_jax.models.token_sr import init_for


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


def init_train_state(cfg: LlavaConfig, blink: BlinkConfig, train_cfg, partitioner: shd.Partitioner, seed: int,
                     tx: optax.GradientTransformation, frozen_params: Any, abstract: bool = False,
                     with_token_sr: bool = True) -> tuple[TrainState, dict]:
  """(TrainState with the trainable params (train.trainable; a fresh TokenSR among them when
  `with_token_sr`) and their optimizer state, the frozen flat params); with `abstract` (and abstract
  frozen_params), only their shapes with shardings (see sharding.create)."""
  params = dict(frozen_params)
  if with_token_sr:
    params["token_sr"] = init_for(blink, cfg, jax.random.key(seed + 1), partitioner=partitioner, abstract=abstract)
  trainable, frozen = split_trainable(params, train_cfg.trainable)
  replicated = jax.sharding.NamedSharding(partitioner.mesh, jax.sharding.PartitionSpec())
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
