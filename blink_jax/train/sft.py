"""Supervised fine-tuning, the training job's second objective (`train.objective="sft"`): next-token
cross-entropy on the answer tokens of (image, question, answer) examples, with `train.trainable`
choosing what trains (e.g. `.*`, or the projector and the LLM). Examples come from the sources eval.py
reads (`config.data.sft`: LLaVA jsonl, parquet, TFDS, a folder), each question phrased as eval.py asks
it when `config.data.sft.benchmark` names the benchmark (its answer-format suffix included: a model
tuned on other phrasing answers eval's questions off-distribution), wrapped in the family's template and its answer as the assistant's reply (`family.answer`: LLaVA's `</s>`,
Qwen2.5-VL's `<|im_end|>`), so the model learns to end its answers.

With `config.data.sft_validation` (a source of the same kind) and `train.validate_every`, the job
scores held-out examples every so many steps: the answer tokens' loss, and answer accuracy, the share
of examples whose every answer token (its end-of-turn included) is the model's arg-max given the
answer's preceding tokens, which is exactly the share greedy decoding answers word for word; with
`train.patience`, it stops once that accuracy has not improved for that many validations.

Expansion-aware fine-tuning (`train.sft_expand` > 0, ours, a departure from training-free Blink): that
share of each batch's examples, drawn per step, is fine-tuned through Blink's prefill with its target's
region (the example's box, e.g. the fine-detail task's) expanded at every scanning layer and the
teacher's tokens (the region's crop re-encoded, gradient-free) in the slots, so the LLM learns to read
tokens written there; the rest, and validation, run the plain model.

Every prompt begins with the family's template before the image (backbone.prompt_prefix), so a step
runs those tokens once for the batch (models/shared_prefix.py: the same numbers; 162 of the 384 tokens
of the embedded model's fine-detail sequences); an example whose prompt does not begin with it is refused."""

from __future__ import annotations

from typing import Any, NamedTuple

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from blink_jax.blink.config import BlinkConfig
from blink_jax.blink.prefill import blink_prefill
from blink_jax.data.image_preprocessing import ImageError
from blink_jax.data.tokenizer import Tokenizer
from blink_jax.data.train_pipeline import to_global
from blink_jax.eval import benchmarks
from blink_jax.eval.readers import SOURCE_FIELDS, load_row_image, read_rows
from blink_jax.inference.token_sr_teacher import oracle_tokens
from blink_jax.models.shared_prefix import logits_after_prefix


class SFTMetrics(NamedTuple):
  loss: jax.Array             # mean cross-entropy per answer token
  token_accuracy: jax.Array   # share of answer tokens the model's arg-max predicts


def source_rows(data: ml_collections.ConfigDict, field: str = "sft") -> tuple[list[dict], str]:
  """(the examples of config.data.<field> (sft, or sft_validation): rows with image, question and
  answer; where they come from)."""
  settings = data[field]
  source = {k: v for k, v in settings.to_dict().items() if v and k in SOURCE_FIELDS}
  if not source.get("format"):
    raise ValueError(f"config.data.{field} has no examples: set config.data.{field}.format (llava | parquet | tfds | "
                     "folder) and its fields, as eval.py's config.sources.<benchmark> (e.g. questions, image_folder)")
  where = f"config.data.{field} {source}"
  benchmark = benchmarks.get(settings.benchmark) if settings.get("benchmark") else None
  rows = []
  for row in read_rows(source):
    if benchmark is not None:
      for example in benchmark.examples(row, where):
        if not isinstance(example.answer, str):
          raise ValueError(f"{where}: benchmark {benchmark.name!r} gives answers of type "
                           f"{type(example.answer).__name__}, not a reply SFT can train on")
        rows.append({"image": example.image, "question": example.question, "answer": example.answer,
                     "box": example.meta.get("box")})
      continue
    missing = [k for k in ("image", "question", "answer") if row.get(k) is None]
    if missing:
      raise ValueError(f"{where}: row {row.get('question_id', row.get('_row'))} has no {missing}; SFT examples "
                       "need an image, a question and an answer")
    rows.append({"image": row["image"], "question": str(row["question"]), "answer": str(row["answer"]),
                 "box": row.get("box")})
  if not rows:
    raise ValueError(f"{where}: no examples")
  return rows, where


class Expansion(NamedTuple):
  """What expansion-aware fine-tuning needs: the share of examples expanded, Blink's settings for it
  (oracle region, fixed schedule, the teacher's tokens), the grid of an image of a pixels shape."""
  share: float
  blink: BlinkConfig
  grid: Any          # pixels shape -> (rows, columns)


class TokenizeExample(grain.transforms.Map):
  """(index, row) -> {'pixels', 'ids' [T], 'targets' [T] (the next token at answer positions, -1
  elsewhere), 'lengths', 'index'} (+ 'region', the target's, -1 without a box, with an `expansion`),
  or a skip marker for an unusable image or a too long example. Every prompt must begin with
  `prefix` (the tokens before the image the step runs once for the batch)."""

  def __init__(self, family, cfg, preprocessing: str, tokenizer: Tokenizer, length: int, max_pixels: int | None,
               prefix: np.ndarray, expansion: Expansion | None = None):
    self.family, self.cfg, self.preprocessing = family, cfg, preprocessing
    self.tokenizer, self.length, self.max_pixels = tokenizer, length, max_pixels
    self.prefix, self.expansion = np.asarray(prefix), expansion

  def map(self, element):
    index, row = element
    try:
      image = load_row_image(row["image"], f"of example {index}", self.max_pixels)
    except ImageError as e:
      return {"_skip": str(e), "index": np.int64(index)}
    pixels = self.family.preprocess(image, self.cfg, self.preprocessing)
    n = self.family.image_tokens(self.cfg, pixels.shape)
    prompt = self.family.prompt(row["question"])
    whole = self.tokenizer.encode_prompt(prompt + self.family.answer(row["answer"]), n)
    start = len(self.tokenizer.encode_prompt(prompt, n))
    if len(whole) > self.length:
      return {"_skip": f"example {index}: {len(whole)} tokens with its image, over the {self.length} the "
                       "step takes (raise data.max_text_tokens)", "index": np.int64(index)}
    p = len(self.prefix)
    if not np.array_equal(np.asarray(whole[:p]), self.prefix) or whole[p] != self.cfg.image_token_id:
      raise ValueError(f"example {index}: its prompt does not begin with the family's template before the image "
                       f"({p} tokens, then the image), which the step runs once for the batch; fine-tuning needs "
                       "the template's prompts")
    ids = np.full(self.length, self.cfg.pad_token_id, np.int32)
    ids[:len(whole)] = whole
    targets = np.full(self.length, -1, np.int32)
    targets[start - 1:len(whole) - 1] = whole[start:]     # position t predicts token t + 1
    out = {"pixels": pixels, "ids": ids, "targets": targets, "lengths": np.int32(len(whole)), "index": np.int64(index)}
    if self.expansion is not None:
      e = self.expansion
      _, columns = e.grid(pixels[None].shape)
      out["region"] = np.int32(self.family.region_at(row.get("box"), image.height, image.width, self.cfg,
                                                     self.preprocessing, columns, e.blink.region_size))
    return out


def expanded_logits(model, expansion: Expansion, params: Any, batch: dict[str, jax.Array], regions: jax.Array,
                    prefix_len: int) -> jax.Array:
  """[B, T - prefix_len, V] logits of Blink's prefill with each example's region `regions` [B] expanded at
  every scanning layer with the teacher's tokens (-1: none, the plain model's logits), the prompts'
  first prefix_len tokens (the image starts after them) run once for the batch."""
  def teacher(*args):
    return jax.lax.stop_gradient(oracle_tokens(*args))
  return blink_prefill(model, expansion.blink, params, batch["ids"], batch["pixels"], batch["lengths"],
                       image_start=prefix_len, all_logits=True, regions=regions, teacher_fn=teacher,
                       active=regions >= 0, shared_prefix=True).logits


def _answer_tokens(model, params: Any, batch: dict[str, jax.Array], prefix_len: int,
                   logits: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per answer token after the prompts' shared first prefix_len tokens [B, T - prefix_len] under the
  model's prompt-pass logits (or `logits` [B, T - prefix_len, V]): (its negative log-likelihood, whether
  it is one (targets >= 0), whether it is the arg-max). No answer token lies in the prefix."""
  if logits is None:
    logits = logits_after_prefix(model, params, batch["ids"], batch["pixels"], batch["lengths"], prefix_len)
  targets = batch["targets"][:, prefix_len:]
  logits = logits.astype(jnp.float32)
  mask = targets >= 0
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, jnp.maximum(targets, 0)[..., None], axis=-1)[..., 0]
  return nll * mask, mask, (logits.argmax(-1) == targets) & mask


def sft_loss(model, params: Any, batch: dict[str, jax.Array], prefix_len: int, expansion: Expansion | None = None,
             regions: jax.Array | None = None) -> tuple[jax.Array, SFTMetrics]:
  """Mean cross-entropy of the answer tokens (targets >= 0) under the model's prompt-pass logits, or
  with an `expansion`, Blink's prefill's with `regions` [B] expanded (expanded_logits); the prompts'
  first prefix_len tokens run once for the batch."""
  logits = None if expansion is None else expanded_logits(model, expansion, params, batch, regions, prefix_len)
  nll, mask, correct = _answer_tokens(model, params, batch, prefix_len, logits)
  count = jnp.maximum(mask.sum(), 1)
  loss = jnp.sum(nll) / count
  return loss, SFTMetrics(loss, jnp.sum(correct) / count)


def validation_sums(model, params: Any, batch: dict[str, jax.Array], prefix_len: int) -> dict[str, jax.Array]:
  """Sums over a validation batch's real examples (`weight` 1; 0 pads the last batch): answer tokens'
  negative log-likelihood, answer tokens, examples answered exactly (every answer token the arg-max)."""
  nll, mask, correct = _answer_tokens(model, params, batch, prefix_len)
  weight = batch["weight"]
  exact = jnp.all(correct == mask, axis=1)
  return {"nll": jnp.sum(nll.sum(1) * weight), "tokens": jnp.sum(mask.sum(1) * weight),
          "exact": jnp.sum(exact * weight), "examples": jnp.sum(weight)}


class Validation:
  """The held-out examples of config.data.sft_validation, scored by `validate` (the program's jitted
  validation_sums) in a fixed order: the global batch's shape, the last batch padded with weight-0
  copies of the first example, each process reading its share of every batch."""

  def __init__(self, data: ml_collections.ConfigDict, make: TokenizeExample, global_batch: int,
               process_index: int, process_count: int):
    self.rows, self.where = source_rows(data, "sft_validation")
    self.make, self.per = make, global_batch // process_count
    padded = -(-len(self.rows) // global_batch) * global_batch
    self.order = [b + process_index * self.per + j for b in range(0, padded, global_batch) for j in range(self.per)]

  def _example(self, i: int) -> dict[str, np.ndarray]:
    real = i < len(self.rows)
    example = self.make.map((i if real else 0, self.rows[i if real else 0]))
    if "_skip" in example:
      raise ValueError(f"{self.where}: {example['_skip']}; every validation example must be usable")
    del example["index"]
    example.pop("region", None)   # validation scores the plain model
    return {**example, "weight": np.float32(real)}

  def score(self, validate, params: Any, frozen: Any, partitioner) -> dict[str, float]:
    """{'loss': mean answer-token cross-entropy, 'answer_accuracy': share answered exactly} over every
    held-out example, with `params` (the trainable ones) and `frozen`."""
    batches = grain.MapDataset.source(self.order).map(self._example).batch(self.per)
    total = None
    for local in batches.to_iter_dataset(grain.ReadOptions(num_threads=4, prefetch_buffer_size=4)):
      sums = validate(params, frozen, to_global(local, partitioner))
      total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    total = {k: float(v) for k, v in jax.device_get(total).items()}
    return {"loss": total["nll"] / max(total["tokens"], 1), "answer_accuracy": total["exact"] / total["examples"]}


def plateaued(history: list[list[float]], patience: int) -> bool:
  """Whether the last `patience` validations ([step, answer_accuracy, loss] each) bettered no
  accuracy before them (never with patience 0)."""
  if patience <= 0 or len(history) <= patience:
    return False
  return max(h[1] for h in history[-patience:]) <= max(h[1] for h in history[:-patience])


def batch_shapes(batch: int, pixels_shape: tuple[int, ...], length: int, expansion: bool = False
                 ) -> dict[str, tuple[tuple, Any]]:
  """The global batch an SFT step takes: {name: (shape, dtype)} (a validation batch adds `weight`;
  expansion-aware fine-tuning, each example's target `region`)."""
  shapes = {"pixels": (pixels_shape, jnp.float32), "ids": ((batch, length), jnp.int32),
            "targets": ((batch, length), jnp.int32), "lengths": ((batch,), jnp.int32)}
  return {**shapes, "region": ((batch,), jnp.int32)} if expansion else shapes


def sequence_length(family, cfg, pixels_shape: tuple[int, ...], data: ml_collections.ConfigDict) -> int:
  """Tokens a step's sequence holds: the image's plus data.max_text_tokens (template, question, answer)."""
  return family.image_tokens(cfg, pixels_shape) + data.max_text_tokens

