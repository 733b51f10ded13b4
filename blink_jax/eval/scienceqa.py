"""ScienceQA-IMG as LLaVA's eval_science_qa.py scores it: the prediction is a letter if it is exactly
an option letter, or starts with "X. ", or has exactly one "The answer is X." match; else FAILED."""

from __future__ import annotations

import re

from blink_jax.eval.example import LETTER_ANSWER, EvalExample, image_bytes, require

LETTERS = "ABCDE"
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def parse(text: str) -> str:
  if text in LETTERS:
    return text
  if len(text) >= 3 and text[0] in LETTERS and text[1:3] == ". ":
    return text[0]
  found = _ANSWER_IS.findall(text)
  return found[0] if len(found) == 1 else "FAILED"


def examples(row: dict, where: str) -> list[EvalExample]:
  image = row.get("image")
  if image is None or (isinstance(image, dict) and not (image.get("bytes") or image.get("path"))):
    return []  # ScienceQA-IMG: questions without an image are not part of it
  question, choices, answer = require(row, "question", "choices", "answer", where=where)
  qid = row.get("question_id", row.get("_row"))
  hint = row.get("hint") or ""
  context = f"Context: {hint}\n" if hint.strip() else ""
  options = "".join(f"\n{LETTERS[i]}. {c}" for i, c in enumerate(choices))
  return [EvalExample(str(qid), image_bytes(image), f"{context}{question}{options}\n{LETTER_ANSWER}",
                      LETTERS[int(answer)], {"num_choices": len(choices)})]


def score(predictions: dict[str, str], items: list[EvalExample]) -> dict[str, float]:
  right = [parse(predictions.get(e.question_id, "FAILED")) == e.answer for e in items]
  return {"accuracy": 100 * sum(right) / max(1, len(right))}
