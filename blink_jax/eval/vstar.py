"""V* Bench (`vstar`, 191 questions on high-resolution images: direct_attributes, relative_position),
scored two ways, both reported:

- `accuracy` (the benchmark's own, penghao-wu/vstar `vstar_bench_eval.py`): the question alone in
  the conversation template (`<image>\\n{question}`, no options, no instruction), each option's text
  as the assistant's reply (`" {option}</s>"`); the option with the least mean cross-entropy per token
  (here: highest mean log-probability) is the prediction. Overall accuracy over all questions, and
  per category.
- `letter/accuracy` (lmms-eval's `vstar_bench`): the question, options as `A. ...` lines and "Answer
  with the option's letter from the given choices directly.", generated, the letter extracted as
  lmms-eval's extract_answer_letter does.

Rows: the benchmark's folder layout (format=folder: `question`, `options` with `options[0]` the correct
one) or lmms-lab's parquet (`text` with inline `(A) ... (B) ...` options, `label`). In the folder
layout the right option is always the first, so for the letter variant the options are rotated by
a fixed amount per question (crc32 of its id modulo the option count; ours: lmms-lab's own order is
not derivable from the folder files); lmms-lab rows keep their order.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict

from blink_jax.eval.example import LETTER_ANSWER, EvalExample, image_bytes, require

LETTERS = "ABCD"
_INLINE_OPTION = re.compile(r"\(([A-D])\)\s*([^()]+?)(?=\s*\([A-D]\)|$)", re.S)


def _options(row: dict, where: str) -> tuple[str, str, list[str], int]:
  """(question id, question stem, options, index of the right one) from either layout."""
  qid = str(row.get("question_id", row.get("_row")))
  if "options" in row:
    question, options = require(row, "question", "options", where=where)
    options, right = [str(o) for o in options], 0
  else:
    text, label = require(row, "text", "label", where=where)
    found = _INLINE_OPTION.findall(text)
    options = [o.strip() for _, o in found]
    question = text.split("(A)")[0].strip()
    label = str(label).strip().upper()
    if label not in LETTERS[:len(options)]:
      raise ValueError(f"{where}: V* row {qid} label {label!r} is not one of its {len(options)} option letters")
    right = LETTERS.index(label)
  if not 2 <= len(options) <= len(LETTERS):
    raise ValueError(f"{where}: V* row {qid} has {len(options)} options; expected 2 to {len(LETTERS)}")
  if len(set(options)) != len(options):
    raise ValueError(f"{where}: V* row {qid} repeats an option: {options}")
  return qid, question.strip(), options, right


def examples(row: dict, where: str) -> list[EvalExample]:
  qid, question, options, right = _options(row, where)
  image = image_bytes(require(row, "image", where=where)[0])
  meta = {"category": row.get("category") or "unknown"}
  scored = EvalExample(qid, image, question, options[right], meta, choices=options)
  shift = zlib.crc32(qid.encode()) % len(options) if "options" in row else 0
  shown = options[shift:] + options[:shift]
  lines = "".join(f"\n{LETTERS[i]}. {o}" for i, o in enumerate(shown))
  letter = EvalExample(f"{qid}/letter", image, f"{question}{lines}\n{LETTER_ANSWER}",
                       LETTERS[shown.index(options[right])], {**meta, "letter": True})
  return [scored, letter]


_LETTER_PATTERNS = [re.compile(p) for p in (
    r"^([A-D])\s*[\.)\]]*",                                      # starts with the letter
    r"(?:THE\s+)?(?:ANSWER|CHOICE|OPTION)(?:\s+IS)?[\s:]+([A-D])",  # "Answer: A", "The answer is A"
    r"\(([A-D])\)",                                              # "(A)"
    r"([A-D])\s*(?:\.|\)|])",                                    # "A." "A)" "A]"
    r"(?:^|\s)([A-D])(?:\s|$)",                                  # a lone letter
)]


def extract_letter(response: str) -> str | None:
  """lmms-eval's V* rule: on the upper-cased reply, the first of these patterns that matches; else the
  only A-D letter in it; else its first character if that is one."""
  text = response.strip().upper()
  for pattern in _LETTER_PATTERNS:
    m = pattern.search(text)
    if m:
      return m.group(1)
  letters = re.findall(r"[A-D]", text)
  if len(letters) == 1:
    return letters[0]
  return text[0] if text and text[0] in LETTERS else None


def score(predictions: dict[str, str], items: list[EvalExample]) -> dict[str, float]:
  right: dict[str, dict[str, list[bool]]] = {"": defaultdict(list), "letter/": defaultdict(list)}
  for e in items:
    text = predictions.get(e.question_id, "")
    if e.meta.get("letter"):
      prefix, ok = "letter/", extract_letter(text) == e.answer
    else:
      prefix, ok = "", text == e.answer
    right[prefix]["accuracy"].append(ok)
    right[prefix][f"{e.meta['category']}/accuracy"].append(ok)
  return {prefix + k: 100 * sum(v) / len(v) for prefix, groups in right.items() for k, v in sorted(groups.items())}
