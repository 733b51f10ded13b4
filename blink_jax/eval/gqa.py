"""GQA testdev-balanced: LLaVA's conversion (pred.rstrip('.').lower()) then the official exact match;
binary/open breakdown from the question's structural type (query = open, else binary)."""

from __future__ import annotations

from blink_jax.eval.example import SHORT_ANSWER, EvalExample, image_bytes, require


def examples(row: dict, where: str) -> list[EvalExample]:
  qid, question, answer, image = require(row, "question_id", "question", "answer", "image", where=where)
  types = row.get("types") or {}
  structural = types.get("structural") if isinstance(types, dict) else None
  return [EvalExample(str(qid), image_bytes(image), f"{question}\n{SHORT_ANSWER}", str(answer),
                      {"structural": structural})]


def score(predictions: dict[str, str], items: list[EvalExample]) -> dict[str, float]:
  right = {e.question_id: predictions.get(e.question_id, "").rstrip(".").lower() == e.answer for e in items}
  out = {"accuracy": 100 * sum(right.values()) / max(1, len(right))}
  for kind, pick in (("open", lambda s: s == "query"), ("binary", lambda s: s != "query")):
    sel = [right[e.question_id] for e in items if e.meta["structural"] and pick(e.meta["structural"])]
    if sel:
      out[f"{kind}/accuracy"] = 100 * sum(sel) / len(sel)
  return out
