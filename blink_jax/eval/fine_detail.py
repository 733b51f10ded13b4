"""The synthetic fine-detail task (blink_jax/data/fine_detail.py): exact match after lower-casing,
trimming a final period and reading number words as digits; accuracy overall and per sub-task
(`category`). Each question keeps its target's box (meta["box"], image pixels)."""

from __future__ import annotations

from blink_jax.data.fine_detail import CATEGORIES
from blink_jax.eval.example import SHORT_ANSWER, EvalExample, require

NUMBERS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
           "seven": "7", "eight": "8", "nine": "9"}


def normalise(text: str) -> str:
  word = text.strip().rstrip(".").strip().lower()
  return NUMBERS.get(word, word)


def examples(row: dict, where: str) -> list[EvalExample]:
  qid, question, answer, image, category = require(row, "question_id", "question", "answer", "image", "category",
                                                   where=where)
  return [EvalExample(str(qid), image, f"{question}\n{SHORT_ANSWER}", normalise(str(answer)),
                      {"category": category, "box": row.get("box")})]


def score(predictions: dict[str, str], items: list[EvalExample]) -> dict[str, float]:
  right = {e.question_id: normalise(predictions.get(e.question_id, "")) == e.answer for e in items}
  out = {"accuracy": 100 * sum(right.values()) / max(1, len(right))}
  for category in CATEGORIES:
    sel = [right[e.question_id] for e in items if e.meta["category"] == category]
    if sel:
      out[f"{category}/accuracy"] = 100 * sum(sel) / len(sel)
  return out
