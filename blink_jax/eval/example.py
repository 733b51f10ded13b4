"""One question to ask the model, whatever benchmark it comes from."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class EvalExample:
  question_id: str          # unique within a benchmark (MMBench rotations get "<index>/r<k>")
  image: Any                # encoded bytes, an HWC array, or a path
  question: str             # the user turn, benchmark suffix included (the template is added later)
  answer: Any = None        # ground truth in the benchmark's own form
  meta: dict = dataclasses.field(default_factory=dict)


SHORT_ANSWER = "Answer the question using a single word or phrase."
LETTER_ANSWER = "Answer with the option's letter from the given choices directly."
LETTER_ANSWER_CN = "请直接回答选项字母。"


def image_bytes(value: Any) -> Any:
  """The HF-datasets image cell ({'bytes': ..., 'path': ...}) -> bytes; anything else unchanged."""
  if isinstance(value, dict):
    if value.get("bytes"):
      return value["bytes"]
    return value.get("path")
  return value


def require(row: dict, *names: str, where: str) -> list:
  missing = [n for n in names if n not in row or row[n] is None]
  if missing:
    raise ValueError(f"{where}: row {row.get('question_id', row.get('index', '?'))!r} has no {missing}; "
                     f"it has {sorted(row)}")
  return [row[n] for n in names]
