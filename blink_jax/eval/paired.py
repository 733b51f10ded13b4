"""Paired comparison of a Blink mode with vanilla on one benchmark: the difference of each headline
metric over the questions both answered, and its 95% paired-bootstrap interval (the paper's gains are
fractions of a point; this says whether a difference is more than the questions' noise).

A resample draws the benchmark's units with replacement, and both modes are scored on that same draw
(so per-question agreement between the modes narrows the interval, as a paired test should). A unit
is what the metric couples: an MME image (acc+ needs both its questions), an MMBench circular group,
an HR-Bench cycle; else a question. Benchmarks whose metric sums categories (MME) are resampled within
each category (stratified), so every resample has every subtask.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np

from blink_jax.eval.example import EvalExample

CONFIDENCE = 0.95


def _units(bench, items: list[EvalExample]) -> list[list[list[EvalExample]]]:
  """Per stratum, its units, each the examples it couples."""
  strata: dict[str, dict[str, list[EvalExample]]] = defaultdict(lambda: defaultdict(list))
  for e in items:
    stratum = str(e.meta.get(bench.stratum, "")) if bench.stratum else ""
    unit = str(e.meta[bench.unit]) if bench.unit else e.question_id
    strata[stratum][unit].append(e)
  return [list(units.values()) for _, units in sorted(strata.items())]


def _differences(bench, items, vanilla: dict[str, str], blink: dict[str, str]) -> dict[str, float]:
  a, b = bench.score(vanilla, items), bench.score(blink, items)
  return {m: b[m] - a[m] for m in bench.headline if m in a and m in b}


def compare(bench, examples: list[EvalExample], vanilla: dict[str, str], blink: dict[str, str], *,
            samples: int, seed: int) -> dict[str, dict]:
  """{metric: {'difference', 'ci95': [lo, hi], 'questions'}} of blink - vanilla on the questions both
  answered (`vanilla`, `blink`: question id -> prediction text); no interval with samples=0."""
  common = [e for e in examples if e.question_id in vanilla and e.question_id in blink]
  if not common:
    return {}
  point = _differences(bench, common, vanilla, blink)
  draws: dict[str, list[float]] = {m: [] for m in point}
  strata = _units(bench, common)
  rng = np.random.default_rng(seed)
  for _ in range(samples):
    items, a, b, copy = [], {}, {}, 0
    for units in strata:
      for k in rng.integers(len(units), size=len(units)):
        copy += 1
        for e in units[k]:
          qid = f"{e.question_id}#{copy}"
          meta = {**e.meta, bench.unit: f"{e.meta[bench.unit]}#{copy}"} if bench.unit else e.meta
          items.append(dataclasses.replace(e, question_id=qid, meta=meta))
          a[qid], b[qid] = vanilla[e.question_id], blink[e.question_id]
    for m, d in _differences(bench, items, a, b).items():
      draws[m].append(d)
  tail = 100 * (1 - CONFIDENCE) / 2
  return {m: {"difference": d, "questions": len(common),
              "ci95": [float(np.percentile(draws[m], tail)), float(np.percentile(draws[m], 100 - tail))]
              if samples else None}
          for m, d in point.items()}
