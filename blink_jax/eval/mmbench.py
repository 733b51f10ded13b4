"""MMBench / MMBench-CN: LLaVA-1.5's prompt (hint, question, lettered options, the letter
instruction), every rotation of the options asked (CircularEval), option-letter extraction; a
question counts only if all its rotations are right. Overall and per category / l2-category."""

from __future__ import annotations

import base64
import math
from collections import defaultdict

from blink_jax.eval.example import LETTER_ANSWER, LETTER_ANSWER_CN, EvalExample, image_bytes, require
from blink_jax.eval.option_letters import extract_letter

LETTERS = "ABCDEFGH"


def _missing(v) -> bool:
  return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and
                                                                    v.strip().lower() in ("", "nan", "none"))


def _image(value):
  value = image_bytes(value)
  if isinstance(value, str) and len(value) > 512:  # the official TSV stores base64 images
    return base64.b64decode(value)
  return value


def make_examples(row: dict, where: str, lang: str) -> list[EvalExample]:
  index, question, answer, image = require(row, "index", "question", "answer", "image", where=where)
  options = []
  for letter in LETTERS:
    if letter not in row or _missing(row[letter]):
      break
    options.append(str(row[letter]))
  if len(options) < 2:
    raise ValueError(f"{where}: MMBench row {index} has {len(options)} options (columns A, B, ...); "
                     "a multiple-choice question needs at least 2")
  if answer not in LETTERS[:len(options)]:
    raise ValueError(f"{where}: MMBench row {index} answer {answer!r} is not one of its option letters")
  hint = row.get("hint")
  stem = question if _missing(hint) else f"{hint}\n{question}"
  suffix = LETTER_ANSWER_CN if lang == "cn" else LETTER_ANSWER
  out = []
  n = len(options)
  for k in range(n):
    rotated = options[k:] + options[:k]
    lines = "".join(f"\n{LETTERS[i]}. {o}" for i, o in enumerate(rotated))
    correct = LETTERS[(LETTERS.index(answer) - k) % n]
    out.append(EvalExample(f"{index}/r{k}", _image(image), f"{stem}{lines}\n{suffix}", correct,
                           {"index": str(index), "options": dict(zip(LETTERS, rotated)),
                            "category": row.get("category"), "l2_category": row.get("l2-category")}))
  return out


def examples(row: dict, where: str) -> list[EvalExample]:
  return make_examples(row, where, "en")


def examples_cn(row: dict, where: str) -> list[EvalExample]:
  return make_examples(row, where, "cn")


def score(predictions: dict[str, str], items: list[EvalExample]) -> dict[str, float]:
  rounds: dict[str, list[bool]] = defaultdict(list)
  meta = {}
  for e in items:
    letter = extract_letter(predictions.get(e.question_id, ""), e.meta["options"])
    rounds[e.meta["index"]].append(letter == e.answer)
    meta[e.meta["index"]] = e.meta
  circular = {i: all(r) for i, r in rounds.items()}
  out = {"circular_accuracy": 100 * sum(circular.values()) / max(1, len(circular))}
  for key in ("category", "l2_category"):
    groups: dict[str, list[bool]] = defaultdict(list)
    for i, ok in circular.items():
      if meta[i].get(key):
        groups[meta[i][key]].append(ok)
    out.update({f"{key}/{g}": 100 * sum(v) / len(v) for g, v in sorted(groups.items())})
  return out
