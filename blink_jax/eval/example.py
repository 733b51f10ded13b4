"""One question to ask the model, whatever benchmark it comes from."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any


@dataclasses.dataclass
class EvalExample:
  question_id: str          # unique within a benchmark (MMBench rotations get "<index>/r<k>")
  image: Any                # encoded bytes, an HWC array, or a path
  question: str             # the user turn, benchmark suffix included (the template is added later)
  answer: Any = None        # ground truth in the benchmark's own form
  meta: dict = dataclasses.field(default_factory=dict)
  # Set: not generated but scored, each choice as the assistant's reply by its log-likelihood (the
  # prediction is the choice of highest mean log-probability per token, V* Bench's rule).
  choices: list[str] | None = None


SHORT_ANSWER = "Answer the question using a single word or phrase."
LETTER_ANSWER = "Answer with the option's letter from the given choices directly."
LETTER_ANSWER_CN = "请直接回答选项字母。"


# A text image cell longer than this is base64 (the MMBench / HR-Bench TSVs); shorter ones are paths.
BASE64_MIN_CHARS = 513


def image_bytes(value: Any) -> Any:
  """An image cell as a reader gives it -> encoded bytes where it holds them: the HF-datasets cell
  ({'bytes': ..., 'path': ...}) its bytes (else its path), a long plain string is base64 (the MMBench
  and HR-Bench TSVs); anything else (a LazyFile, a ParquetCell, an array) unchanged."""
  if isinstance(value, dict):
    if value.get("bytes"):
      return value["bytes"]
    return value.get("path")
  if type(value) is str and len(value) >= BASE64_MIN_CHARS:   # paths are LazyFile (a str subclass) by now
    return base64.b64decode(value)
  return value


def require(row: dict, *names: str, where: str) -> list:
  missing = [n for n in names if n not in row or row[n] is None]
  if missing:
    raise ValueError(f"{where}: row {row.get('question_id', row.get('index', '?'))!r} has no {missing}; "
                     f"it has {sorted(row)}")
  return [row[n] for n in names]
