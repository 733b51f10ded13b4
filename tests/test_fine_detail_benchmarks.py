"""V* Bench and HR-Bench: both layouts read, prompts as their official evaluations word them, the two V*
scorings, HR-Bench's cycle-category averages, and V*'s option scoring run through the runner."""

import base64

import numpy as np
import pytest

from blink_jax.data.prompt import vicuna_v1_answer, vicuna_v1_prompt
from blink_jax.data.image_preprocessing import ImageError, preprocess_image
from blink_jax.eval import benchmarks, hrbench, runner, sample_benchmarks, vstar
from blink_jax.eval.example import EvalExample
from blink_jax.eval.readers import ParquetCell, read_rows
from blink_jax.inference.pipeline import Pipeline


def test_vstar_folder_layout_gives_a_scored_and_a_letter_question(tmp_path):
  source = sample_benchmarks.write_samples(tmp_path)["vstar"]
  rows = list(read_rows(source))
  assert sorted(r["question_id"] for r in rows) == [
      "direct_attributes/chelsea", "direct_attributes/coffee", "relative_position/astronaut",
      "relative_position/rocket"]
  assert {r["category"] for r in rows} == {"direct_attributes", "relative_position"}
  examples, malformed = runner.collect_examples(benchmarks.get("vstar"), rows, "vstar")
  assert malformed == 0 and len(examples) == 8
  coffee = {e.question_id: e for e in examples if "coffee" in e.question_id}
  scored, letter = coffee["direct_attributes/coffee"], coffee["direct_attributes/coffee/letter"]
  # The original protocol: the question alone, every option as the reply, options[0] right.
  assert scored.question == "What is the color of the cup?"
  assert scored.choices == ["white", "red", "black", "green"] and scored.answer == "white"
  # lmms-eval's: lettered options and the letter instruction; rotated so "A" is not always right.
  lines = letter.question.split("\n")
  assert lines[0] == "What is the color of the cup?" and lines[-1] == (
      "Answer with the option's letter from the given choices directly.")
  shown = [l[3:] for l in lines[1:-1]]
  assert sorted(shown) == sorted(scored.choices) and [l[:3] for l in lines[1:-1]] == ["A. ", "B. ", "C. ", "D. "]
  assert shown["ABCD".index(letter.answer)] == "white"
  assert {e.answer for e in examples if e.question_id.endswith("/letter")} != {"A"}
  image = tmp_path / "folder" / "vstar" / "direct_attributes" / "coffee.jpg"
  assert str(scored.image) == str(image) and scored.image.read() == image.read_bytes()


def test_vstar_lmms_lab_rows_keep_their_order_and_label():
  row = {"question_id": "7", "text": "What is the color of the bag? (A) red (B) blue (C) pink (D) black",
         "label": "C", "category": "direct_attributes", "image": {"bytes": b"x"}}
  scored, letter = vstar.examples(row, "t")
  assert scored.question == "What is the color of the bag?"
  assert scored.choices == ["red", "blue", "pink", "black"] and scored.answer == "pink"
  assert letter.answer == "C" and "\nC. pink\n" in letter.question
  with pytest.raises(ValueError, match="label 'E'"):
    vstar.examples({**row, "label": "E"}, "t")
  with pytest.raises(ValueError, match="repeats an option"):
    vstar.examples({**row, "text": "Q? (A) red (B) red", "label": "A"}, "t")


@pytest.mark.parametrize("reply,letter", [
    ("A", "A"), ("b.", "B"), ("The answer is C", "C"), ("(D) black", "D"), ("I pick c", "C"),
    ("It is the first, (B)", "B"), ("none", None), ("", None)])
def test_vstar_letter_extraction_as_lmms_eval(reply, letter):
  assert vstar.extract_letter(reply) == letter


def test_vstar_scores_overall_and_per_category_for_both_scorings():
  items = []
  for qid, cat, right in [("1", "direct_attributes", "x"), ("2", "direct_attributes", "y"),
                          ("3", "relative_position", "left")]:
    items.append(EvalExample(qid, None, "", right, {"category": cat}, choices=[right, "other"]))
    items.append(EvalExample(f"{qid}/letter", None, "", "B", {"category": cat, "letter": True}))
  preds = {"1": "x", "2": "other", "3": "left", "1/letter": "B", "2/letter": "B.", "3/letter": "A"}
  out = vstar.score(preds, items)
  assert out["accuracy"] == pytest.approx(200 / 3)          # over all questions, as the original
  assert out["direct_attributes/accuracy"] == 50.0 and out["relative_position/accuracy"] == 100.0
  assert out["letter/accuracy"] == pytest.approx(200 / 3)
  assert out["letter/relative_position/accuracy"] == 0.0


def test_vstar_options_scored_by_mean_log_probability_through_the_runner(mha_ckpt, tmp_path):
  """The runner's prediction is the option of highest mean per-token log-probability, each option
  scored as the assistant's reply after the question alone (V*'s vstar_bench_eval.py)."""
  pipe = Pipeline.from_hf(mha_ckpt)   # one device: any batch size
  source = sample_benchmarks.write_samples(tmp_path / "s")["vstar"]
  examples, _ = runner.collect_examples(benchmarks.get("vstar"), read_rows(source), "vstar")
  path = tmp_path / "vstar" / "vanilla.jsonl"
  skipped = runner.answer(pipe, examples, "vanilla", path, batch_size=3, max_new_tokens=4, desc="vstar")
  assert skipped == []
  rows = runner.load_predictions(path)
  assert len(rows) == 8
  for e in examples:
    if e.choices is None:
      continue
    row = rows[e.question_id]
    image = runner.decode_image(e, None)
    batch = pipe.prepare([image] * len(e.choices), [e.question] * len(e.choices))
    assert batch.texts[0] == vicuna_v1_prompt(e.question)
    scores = pipe.loglikelihood(batch, [vicuna_v1_answer(o) for o in e.choices])
    np.testing.assert_allclose(row["logprobs"], scores.logprob, atol=1e-3)
    assert row["tokens"] == scores.length.tolist()
    # The option of highest mean: on the runner's own (4-decimal) scores and on the rescoring (another
    # batch), up to their rounding, since a random model's options can tie (two here score alike).
    stored = np.asarray(row["logprobs"]) / np.asarray(row["tokens"])
    assert stored[row["choice"]] >= stored.max() - 1e-4
    assert row["text"] == e.choices[row["choice"]]
    mean = scores.logprob / scores.length
    assert mean[row["choice"]] >= mean.max() - 1e-3 / min(scores.length)
  result = runner.score_mode(benchmarks.get("vstar"), examples, rows, skipped)
  assert result["answered"] == 8 and "letter/accuracy" in result["scores"]


def test_hrbench_prompt_and_cycle_category_averages():
  row = {"index": 3, "question": " What is on the sign? ", "A": "stop", "B": "go", "C": "exit", "D": "",
         "answer": "B", "category": "single", "cycle_category": "q1", "image": "x" * 600}
  (e,) = hrbench.examples(row, "t")
  assert e.question == ("What is on the sign?\nA. stop\nB. go\nC. exit\n"
                        "Answer with the option's letter from the given choices directly.")
  assert e.meta["options"] == {"A": "stop", "B": "go", "C": "exit"}
  with pytest.raises(ValueError, match="answer 'D'"):
    hrbench.examples({**row, "answer": "D"}, "t")
  items = [EvalExample(str(i), None, "", "A", {"category": cat, "cycle": cyc, "options": {"A": "x", "B": "y"}})
           for i, (cat, cyc) in enumerate([("single", "s1"), ("single", "s1"), ("single", "s1"), ("single", "s2"),
                                           ("cross", "c1"), ("cross", "c1")])]
  preds = {"0": "A", "1": "B", "2": "A", "3": "A", "4": "(A)", "5": "B"}
  out = hrbench.score(preds, items)
  # single: s1 2/3, s2 1/1 -> mean 83.33 (not 3/4 over rows); cross: c1 1/2 -> 50
  assert out["single"] == pytest.approx(100 * (2 / 3 + 1) / 2)
  assert out["cross"] == pytest.approx(50.0)
  assert out["average"] == pytest.approx(100 * (2 / 3 + 1 + 0.5) / 3)


def _write_parquet(rows, path, row_group_size):
  import pyarrow as pa
  import pyarrow.parquet as pq
  path.parent.mkdir(parents=True, exist_ok=True)
  pq.write_table(pa.Table.from_pylist(rows), str(path), row_group_size=row_group_size)


def test_hrbench_images_stay_in_the_file_until_asked_and_a_corrupt_one_is_a_counted_skip(tmp_path):
  samples = sample_benchmarks.write_samples(tmp_path / "s")
  rows = list(read_rows(samples["hrbench_8k"]))
  rows = rows + [{**rows[0], "index": 9, "image": base64.b64encode(b"\xff\xd8 not a jpeg" * 100).decode()}]
  for r in rows:
    r["image"] = r["image"] if isinstance(r["image"], str) else base64.b64encode(r["image"].read()).decode()
    r.pop("_row")
  _write_parquet(rows, tmp_path / "hr" / "test.parquet", row_group_size=2)
  examples, _ = runner.collect_examples(benchmarks.get("hrbench_8k"), read_rows(
      {"format": "parquet", "path": str(tmp_path / "hr")}), "hr")
  assert len(examples) == 3 and all(isinstance(e.image, ParquetCell) for e in examples)
  assert [e.image.row_group for e in examples] == [0, 0, 1]
  image = runner.decode_image(examples[1], max_pixels=None)
  assert image.size == (7680, 4320)
  pixels = preprocess_image(image, 56)
  assert pixels.shape == (56, 56, 3) and pixels.dtype == np.float32
  with pytest.raises(ImageError, match="row group 1, row 0"):
    runner.decode_image(examples[2], max_pixels=None)
  # Over max_pixels, a JPEG is decoded at a reduced DCT scale instead (PIL's draft).
  assert runner.decode_image(examples[0], max_pixels=4_000_000).size[0] < 7680


def test_vstar_folder_layout_reads_the_same_from_gcs(tmp_path, gcs_emulator):
  import gcs_fixtures
  local = sample_benchmarks.write_samples(tmp_path)["vstar"]
  gcs_fixtures.upload(local["path"], f"{gcs_emulator}/vstar_bench")
  rows = {r["question_id"]: r for r in read_rows(local)}
  remote = {r["question_id"]: r for r in read_rows({"format": "folder", "path": f"{gcs_emulator}/vstar_bench"})}
  assert sorted(remote) == sorted(rows)
  for qid, r in remote.items():
    assert (r["question"], r["options"], r["category"]) == (rows[qid]["question"], rows[qid]["options"],
                                                            rows[qid]["category"])
    assert str(r["image"]).startswith(f"{gcs_emulator}/vstar_bench/") and r["image"].read() == rows[qid]["image"].read()
