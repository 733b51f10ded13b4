"""The supported benchmarks: how each turns rows into questions and scores predictions, its headline
metrics, and the paper's LLaVA-1.5-7B numbers (BLINK_SPEC §7) for the results table."""

from __future__ import annotations

import dataclasses
from typing import Callable

from blink_jax.eval import (fine_detail, gqa, hrbench, mmbench, mme, mmvet, pope, scienceqa, seed, vqa_accuracy,
                            vstar)
from blink_jax.inference import pipeline


@dataclasses.dataclass(frozen=True)
class Benchmark:
  name: str
  examples: Callable          # (row, where) -> list[EvalExample]
  score: Callable             # (predictions {qid: text}, examples) -> {metric: value}
  headline: tuple[str, ...]   # metrics shown in the results table
  paper: dict                 # metric -> (vanilla, interp, tokensr) for LLaVA-1.5-7B
  finish: Callable | None = None   # (all of a source's examples) -> the questions asked (MMBench: circular)
  # For the paired bootstrap (eval/paired.py): the meta field whose value couples questions in the
  # metric (resampled together), and the one whose groups are resampled separately (stratified).
  unit: str | None = None
  stratum: str | None = None
  scored_here: bool = True    # False: an external grader scores it (MM-Vet); no paired comparison


BENCHMARKS = {b.name: b for b in [
    Benchmark("mme", mme.examples, mme.score, ("perception", "cognition"),
              {"perception": (1505.72, 1514.08, 1519.74), "cognition": (357.86, 353.21, 361.79)},
              unit="image_id", stratum="category"),
    Benchmark("pope", pope.examples, pope.score, ("f1", "adversarial/f1", "popular/f1", "random/f1"),
              {"f1": (85.17, 85.17, 85.23)}, stratum="category"),
    Benchmark("gqa", gqa.examples, gqa.score, ("accuracy",), {"accuracy": (61.93, 61.93, 61.98)}),
    Benchmark("mmbench", mmbench.examples, mmbench.score, ("circular_accuracy",),
              {"circular_accuracy": (64.60, 64.69, 64.69)}, mmbench.circular, unit="group"),
    Benchmark("mmbench_cn", mmbench.examples_cn, mmbench.score, ("circular_accuracy",),
              {"circular_accuracy": (58.08, 58.51, 58.59)}, mmbench.circular, unit="group"),
    Benchmark("scienceqa_img", scienceqa.examples, scienceqa.score, ("accuracy",),
              {"accuracy": (69.46, 69.51, 69.66)}),
    Benchmark("seed", seed.examples, seed.score, ("accuracy",), {}),
    Benchmark("textvqa", vqa_accuracy.examples, vqa_accuracy.score, ("accuracy",), {}),
    Benchmark("vqav2", vqa_accuracy.examples, vqa_accuracy.score, ("accuracy",), {}),
    Benchmark("vstar", vstar.examples, vstar.score, ("accuracy", "direct_attributes/accuracy",
                                                     "relative_position/accuracy", "letter/accuracy"), {}),
    Benchmark("hrbench_4k", hrbench.examples, hrbench.score, ("average", "single", "cross"), {}, unit="cycle"),
    Benchmark("hrbench_8k", hrbench.examples, hrbench.score, ("average", "single", "cross"), {}, unit="cycle"),
    Benchmark("fine_detail", fine_detail.examples, fine_detail.score,
              ("accuracy",) + tuple(f"{c}/accuracy" for c in fine_detail.CATEGORIES), {}, stratum="category"),
    Benchmark("mmvet", mmvet.examples, mmvet.score, ("predictions_for_grader",),
              {"gpt4_score (external grader)": (32.20, 31.70, 33.40)}, scored_here=False),
]}

MODES = pipeline.MODES
BLINK_MODES = ("vanilla", "interp", "tokensr")   # the paper's columns (Benchmark.paper) and eval.py's default


def get(name: str) -> Benchmark:
  if name not in BENCHMARKS:
    raise ValueError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
  return BENCHMARKS[name]
