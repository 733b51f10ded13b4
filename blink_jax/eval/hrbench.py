"""HR-Bench 4K / 8K (`hrbench_4k`, `hrbench_8k`; HF `DreamMr/HR-Bench` rows: base64 `image`,
`question`, options `A`-`D`, `answer`, `category` single | cross, `cycle_category`): multiple-choice
questions on 4K / 8K images.

Prompt as LLaVA-1.5 words multiple choice: the question, `A. ...` lines and "Answer with the
option's letter from the given choices directly." (HR-Bench's own harness, and lmms-eval's task, say
"Answer the option letter directly." and have an LLM judge read the letter: ours extracts it with the
MMBench rules, no judge.) Scores as HR-Bench aggregates them: within each of `single` / `cross`,
accuracy per `cycle_category` (a question's option rotations share one), then the mean over cycle
categories; `average` the same over all rows.
"""

from __future__ import annotations

from collections import defaultdict

from blink_jax.eval.example import LETTER_ANSWER, EvalExample, image_bytes, require
from blink_jax.eval.option_letters import extract_letter

LETTERS = "ABCD"


def examples(row: dict, where: str) -> list[EvalExample]:
  index, question, answer, image = require(row, "index", "question", "answer", "image", where=where)
  options = {k: str(row[k]) for k in LETTERS if row.get(k) is not None and str(row[k]).strip()}
  if len(options) < 2:
    raise ValueError(f"{where}: HR-Bench row {index} has {len(options)} options (columns A-D); expected 2 or more")
  if answer not in options:
    raise ValueError(f"{where}: HR-Bench row {index} answer {answer!r} is not one of its options {sorted(options)}")
  lines = "".join(f"\n{k}. {v}" for k, v in options.items())
  meta = {"category": str(row.get("category") or "single"), "cycle": str(row.get("cycle_category", index)),
          "options": options}
  return [EvalExample(str(index), image_bytes(image), f"{str(question).strip()}{lines}\n{LETTER_ANSWER}",
                      answer, meta)]


def _cycle_mean(rows: list[tuple[str, bool]]) -> float:
  cycles: dict[str, list[bool]] = defaultdict(list)
  for cycle, ok in rows:
    cycles[cycle].append(ok)
  return 100 * sum(sum(v) / len(v) for v in cycles.values()) / len(cycles)


def score(predictions: dict[str, str], items: list[EvalExample]) -> dict[str, float]:
  by_category: dict[str, list[tuple[str, bool]]] = defaultdict(list)
  for e in items:
    ok = extract_letter(predictions.get(e.question_id, ""), e.meta["options"]) == e.answer
    by_category[e.meta["category"]].append((e.meta["cycle"], ok))
  out = {name: _cycle_mean(rows) for name, rows in sorted(by_category.items())}
  out["average"] = _cycle_mean([r for rows in by_category.values() for r in rows])
  return out
