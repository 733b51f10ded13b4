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


def bucket_length(n: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= n."""
  for b in sorted(buckets):
    if n <= b:
      return b
  raise ValueError(f"prompt of {n} tokens is longer than the largest bucket {max(buckets)}; "
                   "add a larger bucket to the config's prompt_buckets")


def pad_prompts(prompts: Sequence[np.ndarray], pixels: np.ndarray, buckets: Sequence[int],
                pad_id: int) -> PromptBatch:
  lengths = np.asarray([len(p) for p in prompts], np.int32)
  t = bucket_length(int(lengths.max()), buckets)
  ids = np.full((len(prompts), t), pad_id, np.int32)
  for i, p in enumerate(prompts):
    ids[i, :len(p)] = p
  return PromptBatch(ids, lengths, np.asarray(pixels, np.float32))
