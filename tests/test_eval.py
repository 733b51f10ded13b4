"""eval.py's machinery: the same benchmark read from local parquet, LLaVA's layout, a GCS emulator and
TFDS gives identical predictions and scores; bad input is named or skipped and counted. (A crashed
run's resume: integration/test_eval_resume.py.)"""

import json
import os

import pytest

import gcs_fixtures
from blink_jax import sharding as shd
from blink_jax.eval import benchmarks, runner, sample_benchmarks
from blink_jax.eval.readers import read_rows
from configs import eval as eval_config
from train_fixtures import set_fields


def _config(tmp_path, **overrides):
  c = eval_config.get_config()
  c.output_dir = str(tmp_path / "out")
  c.batch_size = 8
  c.max_new_tokens = 4
  c.token_sr = ""   # never the developer's own runs/tokensr/export
  return set_fields(c, overrides)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
  c = _config(tmp_path_factory.mktemp("p"))
  return runner.build_pipeline(c, shd.Partitioner.from_config(c)).pipe


def _run(pipe, source, out_path, mode="vanilla"):
  bench = benchmarks.get("pope")
  examples, malformed = runner.collect_examples(bench, read_rows(source), str(source))
  skipped = runner.answer(pipe, examples, mode, out_path, batch_size=8, max_new_tokens=4, desc="pope")
  predictions = runner.load_predictions(out_path)
  result = runner.score_mode(bench, examples, predictions, skipped)
  return {q: p["text"] for q, p in predictions.items()}, result["scores"], malformed, len(skipped)


def test_local_gcs_and_tfds_sources_give_identical_results(pipe, tmp_path, gcs_emulator):
  sources = sample_benchmarks.write_samples(tmp_path / "samples")
  local_parquet = sources["pope"]
  llava = sample_benchmarks.write_llava_layout(
      [r for r in read_rows(local_parquet)], tmp_path / "llava")
  gcs_fixtures.upload(tmp_path / "samples" / "parquet" / "pope", f"{gcs_emulator}/pope_parquet")
  gcs_fixtures.upload(tmp_path / "llava", f"{gcs_emulator}/pope_llava")
  variants = {
      "parquet": local_parquet,
      "llava": llava,
      "gcs_parquet": {"format": "parquet", "path": f"{gcs_emulator}/pope_parquet"},
      "gcs_llava": {"format": "llava", "questions": f"{gcs_emulator}/pope_llava/questions.jsonl",
                    "image_folder": f"{gcs_emulator}/pope_llava/images",
                    "annotations": f"{gcs_emulator}/pope_llava/annotations.jsonl"},
      "tfds": sample_benchmarks.write_pope_tfds(str(tmp_path / "tfds")),
  }
  results = {k: _run(pipe, v, tmp_path / k / "vanilla.jsonl") for k, v in variants.items()}
  reference = results["parquet"]
  assert len(reference[0]) == 12 and reference[2:] == (0, 0)
  for name, result in results.items():
    assert result == reference, name


def test_bad_inputs_are_named_or_skipped_and_counted(pipe, tmp_path):
  with pytest.raises(ValueError, match=r"unknown benchmark 'mmmu'"):
    runner.evaluate(_config(tmp_path, benchmarks="mmmu"))
  with pytest.raises(ValueError, match=r"unknown mode 'fast'"):
    runner.evaluate(_config(tmp_path, modes="vanilla,fast"))
  rows = [r for r in read_rows(sample_benchmarks.write_samples(tmp_path / "s")["pope"])]
  source = sample_benchmarks.write_llava_layout(rows, tmp_path / "llava")
  os.remove(tmp_path / "llava" / "images" / "chelsea.jpg")            # 6 questions lose their image
  with open(source["annotations"], "a") as f:
    f.write(json.dumps({"question_id": "extra", "answer": "yes"}) + "\n")
  with open(source["questions"], "a") as f:
    f.write(json.dumps({"question_id": "broken", "image": "astronaut.jpg", "text": "Q?"}) + "\n")  # no category
  predictions, scores, malformed, missing = _run(pipe, source, tmp_path / "o" / "vanilla.jsonl")
  assert (malformed, missing) == (1, 6) and len(predictions) == 6
  assert set(scores) >= {"f1", "adversarial/f1"}
  mm = [dict(r) for r in read_rows(sample_benchmarks.write_samples(tmp_path / "m")["mmbench"])]
  mm[0].update(A=None, B=None, C=None, D=None)
  examples, skipped = runner.collect_examples(benchmarks.get("mmbench"), mm, "mmbench")
  assert skipped == 1 and {e.meta["group"] for e in examples} == {"1", "2"}
