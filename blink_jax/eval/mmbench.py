"""MMBench / MMBench-CN: LLaVA-1.5's prompt (hint, question, lettered options, the letter
instruction), option-letter extraction and CircularEval: a question counts only if all its circular
copies are right. Overall and per category / l2-category.

The official dev/test TSVs (and lmms-lab's parquet) already hold each question's circular copies as
rows of their own, at `index + k * 1_000_000` with the options rotated; as LLaVA does, every row is
asked once and the rows are grouped by `index % 1_000_000`. Only a source without such copies (e.g.
the embedded sample) has every rotation of each row's options made here (ids `<index>/r<k>`)."""

from __future__ import annotations

import math
from collections import defaultdict

from blink_jax.eval.example import LETTER_ANSWER, LETTER_ANSWER_CN, EvalExample, image_bytes, require
from blink_jax.eval.option_letters import extract_letter

LETTERS = "ABCDEFGH"


def _missing(v) -> bool:
  return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and
                                                                    v.strip().lower() in ("", "nan", "none"))


COPY_STRIDE = 1_000_000   # the official files hold question i's circular copies at i + k * COPY_STRIDE


def make_examples(row: dict, where: str, lang: str) -> list[EvalExample]:
  """The row as one question, its options as given (`circular` adds rotations where needed)."""
  index, question, answer, image = require(row, "index", "question", "answer", "image", where=where)
  try:
    index = int(index)
  except (TypeError, ValueError):
    raise ValueError(f"{where}: MMBench row index {index!r} is not an integer") from None
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
  meta = {"group": str(index % COPY_STRIDE), "stem": stem, "suffix": suffix, "category": row.get("category"),
          "l2_category": row.get("l2-category")}
  return [_question(str(index), image_bytes(image), options, answer, meta)]


def _question(qid: str, image, options: list[str], answer: str, meta: dict) -> EvalExample:
  lines = "".join(f"\n{LETTERS[i]}. {o}" for i, o in enumerate(options))
  return EvalExample(qid, image, f"{meta['stem']}{lines}\n{meta['suffix']}", answer,
                     {**meta, "options": dict(zip(LETTERS, options))})


def circular(items: list[EvalExample]) -> list[EvalExample]:
  """CircularEval's questions: the source's own circular copies when it has any (a row index at or
  above COPY_STRIDE), else every rotation of each row's options."""
  if any(int(e.question_id) >= COPY_STRIDE for e in items):
    return items
  out = []
  for e in items:
    options = list(e.meta["options"].values())
    n = len(options)
    for k in range(n):
      correct = LETTERS[(LETTERS.index(e.answer) - k) % n]
      out.append(_question(f"{e.question_id}/r{k}", e.image, options[k:] + options[:k], correct, e.meta))
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
    rounds[e.meta["group"]].append(letter == e.answer)
    meta[e.meta["group"]] = e.meta
  circular = {i: all(r) for i, r in rounds.items()}
  out = {"circular_accuracy": 100 * sum(circular.values()) / max(1, len(circular))}
  for key in ("category", "l2_category"):
    groups: dict[str, list[bool]] = defaultdict(list)
    for i, ok in circular.items():
      if meta[i].get(key):
        groups[meta[i][key]].append(ok)
    out.update({f"{key}/{g}": 100 * sum(v) / len(v) for g, v in sorted(groups.items())})
  return out
