"""SEED-Bench (image questions) as LLaVA's convert_seed_for_submission.py scores it: the prediction
must equal the answer letter exactly; accuracy overall and per question type."""

from __future__ import annotations

from collections import defaultdict

from blink_jax.eval.example import LETTER_ANSWER, EvalExample, image_bytes, require


def examples(row: dict, where: str) -> list[EvalExample]:
  qid, question, answer, image = require(row, "question_id", "question", "answer", "image", where=where)
  if row.get("data_type", "image") != "image":
    return []
  if isinstance(image, (list, tuple)):
    image = image[0]
  choices = [row.get(f"choice_{c}") for c in "abcd"]
  options = "".join(f"\n{l}. {c}" for l, c in zip("ABCD", choices) if c is not None)
  return [EvalExample(str(qid), image_bytes(image), f"{question}{options}\n{LETTER_ANSWER}", str(answer),
                      {"type": str(row.get("question_type_id", ""))})]


def score(predictions: dict[str, str], items: list[EvalExample]) -> dict[str, float]:
  per_type: dict[str, list[bool]] = defaultdict(list)
  for e in items:
    per_type[e.meta["type"]].append(predictions.get(e.question_id) == e.answer)
  right = [r for rs in per_type.values() for r in rs]
  out = {"accuracy": 100 * sum(right) / max(1, len(right))}
  out.update({f"type_{t}/accuracy": 100 * sum(v) / len(v) for t, v in sorted(per_type.items()) if t})
  return out
