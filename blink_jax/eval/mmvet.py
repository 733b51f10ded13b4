"""MM-Vet needs an LLM grader; predictions are written in the format its grader reads
({"v1_<id>": answer}) and nothing is scored here."""

from __future__ import annotations

import json

from etils import epath

from blink_jax.eval.example import EvalExample, image_bytes, require


def examples(row: dict, where: str) -> list[EvalExample]:
  qid, question, image = require(row, "question_id", "question", "image", where=where)
  return [EvalExample(str(qid), image_bytes(image), str(question), row.get("answer"))]


def grader_file(predictions: dict[str, str], path: epath.Path) -> epath.Path:
  keyed = {(k if k.startswith("v1_") else f"v1_{k}"): v for k, v in predictions.items()}
  path.write_text(json.dumps(keyed, indent=2, ensure_ascii=False))
  return path


def score(predictions: dict[str, str], items: list[EvalExample]) -> dict[str, float]:
  del items
  return {"predictions_for_grader": float(len(predictions))}
