"""A TFDS builder that turns a folder of images into an array_record dataset (`tfds.data_source`).

Each example: `image` (the file's encoded bytes, decoded later so a corrupt file is skipped at load
time instead of failing the build), `id` (the file name) and `question` (from an optional
`questions.jsonl` in the folder: {"image": "x.jpg", "question": "..."}; empty when absent).

A built dataset is named after the folder's base name plus a digest of its full path and of a
manifest of its contents (file names, sizes, modification times), so two folders with one base name
never share a dataset, and a folder whose contents changed is built anew:

    name = build_image_folder_dataset("/data/my_images", data_dir="gs://bucket/tfds")
    tfds.data_source(name, data_dir="gs://bucket/tfds", split="train")
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclasses.dataclass
class ImageFolderConfig(tfds.core.BuilderConfig):
  folder: str = ""


class BlinkImageFolder(tfds.core.GeneratorBasedBuilder):
  """Images (+ optional questions) from a local or gs:// folder."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(), dtype=np.object_),
            "id": tfds.features.Text(),
            "question": tfds.features.Text(),
        }),
        description="Images from a folder, stored encoded; built by blink_jax.",
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(epath.Path(self.builder_config.folder))}

  def _generate_examples(self, folder: epath.Path):
    questions = {}
    qfile = folder / "questions.jsonl"
    if qfile.exists():
      for n, line in enumerate(qfile.read_text().splitlines()):
        if line.strip():
          try:
            row = json.loads(line)
            questions[row["image"]] = row["question"]
          except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{qfile}:{n + 1}: expected {{'image': ..., 'question': ...}} ({e})") from e
    for p in image_files(folder):
      yield p.name, {"image": p.read_bytes(), "id": p.name, "question": questions.get(p.name, "")}


def image_files(folder: epath.Path) -> list[epath.Path]:
  files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
  if not files:
    raise ValueError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
  return files


def dataset_name(folder: str) -> str:
  """The folder's dataset name: base name + digest of (full path, names, sizes, mtimes)."""
  path = epath.Path(folder)
  full = folder if "://" in folder else os.path.abspath(folder)
  digest = hashlib.sha256(full.encode())
  extra = [path / "questions.jsonl"] if (path / "questions.jsonl").exists() else []
  for p in image_files(path) + extra:
    st = p.stat()
    digest.update(f"\n{p.name}\t{st.length}\t{st.mtime}".encode())
  base = re.sub(r"[^a-z0-9_]", "_", path.name.lower()) or "images"
  return f"{base}_{digest.hexdigest()[:12]}"


def build_image_folder_dataset(folder: str, data_dir: str, name: str | None = None) -> str:
  """Builds (once per folder content) the array_record dataset of `folder` in data_dir; returns its
  TFDS name. `name` (default: dataset_name(folder)) is the builder config's name."""
  if not epath.Path(folder).is_dir():
    raise FileNotFoundError(f"{folder}: image folder not found")
  name = name or dataset_name(folder)
  builder = BlinkImageFolder(data_dir=data_dir, config=ImageFolderConfig(name=name, folder=str(folder)),
                             file_format="array_record")
  builder.download_and_prepare()
  return f"{BlinkImageFolder.name}/{name}"
