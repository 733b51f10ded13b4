"""The paired comparison with vanilla: the difference over the questions both modes answered and its
95% bootstrap interval, resampling the units the metric couples."""

import pytest

from blink_jax.eval import benchmarks, paired, runner
from blink_jax.eval.example import EvalExample
from test_eval import _config

gqa = benchmarks.get("gqa")


def _gqa(n):
  return [EvalExample(str(i), None, "", "yes", {"structural": "verify"}) for i in range(n)]


def test_identical_predictions_differ_by_zero_with_a_zero_interval():
  items = _gqa(50)
  preds = {e.question_id: ("yes" if i % 3 else "no") for i, e in enumerate(items)}
  out = paired.compare(gqa, items, preds, dict(preds), samples=200, seed=0)
  assert out["accuracy"] == {"difference": 0.0, "questions": 50, "ci95": [0.0, 0.0]}


def test_a_consistent_gain_excludes_zero_and_a_mixed_one_does_not():
  items = _gqa(200)
  vanilla = {e.question_id: ("yes" if i % 2 else "no") for i, e in enumerate(items)}   # 100 right
  gain = {**vanilla, **{str(i): "yes" for i in range(0, 20, 2)}}                      # +10 right
  out = paired.compare(gqa, items, vanilla, gain, samples=500, seed=0)["accuracy"]
  assert out["difference"] == pytest.approx(5.0)
  lo, hi = out["ci95"]
  assert 0 < lo < 5 < hi < 10
  mixed = {**gain, **{str(i): "no" for i in range(1, 17, 2)}}                         # and -8 right
  out = paired.compare(gqa, items, vanilla, mixed, samples=500, seed=0)["accuracy"]
  assert out["difference"] == pytest.approx(1.0)
  assert out["ci95"][0] < 0 < out["ci95"][1]
  # Only the questions both answered count.
  del mixed["0"]
  assert paired.compare(gqa, items, vanilla, mixed, samples=0, seed=0)["accuracy"]["questions"] == 199


def test_coupled_questions_are_resampled_together():
  """MME's acc+ needs both questions of an image: a resample that split an image's pair would score
  pairs that do not exist. With every image half right in both modes, acc+ is 0 in every resample."""
  mme = benchmarks.get("mme")
  items = [EvalExample(f"{img}#{k}", None, "", ["yes", "no"][k], {"category": "existence", "image_id": str(img)})
           for img in range(30) for k in range(2)]
  vanilla = {e.question_id: "yes" for e in items}              # each image: one right, one wrong
  blink = {e.question_id: ("yes" if int(e.question_id.split("#")[0]) % 2 else "no") for e in items}
  out = paired.compare(mme, items, vanilla, blink, samples=100, seed=0)
  assert out["perception"]["difference"] == 0.0 and out["perception"]["ci95"] == [0.0, 0.0]


@pytest.mark.slow   # a whole job (the full tier)
def test_eval_reports_paired_differences(tmp_path):
  results = runner.evaluate(_config(tmp_path, benchmarks="vstar,hrbench_4k,mmbench", modes="vanilla,interp",
                                    bootstrap_samples=50))
  for name, metric in [("vstar", "accuracy"), ("hrbench_4k", "average"), ("mmbench", "circular_accuracy")]:
    d = results[name]["paired"]["interp"][metric]
    v, i = results[name]["vanilla"]["scores"][metric], results[name]["interp"]["scores"][metric]
    assert d["difference"] == pytest.approx(i - v) and d["questions"] == results[name]["questions"]
    assert d["ci95"][0] <= d["difference"] <= d["ci95"][1]
  table = (tmp_path / "out" / "results.md").read_text()
  assert "| vstar | letter/accuracy | 8 |" in table and "interp - vanilla" in table
