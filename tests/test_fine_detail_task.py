"""The synthetic fine-detail task: generated deterministically with disjoint splits; each example's box
holds its detail, which is smaller than one visual token of LLaVA-1.5 (14 px at 336 px); eval.py reads
it as the `fine_detail` benchmark with the boxes, and scores it per sub-task."""

import json

import numpy as np
import pytest
from PIL import Image
from skimage import measure

from blink_jax.data import fine_detail
from blink_jax.eval import benchmarks, runner
from blink_jax.eval.readers import read_rows


def _rows(folder, split):
  return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]


def test_generation_is_deterministic_with_disjoint_splits(tmp_path):
  for name in ("a", "b"):
    fine_detail.write(tmp_path / name, per_split=(8, 4, 8))
  assert (tmp_path / "a" / "test.jsonl").read_text() == (tmp_path / "b" / "test.jsonl").read_text()
  for row in _rows(tmp_path / "a", "test"):
    a, b = (tmp_path / name / "images" / row["image"] for name in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()
  pixels = {split: {np.asarray(Image.open(tmp_path / "a" / "images" / r["image"])).tobytes()
                    for r in _rows(tmp_path / "a", split)} for split in fine_detail.SPLITS}
  assert not (pixels["train"] & pixels["test"]) and not (pixels["validation"] & pixels["test"])


def test_each_box_holds_its_detail_below_one_visual_token(tmp_path):
  fine_detail.write(tmp_path, per_split=(0, 0, 40))
  seen = set()
  for row in _rows(tmp_path, "test"):
    img = np.asarray(Image.open(tmp_path / "images" / row["image"]).convert("RGB")).astype(int)
    x0, y0, x1, y1 = row["box"]
    inside = img[y0:y1, x0:x1]
    category, answer = row["category"], row["answer"]
    seen.add(category)
    if category == "control":
      assert (x1 - x0) * (y1 - y0) > (336 * 0.4) ** 2      # the largest shape
      continue
    assert max(x1 - x0, y1 - y0) <= 14, row               # under one 14-px token at 336 px
    if category == "dot_colour":
      assert (np.abs(inside - np.array(fine_detail.COLOURS[answer])).sum(-1) == 0).any(), row
    elif category == "count":
      black = (np.abs(inside - np.array(fine_detail.COLOURS["black"])).sum(-1) == 0)
      assert measure.label(black, connectivity=1).max() == int(answer), row
    else:
      assert (inside.sum(-1) < 100).any() and (inside.sum(-1) > 700).any(), row   # a dark glyph on white
  assert seen == set(fine_detail.CATEGORIES)


def test_eval_reads_and_scores_it_per_sub_task(tmp_path):
  fine_detail.write(tmp_path, per_split=(0, 0, 8))
  source = {"format": "llava", "questions": str(tmp_path / "test.jsonl"), "image_folder": str(tmp_path / "images")}
  bench = benchmarks.get("fine_detail")
  examples, malformed = runner.collect_examples(bench, read_rows(source), "fine_detail")
  assert len(examples) == 8 and malformed == 0 and all(len(e.meta["box"]) == 4 for e in examples)
  truth = {e.question_id: e.answer for e in examples}
  assert bench.score(truth, examples)["accuracy"] == 100
  worded = {q: {"1": "One.", "2": "two", "3": "Three", "4": "FOUR"}.get(a, a.title()) for q, a in truth.items()}
  assert bench.score(worded, examples)["count/accuracy"] == 100
  wrong = dict(truth, **{examples[0].question_id: "purple"})
  scores = bench.score(wrong, examples)
  assert scores[f"{examples[0].meta['category']}/accuracy"] == 50 and scores["accuracy"] == 87.5


def test_a_split_can_mix_detail_sizes_and_empty_splits_are_not_written(tmp_path):
  fine_detail.write(tmp_path, image_size=112, detail_px=[4, 12], per_split=(24, 0, 0))
  rows = _rows(tmp_path, "train")
  assert {r["detail_px"] for r in rows} == {4, 12} and not (tmp_path / "test.jsonl").exists()
  for r in rows:
    if r["category"] == "dot_colour":
      x0, y0, x1, y1 = r["box"]
      assert x1 - x0 == r["detail_px"] == y1 - y0


def test_one_large_shape_per_detail_image_and_the_same_questions(tmp_path):
  """shapes=1: the detail sub-tasks draw one large shape (the question still names it); the default
  (3) is unchanged by the option."""
  fine_detail.write(tmp_path / "one", image_size=112, per_split=(0, 0, 8), shapes=1)
  fine_detail.write(tmp_path / "three", image_size=112, per_split=(0, 0, 8))
  fine_detail.write(tmp_path / "default", image_size=112, per_split=(0, 0, 8), shapes=3)
  assert (tmp_path / "three" / "test.jsonl").read_text() == (tmp_path / "default" / "test.jsonl").read_text()
  for row in _rows(tmp_path / "one", "test"):
    if row["category"] == "control":
      continue
    img = np.asarray(Image.open(tmp_path / "one" / "images" / row["image"]).convert("RGB")).astype(int)
    shape_colours = [c for c in fine_detail.SHAPE_COLOURS
                     if (np.abs(img - np.array(fine_detail.COLOURS[c])).sum(-1) == 0).sum() > 50]
    assert len(shape_colours) == 1 and shape_colours[0] in row["text"], row
  with pytest.raises(ValueError, match="shapes=4; expected 1, 2 or 3"):
    fine_detail.write(tmp_path / "bad", per_split=(0, 0, 4), shapes=4)
