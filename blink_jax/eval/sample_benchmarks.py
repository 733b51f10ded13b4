"""The embedded eval default's data: a few questions per benchmark about the photographs scikit-image
ships (HR-Bench's at 4K / 8K), written in each benchmark's lmms-lab parquet layout (V* Bench in its own
folder layout, the fine-detail task's 8 generated test questions in LLaVA's), and POPE also in
LLaVA's jsonl layout and as a TFDS dataset, so every reader runs without a download."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from blink_jax.data import fine_detail

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def _jpeg(name: str, size: tuple[int, int] | None = None) -> bytes:
  """A scikit-image photograph as JPEG, resized to `size` (w, h) if given."""
  from skimage import data
  image = Image.fromarray(getattr(data, name)())
  if size:
    image = image.resize(size, Image.Resampling.BILINEAR)
  buf = io.BytesIO()
  image.save(buf, format="JPEG", quality=85)
  return buf.getvalue()


def _rows() -> dict[str, list[dict]]:
  img = {n: {"bytes": _jpeg(n), "path": f"{n}.jpg"} for n in PHOTOS}
  yes_no = ["Yes", "No"]
  rows: dict[str, list[dict]] = {}
  rows["mme"] = [
      {"question_id": f"{cat}/{n}.jpg", "image": img[n], "category": cat,
       "question": f"Is there a {obj} in this image? Please answer yes or no.", "answer": yes_no[k]}
      for cat, obj in (("existence", "person"), ("count", "cat"), ("code_reasoning", "program"))
      for n in PHOTOS[:2] for k in range(2)]
  rows["pope"] = [
      {"question_id": f"{split}-{n}-{k}", "image": img[n], "category": split,
       "question": f"Is there a {obj} in the image?", "answer": ["yes", "no"][k]}
      for split in ("adversarial", "popular", "random") for n in PHOTOS[:2]
      for k, obj in enumerate(("person", "giraffe"))]
  rows["gqa"] = [
      {"question_id": f"g{i}", "imageId": n, "question": q, "answer": a,
       "types": {"structural": s, "semantic": "obj", "detailed": "exist"}}
      for i, (n, q, a, s) in enumerate([("astronaut", "Is the person smiling?", "yes", "verify"),
                                        ("chelsea", "What animal is this?", "cat", "query"),
                                        ("coffee", "What is in the cup?", "coffee", "query"),
                                        ("rocket", "Is it daytime?", "yes", "verify")])]
  gqa_images = [{"id": n, "image": img[n]} for n in PHOTOS]
  rows["mmbench"] = [
      {"index": i, "question": q, "hint": h, "A": o[0], "B": o[1], "C": o[2], "D": o[3], "answer": a,
       "category": c, "l2-category": "perception", "image": img[n]}
      for i, (n, q, h, o, a, c) in enumerate([
          ("chelsea", "What animal is shown?", None, ("dog", "cat", "horse", "bird"), "B", "object"),
          ("coffee", "What drink is shown?", "A breakfast table.", ("tea", "juice", "coffee", "milk"), "C",
           "object"),
          ("rocket", "What is launching?", None, ("plane", "rocket", None, None), "B", "scene")])]
  rows["mmbench_cn"] = [{**r, "question": "图中是什么？"} for r in rows["mmbench"]]
  rows["scienceqa_img"] = [
      {"question": "Which animal is shown?", "choices": ["dog", "cat"], "answer": 1, "hint": "",
       "image": img["chelsea"], "subject": "natural science"},
      {"question": "Which object is hot?", "choices": ["ice", "coffee", "snow"], "answer": 1,
       "hint": "A drink on a table.", "image": img["coffee"], "subject": "natural science"},
      {"question": "What is 1 + 1?", "choices": ["2", "3"], "answer": 0, "hint": "", "image": None,
       "subject": "language science"}]
  rows["seed"] = [
      {"question_id": str(i), "question": q, "choice_a": a, "choice_b": b, "choice_c": c, "choice_d": d,
       "answer": ans, "data_type": "image", "question_type_id": t, "image": [img[n]]}
      for i, (n, q, a, b, c, d, ans, t) in enumerate([
          ("chelsea", "What animal is it?", "cat", "dog", "cow", "fox", "A", 1),
          ("rocket", "What is in the sky?", "bird", "plane", "smoke", "moon", "C", 2)])]
  rows["textvqa"] = [
      {"question_id": f"t{i}", "image_id": n, "question": q, "answers": ans, "ocr_tokens": ocr, "image": img[n]}
      for i, (n, q, ans, ocr) in enumerate([
          ("rocket", "What is written on the rocket?", ["nasa"] * 7 + ["usa"] * 3, ["NASA", "USA"]),
          ("coffee", "What is the brand?", ["unanswerable"] * 10, [])])]
  rows["vqav2"] = [
      {"question_id": i, "question": q, "answers": [{"answer": a} for a in ans], "image": img[n]}
      for i, (n, q, ans) in enumerate([("chelsea", "How many cats?", ["1"] * 8 + ["one", "2"]),
                                       ("astronaut", "Is this a man?", ["no"] * 6 + ["yes"] * 4)])]
  rows["mmvet"] = [{"question_id": f"v1_{i}", "image": img[n], "question": q, "answer": a,
                    "capability": "rec"}
                   for i, (n, q, a) in enumerate([("chelsea", "What is this animal doing?", "resting"),
                                                  ("rocket", "Describe the scene.", "a rocket launch")])]
  # V* Bench's folder layout: <category>/<name>.jpg beside <name>.json; options[0] is the right one.
  rows["vstar"] = [
      {"category": cat, "image": img[n], "question": q, "options": o}
      for cat, n, q, o in [
          ("direct_attributes", "chelsea", "What is the color of the cat?",
           ["The color of the cat is brown.", "The color of the cat is blue.", "The color of the cat is green.",
            "The color of the cat is white."]),
          ("direct_attributes", "coffee", "What is the color of the cup?", ["white", "red", "black", "green"]),
          ("relative_position", "astronaut", "Is the flag on the left or right side of the person?",
           ["left", "right"]),
          ("relative_position", "rocket", "Is the tower on the left or right side of the rocket?",
           ["left", "right"])]]
  # HR-Bench: base64 JPEGs at 4K / 8K; a single- and a cross-region question, each with its options
  # rotated (its cycle) at 4K, once at 8K.
  for name, size, rotations in (("hrbench_4k", (3840, 2160), 2), ("hrbench_8k", (7680, 4320), 1)):
    photo = base64.b64encode(_jpeg("rocket", size)).decode()
    table = []
    for i, (cat, q, opts, a) in enumerate([
        ("single", "What is launching?", ["a rocket", "a plane", "a bird", "a kite"], 0),
        ("cross", "Is the rocket left or right of the tower?", ["left", "right", "above", "below"], 1)]):
      for k in range(rotations):
        rotated = opts[k:] + opts[:k]
        table.append({"index": rotations * i + k, "question": q, **dict(zip("ABCD", rotated)),
                      "answer": "ABCD"[rotated.index(opts[a])], "category": cat, "cycle_category": f"c{i}",
                      "image": photo})
    rows[name] = table
  rows["_gqa_images"] = gqa_images
  return rows


def _write_parquet(rows: list[dict], path: epath.Path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  path.parent.mkdir(parents=True, exist_ok=True)
  pq.write_table(pa.Table.from_pylist(rows), str(path))


def write_samples(root: str | epath.PathLike) -> dict[str, dict]:
  """Writes every sample under root; returns {benchmark: source} for the readers."""
  root = epath.Path(root)
  rows = _rows()
  sources = {}
  for name, table in rows.items():
    if name.startswith("_") or name == "vstar":
      continue
    _write_parquet(table, root / "parquet" / name / "test.parquet")
    sources[name] = {"format": "parquet", "path": str(root / "parquet" / name)}
  _write_parquet(rows["_gqa_images"], root / "parquet" / "gqa_images" / "images.parquet")
  sources["gqa"]["images"] = str(root / "parquet" / "gqa_images")
  write_llava_layout(rows["pope"], root / "llava" / "pope")
  sources["vstar"] = write_folder_layout(rows["vstar"], root / "folder" / "vstar")
  fine_detail.write(root / "fine_detail", per_split=(0, 0, 8))
  sources["fine_detail"] = {"format": "llava", "questions": str(root / "fine_detail" / "test.jsonl"),
                            "image_folder": str(root / "fine_detail" / "images")}
  return sources


def write_folder_layout(rows: list[dict], folder: epath.Path) -> dict:
  """V* Bench's layout: <category>/<image> beside a same-name .json of the row's other fields."""
  for r in rows:
    image = r["image"]
    stem = folder / r["category"] / image["path"].rsplit(".", 1)[0]
    stem.parent.mkdir(parents=True, exist_ok=True)
    (stem.parent / image["path"]).write_bytes(image["bytes"])
    fields = {k: v for k, v in r.items() if k not in ("image", "category")}
    stem.with_suffix(".json").write_text(json.dumps(fields, ensure_ascii=False))
  return {"format": "folder", "path": str(folder)}


def write_llava_layout(rows: list[dict], folder: epath.Path) -> dict:
  """LLaVA's eval layout for yes/no rows: questions.jsonl (+ images/) and annotations.jsonl."""
  (folder / "images").mkdir(parents=True, exist_ok=True)
  questions, labels = [], []
  for r in rows:
    image = r["image"]   # a sample row's {'bytes', 'path'}, or a ParquetCell when read back from parquet
    fname, data = (image.name, image.read()) if hasattr(image, "read") else (image["path"], image["bytes"])
    (folder / "images" / fname).write_bytes(data)
    questions.append({"question_id": r["question_id"], "image": fname, "category": r["category"],
                      "text": f"{r['question']}\nAnswer the question using a single word or phrase."})
    labels.append({"question_id": r["question_id"], "answer": r["answer"]})
  (folder / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
  (folder / "annotations.jsonl").write_text("".join(json.dumps(a) + "\n" for a in labels))
  return {"format": "llava", "questions": str(folder / "questions.jsonl"),
          "image_folder": str(folder / "images"), "annotations": str(folder / "annotations.jsonl")}


class SamplePope(tfds.core.GeneratorBasedBuilder):
  """The sample POPE rows as a TFDS dataset (the TFDS reader's sample)."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "question_id": tfds.features.Text(), "question": tfds.features.Text(),
        "answer": tfds.features.Text(), "category": tfds.features.Text(),
        "image": tfds.features.Tensor(shape=(), dtype=np.object_)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"test": self._generate_examples()}

  def _generate_examples(self):
    for r in _rows()["pope"]:
      yield r["question_id"], {"question_id": r["question_id"], "question": r["question"],
                               "answer": r["answer"], "category": r["category"],
                               "image": r["image"]["bytes"]}


def write_pope_tfds(data_dir: str) -> dict:
  SamplePope(data_dir=data_dir, file_format="array_record").download_and_prepare()
  return {"format": "tfds", "name": SamplePope.name, "data_dir": data_dir, "split": "test"}
