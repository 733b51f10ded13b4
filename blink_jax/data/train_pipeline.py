"""The training input pipeline: TFDS array_record source -> grain (shuffle, per-process shard, decode,
the base model's preprocessing, batch, prefetch workers) -> global jax.Arrays.

Unusable images (undecodable, too large) are skipped, each file named and counted once (the files
met are part of the iterator state, so they survive a restart); a run of `max_consecutive_skips` of
them, or a whole pass with none usable, stops the job with an error naming the dataset instead of
spinning forever. The iterator's state is saved with the train state, so a resumed run sees the same
batches.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from blink_jax import sharding as shd
from blink_jax.data.image_preprocessing import DEFAULT_MAX_PIXELS, ImageError
from blink_jax.data.prompt import vicuna_v1_prompt
from blink_jax.data.tokenizer import Tokenizer


class QuestionSuffix:
  """A question -> the prompt tokens after the image in the model's template (`prompt`: question ->
  prompt with one image placeholder; "\n{question} ASSISTANT:" in vicuna_v1), right-padded to
  max_tokens (the tail kept, so the prompt still ends where the answer starts), and their count;
  (zeros, 0) for an empty question."""

  def __init__(self, tokenizer: Tokenizer, num_image_tokens: int, max_tokens: int, pad_id: int,
               prompt: Callable[[str], str] = vicuna_v1_prompt):
    self.tokenizer, self.n, self.max_tokens, self.pad_id = tokenizer, num_image_tokens, max_tokens, pad_id
    self.prompt = prompt

  def __call__(self, question: str) -> tuple[np.ndarray, np.int32]:
    ids = np.full(self.max_tokens, self.pad_id, np.int32)
    if not question:
      return ids, np.int32(0)
    full = self.tokenizer.encode_prompt(self.prompt(question), self.n)
    start = int(np.argmax(full == self.tokenizer.image_token_id)) + self.n
    suffix = full[start:][-self.max_tokens:]
    ids[:len(suffix)] = suffix
    return ids, np.int32(len(suffix))


class DecodeAndPreprocess(grain.transforms.Map):
  """A raw example -> {'pixels', 'index'} (+ 'question_ids', 'question_len' when questions are
  used), or a skip marker when its image cannot be decoded.

  `index` is the element's position in the infinite stream: epoch * len(source) + its shuffled slot.
  `preprocess(image, name=, max_pixels=)` -> float32 [H, W, 3] (one shape for every image), raising
  ImageError for an unusable one (families.Family.preprocess with its config and mode bound).
  """

  def __init__(self, image_key: str, preprocess: Callable[..., np.ndarray], questions: QuestionSuffix | None = None,
               question_key: str = "question", max_pixels: int | None = DEFAULT_MAX_PIXELS):
    self.image_key, self.preprocess = image_key, preprocess
    self.questions, self.question_key, self.max_pixels = questions, question_key, max_pixels

  def map(self, element):
    index, example = element
    if self.image_key not in example:
      raise KeyError(f"dataset examples have no {self.image_key!r} feature (they have "
                     f"{sorted(example)}); set config.data.image_key")
    file_id = example.get("id")
    name = file_id.decode("utf-8", "replace") if isinstance(file_id, bytes) else f"example {index}"
    try:
      pixels = self.preprocess(example[self.image_key], name=name, max_pixels=self.max_pixels)
    except ImageError as e:
      return {"_skip": str(e), "index": np.int64(index)}
    out = {"pixels": pixels, "index": np.int64(index)}
    if self.questions is not None:
      question = example.get(self.question_key, b"")
      question = question.decode("utf-8") if isinstance(question, bytes) else str(question or "")
      out["question_ids"], out["question_len"] = self.questions(question.strip())
    return out


class SkipCorrupt(grain.IterDataset):
  """Drops skip markers; names each unusable file once (the first time it is met) and counts files,
  not reads; raises after `limit` skips in a row (`where` names the dataset). A marker's index modulo
  `source_len` is its file's position in the source."""

  def __init__(self, parent, limit: int, where: str, source_len: int):
    super().__init__(parent)
    self.limit, self.where, self.source_len = limit, where, source_len

  def __iter__(self):
    return _SkipCorruptIterator(self._parent.__iter__(), self.limit, self.where, self.source_len)


class _SkipCorruptIterator(grain.DatasetIterator):

  def __init__(self, parent, limit: int, where: str, source_len: int):
    super().__init__(parent)
    self.limit, self.where, self.source_len = limit, where, source_len
    self.files: set[int] = set()   # source positions of the unusable files met so far
    self.consecutive = 0

  def __next__(self):
    while True:
      element = next(self._parent)
      if "_skip" not in element:
        self.consecutive = 0
        return element
      self.consecutive += 1
      position = int(element["index"]) % self.source_len
      if position not in self.files:
        self.files.add(position)
        logging.warning("skipping unusable image (%d files so far; it is skipped on every pass): %s",
                        len(self.files), element["_skip"])
      if self.consecutive >= self.limit:
        raise RuntimeError(f"{self.where}: {self.consecutive} images in a row could not be used (the last: "
                           f"{element['_skip']}); check the data (config.data.*) or raise "
                           "data.max_consecutive_skips")

  def get_state(self) -> dict[str, Any]:
    return {"parent": self._parent.get_state(), "skipped_files": sorted(self.files),
            "consecutive": self.consecutive}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self.files = {int(p) for p in state.get("skipped_files", ())}
    self.consecutive = int(state.get("consecutive", 0))


def data_source(name: str, data_dir: str, split: str):
  try:
    return tfds.data_source(name, data_dir=data_dir, split=split)
  except Exception as e:  # tfds raises several types for an absent/unbuilt dataset
    raise ValueError(f"TFDS dataset {name!r} (split {split!r}) could not be opened in data_dir="
                     f"{data_dir!r}: {e}") from e


def train_dataset(source, data: ml_collections.ConfigDict, *, global_batch: int, transform: grain.transforms.Map,
                  seed: int, process_index: int | None = None, process_count: int | None = None,
                  where: str = "the training dataset") -> grain.IterDataset:
  """Infinite, shuffled (a new order each epoch), per-process batches of what `transform` makes of
  each (index, example) of `source` (a TFDS data source or a list; DecodeAndPreprocess for
  distillation, train/sft.py's TokenizeExample for fine-tuning), as the job's `config.data` says:
  `workers` (grain processes; 0: threads), `max_consecutive_skips`. Stops with an error after that
  many unusable examples in a row, or a whole pass of this process's share without a usable one."""
  max_consecutive_skips, workers = data.max_consecutive_skips, data.workers
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch % process_count:
    raise ValueError(f"global batch {global_batch} is not divisible by {process_count} processes")
  ds = grain.MapDataset.source(source).map_with_index(lambda i, x: (i, x))
  ds = ds.shuffle(seed=seed).repeat(None)
  ds = ds[process_index::process_count]
  ds = ds.map(transform)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, workers), prefetch_buffer_size=8))
  if workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  one_pass = -(-len(source) // process_count)
  return SkipCorrupt(it, min(max_consecutive_skips, one_pass), where, len(source)).batch(
      global_batch // process_count, drop_remainder=True)


def to_global(batch: dict[str, np.ndarray], partitioner: shd.Partitioner) -> dict[str, jax.Array]:
  """Per-process numpy batch -> global jax.Arrays sharded on the batch axes."""
  return {k: jax.make_array_from_process_local_data(partitioner.batch(v.ndim), v)
          for k, v in batch.items()}


def skipped_count(iterator: Iterator) -> int:
  """How many unusable image files the pipeline behind `iterator` has met so far (this process; a
  file skipped on every pass counts once)."""
  node = iterator
  while node is not None:
    if isinstance(node, _SkipCorruptIterator):
      return len(node.files)
    parents = getattr(node, "_parents", ())
    node = parents[0] if parents else None
  return 0
