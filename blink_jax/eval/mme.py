"""MME as its official calculation.py scores it: answers parsed to yes/no/other; per subtask
acc (per question) and acc+ (both questions of an image right), score = 100 acc + 100 acc+;
Perception = sum of the 10 perception subtasks, Cognition = sum of the 4 cognition ones."""

from __future__ import annotations

from collections import defaultdict

from blink_jax.eval.example import SHORT_ANSWER, EvalExample, image_bytes, require

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
              "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def parse(text: str) -> str:
  text = text.lower()
  if text in ("yes", "no"):
    return text
  head = text[:4]
  if "yes" in head:
    return "yes"
  if "no" in head:
    return "no"
  return "other"


def examples(row: dict, where: str) -> list[EvalExample]:
  qid, question, answer, category, image = require(row, "question_id", "question", "answer", "category",
                                                    "image", where=where)
  # LLaVA-1.5's MME prompt: the yes/no instruction replaced by the short-answer one.
  question = question.replace(" Please answer yes or no.", "").strip()
  # lmms-lab's MME gives an image's two questions one question_id (the image): keep it as the image
  # id (for acc+) and make the question's id unique with its row.
  return [EvalExample(f"{qid}#{row['_row']}", image_bytes(image), f"{question}\n{SHORT_ANSWER}",
                      str(answer).lower(), {"category": category, "image_id": str(qid)})]


def score(predictions: dict[str, str], items: list[EvalExample]) -> dict[str, float]:
  per_task: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
  for e in items:
    right = parse(predictions.get(e.question_id, "")) == e.answer
    per_task[e.meta["category"]][e.meta["image_id"]].append(right)
  out = {}
  for task, images in per_task.items():
    answers = [r for rs in images.values() for r in rs]
    acc = sum(answers) / len(answers)
    acc_plus = sum(all(rs) for rs in images.values()) / len(images)
    out[f"{task}/acc"], out[f"{task}/acc_plus"] = 100 * acc, 100 * acc_plus
    out[f"{task}/score"] = 100 * acc + 100 * acc_plus
  out["perception"] = sum(out.get(f"{t}/score", 0.0) for t in PERCEPTION)
  out["cognition"] = sum(out.get(f"{t}/score", 0.0) for t in COGNITION)
  return out
