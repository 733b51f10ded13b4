"""A crashed evaluation (killed mid-benchmark, a torn last line) resumes to exactly one prediction per
question and the same results as an uninterrupted run."""

import json

import pytest

from blink_jax.eval import runner
from blink_jax.inference.pipeline import Pipeline
from test_eval import _config

pytestmark = pytest.mark.slow   # two whole evaluations: the full tier only


def test_crashed_run_resumes_to_one_prediction_per_question(tmp_path, monkeypatch):
  settings = dict(benchmarks="pope,mmbench", modes="vanilla,interp", batch_size=4,
                  **{"mesh.data": 4, "mesh.tensor": 2})
  config = _config(tmp_path, **settings)
  clean = runner.evaluate(_config(tmp_path / "clean", **settings))
  calls = {"n": 0}
  real = Pipeline.generate

  def crashing(self, *a, **kw):
    calls["n"] += 1
    if calls["n"] == 2:
      raise KeyboardInterrupt("killed")
    return real(self, *a, **kw)

  monkeypatch.setattr(Pipeline, "generate", crashing)
  with pytest.raises(KeyboardInterrupt):
    runner.evaluate(config)
  partial = tmp_path / "out" / "pope" / "vanilla.jsonl"
  assert 0 < len(partial.read_text().splitlines()) < 12
  with partial.open("a") as f:
    f.write('{"question_id": "random-ast')  # a line torn by the kill
  monkeypatch.setattr(Pipeline, "generate", real)
  resumed = runner.evaluate(config)
  for bench, n in (("pope", 12), ("mmbench", 10)):
    for mode in ("vanilla", "interp"):
      ids = [json.loads(l)["question_id"] for l in
             (tmp_path / "out" / bench / f"{mode}.jsonl").read_text().splitlines()]
      assert len(ids) == len(set(ids)) == n, (bench, mode)
  assert resumed == clean
  assert (tmp_path / "out" / "results.md").read_text() == (tmp_path / "clean" / "out" / "results.md").read_text()
