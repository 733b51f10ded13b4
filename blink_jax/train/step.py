"""The jitted train step: one optimizer update per call (gradient accumulation inside), the state
donated, shardings explicit, the rng derived from the step; its objective TokenSR distillation
(distill.py) or supervised fine-tuning (sft.py), `train.objective`. `train_program` assembles it with
its state from a config, for the training job and, abstract, for ahead-of-time compilation (aot.py)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from blink_jax import backbone
from blink_jax import families
from blink_jax import sharding as shd
from blink_jax.blink.config import BlinkConfig, from_mapping
from blink_jax.models.vision_language import VisionLanguageModel
from blink_jax.train import sft
from blink_jax.inference.token_sr_teacher import check_teacher_grid, scan_layer_visual_states
from blink_jax.train.distill import choose_regions, distillation_loss, region_targets
from blink_jax.data.tokenizer import Tokenizer
from blink_jax.train.state import TrainState, init_train_state, optimizer, schedule, unflatten

OBJECTIVES = ("distill", "sft")


def check_objective(train_cfg: ml_collections.ConfigDict):
  if train_cfg.objective not in OBJECTIVES:
    raise ValueError(f"train.objective={train_cfg.objective!r}; expected one of {OBJECTIVES}")


def distill_micro(model: VisionLanguageModel, blink: BlinkConfig, train_cfg: ml_collections.ConfigDict,
                  prefix_ids: jax.Array) -> Callable:
  """micro(trainable, frozen, batch, rng) -> (grads, DistillMetrics) of one micro-batch. batch: 'pixels'
  [B, H, W, 3] and optionally 'question_ids' [B, Q] + 'question_len' [B] (saliency-guided regions)."""

  def micro(trainable, frozen, batch, rng):
    params = unflatten({**frozen, **trainable})
    base = {k: w for k, w in params.items() if k != "token_sr"}
    pixels = batch["pixels"]
    rows, cols = model.visual_grid(pixels.shape)
    full, shares = scan_layer_visual_states(model, base, prefix_ids, pixels, blink,
                                            batch.get("question_ids"), batch.get("question_len"))
    num_regions = (rows // blink.region_size) * (cols // blink.region_size)
    region = jax.random.randint(rng, (pixels.shape[0],), 0, num_regions)
    if shares is not None:
      region = choose_regions(shares, batch["question_len"], region)
    region_states, teacher = region_targets(model, base, prefix_ids, pixels, full, region, blink)

    def loss_fn(tr):
      return distillation_loss(model, blink, unflatten({**frozen, **tr})["token_sr"], region_states,
                               teacher, temperature=train_cfg.temperature,
                               cosine_weight=train_cfg.cosine_weight)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    return grads, metrics

  return micro


def sft_micro(model: VisionLanguageModel, prefix_len: int, expansion: sft.Expansion | None = None) -> Callable:
  """micro(trainable, frozen, batch, rng) -> (grads, SFTMetrics): sft.sft_loss on one micro-batch, its
  prompts' first prefix_len tokens run once; with an `expansion`, each example with a target region is
  expanded with probability expansion.share (drawn from rng)."""

  def micro(trainable, frozen, batch, rng):
    regions = None
    if expansion is not None:
      drawn = jax.random.uniform(rng, batch["region"].shape) < expansion.share
      regions = jnp.where(drawn, batch["region"], -1)
    loss_fn = lambda tr: sft.sft_loss(model, unflatten({**frozen, **tr}), batch, prefix_len, expansion,  # noqa: E731
                                      regions)
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    return grads, metrics

  return micro


def make_train_step(micro: Callable, train_cfg: ml_collections.ConfigDict, tx: optax.GradientTransformation,
                    seed: int) -> Callable:
  """step(state, frozen, batch) -> (state, metrics): `micro` over train.grad_accum_steps micro-batches,
  then one optimizer update; metrics are the objective's, the gradient norm and the learning rate."""
  accum = train_cfg.grad_accum_steps

  def step(state: TrainState, frozen: dict, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    b = batch["pixels"].shape[0]
    if b % accum:
      raise ValueError(f"batch {b} not divisible by grad_accum_steps={accum}")
    micro_batches = jax.tree.map(lambda x: x.reshape(accum, b // accum, *x.shape[1:]), batch)
    rngs = jax.random.split(rng, accum)

    def body(acc, xs):
      grads, metrics = micro(state.params, frozen, *xs)
      return jax.tree.map(jnp.add, acc, (grads, metrics)), None

    first = jax.tree.map(lambda x: x[0], micro_batches)
    if accum == 1:
      total = micro(state.params, frozen, first, rngs[0])
    else:
      shapes = jax.eval_shape(micro, state.params, frozen, first, rngs[0])
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
      total, _ = jax.lax.scan(body, zeros, (micro_batches, rngs))
    grads, metrics = jax.tree.map(lambda x: x / accum, total)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    out = {**metrics._asdict(), "grad_norm": optax.global_norm(grads),
           "learning_rate": schedule(train_cfg)(state.step)}
    return TrainState(state.step + 1, params, opt_state), out

  return step


def jit_train_step(step: Callable, state: TrainState, frozen: dict, batch_shardings: Any) -> Callable:
  """Jits `step` with explicit shardings (those the state/frozen params already have) and donation."""
  state_shardings = jax.tree.map(lambda x: x.sharding, state)
  frozen_shardings = jax.tree.map(lambda x: x.sharding, frozen)
  return jax.jit(step, in_shardings=(state_shardings, frozen_shardings, batch_shardings),
                 out_shardings=(state_shardings, None), donate_argnums=(0,))


@dataclasses.dataclass
class TrainProgram:
  """What the training job runs: the jitted step, the state and frozen params it starts from
  (arrays, or ShapeDtypeStructs with shardings when abstract), its global batch's shapes, and what
  its input pipeline needs: the family, its training preprocessing, the tokenizer."""
  cfg: Any                    # the model's config (LlavaConfig or Qwen2_5_VLConfig)
  family: families.Family
  preprocessing: str          # the family's training preprocessing (model.preprocessing resolved)
  tokenizer: Tokenizer        # the checkpoint's, or a random model's byte-level one
  blink: BlinkConfig
  step: Callable
  state: TrainState
  frozen: dict
  batch: dict[str, jax.ShapeDtypeStruct]
  validate: Callable | None   # sft: (params, frozen, batch with `weight`) -> sft.validation_sums; else None
  expansion: sft.Expansion | None   # expansion-aware fine-tuning's settings (train.sft_expand > 0)
  prefix: np.ndarray          # every prompt's tokens before the image (backbone.prompt_prefix)


def train_program(config: ml_collections.ConfigDict, partitioner: shd.Partitioner, *,
                  abstract: bool = False) -> TrainProgram:
  """The train step of `config` sharded by `partitioner`: the backbone loaded (or random from its preset), TokenSR
  and the optimizer initialised; with `abstract`, shapes only, nothing read but config.json."""
  cfg, backbone_params = backbone.build(config.model, partitioner, config.seed, abstract=abstract, training=True)
  family = families.of_config(cfg)
  model = family.model(cfg)
  preprocessing = family.training_preprocessing(config.model.preprocessing)
  height, width = family.largest_image(cfg, preprocessing)
  pixels_shape = (config.train.batch_size, height, width, cfg.vision.num_channels)
  blink = from_mapping(config.blink.to_dict()).validate(model.visual_grid(pixels_shape), cfg.text.num_layers)
  t = config.train
  check_objective(t)
  distill = t.objective == "distill"
  prefix = np.asarray(backbone.prompt_prefix(config.model, cfg))
  expansion = None
  if not distill and t.sft_expand:
    expansion = sft.Expansion(t.sft_expand, dataclasses.replace(
        blink, mode="interp", region_choice="oracle", schedule="fixed", sr_source="teacher", max_regions=1),
        model.visual_grid)
  if distill or expansion:
    check_teacher_grid(model, pixels_shape, blink.region_size)
  batch_ways = partitioner.batch_parallelism
  if t.batch_size % (batch_ways * t.grad_accum_steps):
    raise ValueError(f"train.batch_size={t.batch_size} must be divisible by the batch-parallel mesh size "
                     f"({batch_ways}) times train.grad_accum_steps ({t.grad_accum_steps})")
  tx = optimizer(t)
  state, frozen = init_train_state(cfg, blink, t, partitioner, config.seed, tx, backbone_params,
                                   abstract=abstract, with_token_sr=distill)
  b = t.batch_size
  if distill:
    shapes = {"pixels": (pixels_shape, jnp.float32)}
    if config.data.region == "saliency":   # examples with a question pick their region by saliency
      shapes.update(question_ids=((b, config.data.max_question_tokens), jnp.int32),
                    question_len=((b,), jnp.int32))
    micro = distill_micro(model, blink, t, jnp.asarray(prefix))
    validate = None
  else:
    shapes = sft.batch_shapes(b, pixels_shape, sft.sequence_length(family, cfg, pixels_shape, config.data),
                              expansion is not None)
    micro = sft_micro(model, len(prefix), expansion)
    validate = jax.jit(lambda trainable, frozen, batch: sft.validation_sums(model, unflatten({**frozen, **trainable}),
                                                                           batch, len(prefix)))
  batch = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=partitioner.batch(len(shape)))
           for k, (shape, dtype) in shapes.items()}
  step = jit_train_step(make_train_step(micro, t, tx, config.seed), state, frozen,
                        {k: v.sharding for k, v in batch.items()})
  return TrainProgram(cfg, family, preprocessing, backbone.tokenizer(config.model, cfg), blink, step, state, frozen,
                      batch, validate, expansion, prefix)
