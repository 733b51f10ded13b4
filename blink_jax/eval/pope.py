"""POPE as LLaVA's eval_pope.py scores it: the text before the first '.', commas dropped, split on
spaces; any of No/not/no means "no", else "yes". Per split (adversarial / popular / random):
accuracy, precision, recall, F1, yes-ratio; headline = mean F1. Predictions are joined to labels by
question_id."""

from __future__ import annotations

from collections import defaultdict

from blink_jax.eval.example import SHORT_ANSWER, EvalExample, image_bytes, require


def parse(text: str) -> str:
  if text.find(".") != -1:
    text = text.split(".")[0]
  words = text.replace(",", "").split(" ")
  return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def examples(row: dict, where: str) -> list[EvalExample]:
  qid, question, answer, category, image = require(row, "question_id", "question", "answer", "category",
                                                    "image", where=where)
  return [EvalExample(str(qid), image_bytes(image), f"{question}\n{SHORT_ANSWER}",
                      str(answer).strip().lower(), {"category": category})]


def _metrics(pairs: list[tuple[str, str]]) -> dict[str, float]:
  tp = sum(p == "yes" and l == "yes" for p, l in pairs)
  fp = sum(p == "yes" and l == "no" for p, l in pairs)
  tn = sum(p == "no" and l == "no" for p, l in pairs)
  fn = sum(p == "no" and l == "yes" for p, l in pairs)
  precision = tp / (tp + fp) if tp + fp else 0.0
  recall = tp / (tp + fn) if tp + fn else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"accuracy": 100 * (tp + tn) / len(pairs), "precision": 100 * precision,
          "recall": 100 * recall, "f1": 100 * f1, "yes_ratio": 100 * (tp + fp) / len(pairs)}


def score(predictions: dict[str, str], items: list[EvalExample]) -> dict[str, float]:
  splits: dict[str, list] = defaultdict(list)
  for e in items:
    splits[e.meta["category"]].append((parse(predictions.get(e.question_id, "")), e.answer))
  out = {}
  for split, pairs in sorted(splits.items()):
    out.update({f"{split}/{k}": v for k, v in _metrics(pairs).items()})
  out["f1"] = sum(out[f"{s}/f1"] for s in splits) / len(splits)
  return out
