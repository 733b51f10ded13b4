"""Multiple-choice answer extraction: the option letter a free-form prediction names.

Order (BLINK_SPEC §8, MMBench): a bare letter; a wrapped form at the start ("B.", "B)", "(C)",
"D:") or after an answer cue ("Answer: D", "The answer is (B)"); then the option whose text alone
appears in the prediction. None when nothing or more than one option matches.
"""

from __future__ import annotations

import re

_LEADING = re.compile(r"^\(?([A-Z])(?:[\.\):：]|\s|$)")
_CUE = re.compile(r"(?:answer|option|choice)\s*(?:is|:|：)?\s*:?\s*\(?([A-Z])\b\)?", re.IGNORECASE)


def extract_letter(prediction: str, options: dict[str, str]) -> str | None:
  text = prediction.strip()
  if text in options:
    return text
  m = _LEADING.match(text)
  if m and m.group(1) in options:
    return m.group(1)
  cues = {c for c in _CUE.findall(text) if c in options}
  if len(cues) == 1:
    return cues.pop()
  lowered = text.lower()
  named = [k for k, v in options.items() if v and str(v).strip().lower() in lowered]
  return named[0] if len(named) == 1 else None
