"""A batch of prompts laid out for the model: right-padded token ids in a length bucket, true lengths,
and preprocessed pixels. Buckets bound how many programs a stream of prompts compiles."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class PromptBatch:
  ids: np.ndarray       # [B, T] int32, right-padded with pad_id
  lengths: np.ndarray   # [B] int32
  pixels: np.ndarray    # [B, H, W, 3] float32
  image_start: int      # index of the first visual token, the same in every prompt of the batch
  texts: tuple[str, ...] | None = None   # the prompts' text, where the batch was made from text
  images: tuple | None = None            # the images as given to prepare() (what zoom crops from)


def bucket_length(n: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= n."""
  for b in sorted(buckets):
    if n <= b:
      return b
  raise ValueError(f"prompt of {n} tokens is longer than the largest bucket {max(buckets)}; "
                   "add a larger bucket to the config's prompt_buckets")


def pad_prompts(prompts: Sequence[np.ndarray], pixels: np.ndarray, buckets: Sequence[int],
                pad_id: int, image_token_id: int) -> PromptBatch:
  starts = {int(np.argmax(np.asarray(p) == image_token_id)) for p in prompts}
  if len(starts) != 1:
    raise ValueError(f"the image starts at token {sorted(starts)} in different prompts of one batch; "
                     "Blink's static layout needs one shared prefix (system prompt) per batch")
  lengths = np.asarray([len(p) for p in prompts], np.int32)
  t = bucket_length(int(lengths.max()), buckets)
  ids = np.full((len(prompts), t), pad_id, np.int32)
  for i, p in enumerate(prompts):
    ids[i, :len(p)] = p
  return PromptBatch(ids, lengths, np.asarray(pixels, np.float32), starts.pop())


def fit_slots(batch: PromptBatch, num_slots: int, buckets: Sequence[int], pad_id: int) -> PromptBatch:
  """The batch re-padded so that prompt + `num_slots` SR slots fill a bucket: Blink's full layout then
  has a bucket's length, and the slots usually take the padding a plain prompt would carry anyway."""
  t = bucket_length(int(batch.lengths.max()) + num_slots, buckets) - num_slots
  ids = np.full((batch.ids.shape[0], t), pad_id, np.int32)
  keep = min(t, batch.ids.shape[1])
  ids[:, :keep] = batch.ids[:, :keep]
  return dataclasses.replace(batch, ids=ids)
