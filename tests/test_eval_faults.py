"""Evaluation never reports a number it did not measure: skipped questions are counted, named and kept
out of the scores; a benchmark without answers has no score; predictions are resumed only under the
settings that made them; undecodable and escaping image paths are per-question skips; Blink's
expansions are reported."""

import json
import os

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from blink_jax.blink.config import from_mapping
from blink_jax.checkpoint import export_token_sr
from blink_jax.data.image_preprocessing import ImageError
from blink_jax.eval import benchmarks, runner, sample_benchmarks
from blink_jax.eval.readers import read_rows
from blink_jax.models.token_sr import init_token_sr
from test_eval import _config

pope = benchmarks.get("pope")


def _pope_llava(tmp_path):
  rows = list(read_rows(sample_benchmarks.write_samples(tmp_path / "s")["pope"]))
  return sample_benchmarks.write_llava_layout(rows, tmp_path / "llava")


def _with_source(tmp_path, source, **kw):
  c = _config(tmp_path, benchmarks="pope", modes="vanilla", **kw)
  for k, v in source.items():
    c.sources.pope[k] = v
  return c


def test_a_mistyped_image_folder_scores_nothing_and_fails(tmp_path):
  source = {**_pope_llava(tmp_path), "image_folder": str(tmp_path / "llava" / "imagez")}
  with pytest.raises(runner.NothingAnswered, match=r"no question was answered for \['pope/vanilla'\]"):
    runner.evaluate(_with_source(tmp_path, source))
  results = json.loads((tmp_path / "out" / "results.json").read_text())
  assert results["pope"]["vanilla"]["answered"] == 0 and results["pope"]["vanilla"]["scores"] == {}
  assert "file not found" in results["pope"]["vanilla"]["skipped_questions"][0]["reason"]
  table = (tmp_path / "out" / "results.md").read_text()
  assert "| pope | f1 | - |" in table and "| pope | answered | 0/12 |" in table
  assert "90.91" not in table


@pytest.mark.slow   # a whole job (the full tier)
def test_a_missing_and_an_undecodable_image_are_counted_and_kept_out_of_the_score(tmp_path):
  source = _pope_llava(tmp_path)
  images = tmp_path / "llava" / "images"
  chelsea = (images / "chelsea.jpg").read_bytes()
  os.remove(images / "chelsea.jpg")                                  # 6 questions
  results = runner.evaluate(_with_source(tmp_path / "a", source))["pope"]["vanilla"]
  assert (results["answered"], results["skipped"], results["complete"]) == (6, 6, False)
  (images / "chelsea.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")  # undecodable: skipped, not fatal
  results = runner.evaluate(_with_source(tmp_path / "b", source))["pope"]["vanilla"]
  assert results["answered"] == 6
  reasons = {s["reason"] for s in results["skipped_questions"]}
  assert any("chelsea.jpg" in r and "not a readable image" in r for r in reasons), reasons
  # the score is over the 6 answered questions only
  predictions = runner.load_predictions(tmp_path / "b" / "out" / "pope" / "vanilla.jsonl")
  answered = [e for e in runner.collect_examples(pope, read_rows(source), "pope")[0] if e.question_id in predictions]
  assert len(answered) == 6
  assert results["scores"] == pope.score({q: p["text"] for q, p in predictions.items()}, answered)
  table = (tmp_path / "b" / "out" / "results.md").read_text()
  assert "| pope | answered | 6/12 |" in table and "* incomplete" in table
  assert f"{results['scores']['f1']:.2f}*" in table
  # an image put back is answered on resume, and the benchmark becomes complete
  (images / "chelsea.jpg").write_bytes(chelsea)
  results = runner.evaluate(_with_source(tmp_path / "b", source))["pope"]["vanilla"]
  assert (results["answered"], results["complete"]) == (12, True)


def test_image_paths_may_not_leave_their_folder(tmp_path):
  source = _pope_llava(tmp_path)
  secret = tmp_path / "secret.jpg"
  secret.write_bytes((tmp_path / "llava" / "images" / "astronaut.jpg").read_bytes())
  rows = [json.loads(l) for l in open(source["questions"])]
  rows[0]["image"] = "../../secret.jpg"
  rows[1]["image"] = str(secret)
  with open(source["questions"], "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  results = runner.evaluate(_with_source(tmp_path, source))["pope"]["vanilla"]
  assert results["answered"] == 10
  assert all("outside the image folder" in s["reason"] for s in results["skipped_questions"])
  # a parquet cell holding only a path is refused without an image_folder
  parquet = [{**r, "image": {"bytes": r["image"].read(), "path": r["image"].name}}
             for r in read_rows(sample_benchmarks.write_samples(tmp_path / "p")["pope"])]
  parquet[0]["image"] = {"bytes": None, "path": "/etc/hostname"}
  parquet_path = tmp_path / "escaping.parquet"
  pq.write_table(pa.Table.from_pylist(parquet), str(parquet_path))
  examples, _ = runner.collect_examples(pope, read_rows({"format": "parquet", "path": str(parquet_path)}), "pope")
  with pytest.raises(ImageError, match="needs the source's image_folder"):
    runner.decode_image(examples[0], None)
  examples, _ = runner.collect_examples(pope, read_rows({"format": "parquet", "path": str(parquet_path),
                                                         "image_folder": str(tmp_path)}), "pope")
  with pytest.raises(ImageError, match="outside the image folder"):
    runner.decode_image(examples[0], None)


@pytest.mark.slow   # a whole job (the full tier)
def test_predictions_resume_only_under_the_settings_that_made_them(tmp_path, capsys):
  settings = dict(benchmarks="pope", modes="vanilla,interp,tokensr")
  runner.evaluate(_config(tmp_path, **settings))
  out_dir = tmp_path / "out"
  results = json.loads((out_dir / "results.json").read_text())
  (out_dir / "results.json").write_text(json.dumps({**results, "mme": results["pope"]}))  # as if scored before
  capsys.readouterr()
  again = runner.evaluate(_config(tmp_path, **settings))                  # same settings: resumes
  assert again["pope"]["interp"]["answered"] == 12
  out = capsys.readouterr().out
  assert f"results: {out_dir / 'results.md'}" in out
  assert "the earlier results of mme" in out and "--config.benchmarks=pope,mme" in out
  export = tmp_path / "export"
  c = _config(tmp_path, **settings)
  blink = from_mapping(c.blink.to_dict())
  params = init_token_sr(blink.num_scan_layers, blink.token_sr_channels, blink.region_size, 128,
                         jax.random.key(7))
  params = jax.tree.map(lambda w: w + 0.01, params)
  export_token_sr(export, params, blink, 128)
  with pytest.raises(ValueError, match=r"(?s)tokensr.jsonl was made with other settings.*token_sr_sha256: "
                                       r"'untrained' -> '[0-9a-f]{64}'"):
    runner.evaluate(_config(tmp_path, **settings, token_sr=str(export)))
  with pytest.raises(ValueError, match=r"interp.jsonl was made with other settings.*\n  blink.tau_exp"):
    runner.evaluate(_config(tmp_path, **settings, **{"blink.tau_exp": 0.2}))
  with pytest.raises(ValueError, match=r"vanilla.jsonl .*\n  dtype: 'float32' -> 'bfloat16'"):
    runner.evaluate(_config(tmp_path, **settings, **{"model.dtype": "bfloat16"}))
  fresh = runner.evaluate(_config(tmp_path / "new", **settings, token_sr=str(export)))
  assert fresh["pope"]["tokensr"]["answered"] == 12


@pytest.mark.slow   # a whole job (the full tier)
def test_blink_expands_in_the_embedded_default_and_uses_the_default_export(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  c = _config(tmp_path, benchmarks="pope", token_sr="auto")
  blink = from_mapping(c.blink.to_dict())
  params = init_token_sr(blink.num_scan_layers, blink.token_sr_channels, blink.region_size, 128,
                         jax.random.key(3))
  export_token_sr(tmp_path / runner.DEFAULT_EXPORT, jax.tree.map(lambda w: w + 0.05, params), blink, 128)
  results = runner.evaluate(c)
  assert "tokensr: TokenSR from runs/tokensr/export (train.py's default job)" in capsys.readouterr().out
  for mode in ("interp", "tokensr"):
    assert results["pope"][mode]["questions_expanded"] == 12 and results["pope"][mode]["expansions"] >= 12
  assert results["pope"]["vanilla"]["expansions"] == 0
  table = (tmp_path / "out" / "results.md").read_text()
  assert "| pope | expansions (questions) |  |" in table
  rows = {m: runner.load_predictions(tmp_path / "out" / "pope" / f"{m}.jsonl") for m in ("interp", "tokensr")}
  assert np.all([rows["tokensr"][q]["expansions"] > 0 for q in rows["tokensr"]])


def test_a_corrupt_token_sr_export_is_named(tmp_path):
  c = _config(tmp_path, benchmarks="pope", modes="tokensr")
  blink = from_mapping(c.blink.to_dict())
  export = tmp_path / "export"
  export_token_sr(export, init_token_sr(blink.num_scan_layers, blink.token_sr_channels, blink.region_size, 128,
                                        jax.random.key(0)), blink, 128)
  for p in (export / "params").rglob("*"):
    if p.is_file() and p.parent.name == "d":
      p.write_bytes(b"not a tensor" * 4)
  with pytest.raises(ValueError, match=r"export: the TokenSR export's params/ could not be read"):
    runner.evaluate(_config(tmp_path, benchmarks="pope", modes="tokensr", token_sr=str(export)))
