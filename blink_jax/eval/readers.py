"""Reads benchmark rows from the formats users have, local or gs:// (through fsspec/gcsfs):

- "parquet": the lmms-lab Hugging Face layouts (a file, a directory or a glob of *.parquet); images
  in the rows, or (GQA) in a separate `images` parquet joined on `imageId`.
- "llava": LLaVA's eval layout, a question .jsonl (question_id, image, text, ...) plus an image
  folder; ground truth from the same rows or an `annotations` .jsonl joined on question_id.
- "tfds": a TFDS dataset (array_record) by name in a data_dir.
- "folder": a folder of images, each beside a same-name .json of its fields (V* Bench's layout, HF
  `craigwu/vstar_bench`); a row's `category` is the sub-folder it is in, its `question_id`
  `<category>/<image name>`.

Every row comes out as a dict; `_row` is its position in the source. An image given by path (LLaVA
layout, or a path-only cell of a parquet table) becomes a `LazyFile` resolved inside the source's
`image_folder`; a path that leads outside it (`../../x.png`, `/etc/hostname`) is refused, so the
question is skipped with that reason. `image_folder="/"` admits any absolute local path.
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Any, Iterator

import fsspec
import numpy as np

from blink_jax.data.image_preprocessing import ImageError, load_image
from blink_jax.eval.example import BASE64_MIN_CHARS, SHORT_ANSWER, LETTER_ANSWER, image_bytes

FORMATS = ("parquet", "llava", "tfds", "folder")
# The fields a source sets (config.sources.<benchmark> in eval.py, config.data.sft in train.py).
SOURCE_FIELDS = ("format", "path", "images", "questions", "image_folder", "annotations", "name", "data_dir", "split")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _url(fs, path: str) -> str:
  """A path fsspec listed, as a URL that reopens it (gs://bucket/x for GCS's bare bucket/x)."""
  protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
  return path if "://" in path or protocol in ("file", "local") else f"{protocol}://{path}"


def _files(pattern: str) -> list[str]:
  fs, _, paths = fsspec.get_fs_token_paths(pattern)
  if len(paths) == 1 and fs.isdir(paths[0]):
    paths = sorted(fs.glob(paths[0].rstrip("/") + "/*.parquet"))
  if not paths:
    raise FileNotFoundError(f"{pattern}: no parquet files")
  return [_url(fs, p) for p in paths]


class ParquetCell:
  """A parquet table's image cell, read again when the image is needed: a benchmark's rows can then
  be held whole (HR-Bench 8K: ~800 images of ~10 MB) with at most one row group's images in memory."""

  _cached: tuple = (None, None)   # ((path, row group), that row group's image column)

  def __init__(self, path: str, row_group: int, index: int, name: str | None = None):
    self.path, self.row_group, self.index = path, row_group, index
    self.name = name   # the HF-datasets cell's own file name, where it has one

  def __str__(self):
    return f"{self.name + ' in ' if self.name else ''}{self.path} (row group {self.row_group}, row {self.index})"

  def read(self) -> bytes:
    import pyarrow.parquet as pq
    key = (self.path, self.row_group)
    if ParquetCell._cached[0] != key:
      ParquetCell._cached = (None, None)   # drop the old row group before reading the next
      try:
        with fsspec.open(self.path, "rb") as f:
          column = pq.ParquetFile(f).read_row_group(self.row_group, columns=[IMAGE_COLUMN]).column(0)
      except OSError as e:
        raise ImageError(f"image {self}: cannot be read ({e})") from e
      ParquetCell._cached = (key, column)
    return image_bytes(ParquetCell._cached[1][self.index].as_py())


IMAGE_COLUMN = "image"


def _holds_image(value: Any) -> bool:
  return isinstance(value, bytes) or (isinstance(value, dict) and bool(value.get("bytes"))) or (
      type(value) is str and len(value) >= BASE64_MIN_CHARS)


def _parquet_rows(pattern: str) -> Iterator[dict]:
  """Rows, row group by row group; an `image` cell holding the image itself becomes a ParquetCell."""
  import pyarrow.parquet as pq
  for path in _files(pattern):
    with fsspec.open(path, "rb") as f:
      table = pq.ParquetFile(f)
      for group in range(table.num_row_groups):
        for i, row in enumerate(table.read_row_group(group).to_pylist()):
          cell = row.get(IMAGE_COLUMN)
          if _holds_image(cell):
            row[IMAGE_COLUMN] = ParquetCell(path, group, i, cell.get("path") if isinstance(cell, dict) else None)
          yield row


def _read_text(path: str) -> str:
  with fsspec.open(path, "r", encoding="utf-8") as f:
    return f.read()


def _read_bytes(path: str) -> bytes:
  with fsspec.open(path, "rb") as f:
    return f.read()


def _jsonl(path: str) -> list[dict]:
  rows = []
  for n, line in enumerate(_read_text(path).splitlines()):
    if line.strip():
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{n + 1}: not JSON ({e})") from e
  return rows


def _llava_rows(questions: str, annotations: str | None) -> Iterator[dict]:
  labels = {str(r["question_id"]): r for r in _jsonl(annotations)} if annotations else {}
  for row in _jsonl(questions):
    row = {**labels.get(str(row.get("question_id")), {}), **row}
    text = row.pop("text", None)
    if text is not None and "question" not in row:
      # LLaVA's question files carry the answer instruction; ours adds it per benchmark.
      for suffix in (f"\n{SHORT_ANSWER}", f"\n{LETTER_ANSWER}"):
        text = text[:-len(suffix)] if text.endswith(suffix) else text
      row["question"] = text
    yield row


def _folder_rows(folder: str) -> Iterator[dict]:
  fs, _, (root,) = fsspec.get_fs_token_paths(folder.rstrip("/"))
  files = sorted(fs.find(root))
  if not files:
    raise FileNotFoundError(f"{folder}: no files (a folder of images, each with a same-name .json)")
  images = {posixpath.splitext(p)[0]: p for p in files if p.lower().endswith(IMAGE_SUFFIXES)}
  for path in files:
    if not path.endswith(".json"):
      continue
    stem = posixpath.splitext(path)[0]
    try:
      row = json.loads(fs.cat_file(path).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(f"{_url(fs, path)}: not JSON ({e})") from e
    relative = posixpath.relpath(stem, root)
    category = posixpath.dirname(relative)
    row.setdefault("category", category)
    row.setdefault("question_id", relative)
    # No image beside the .json: the path that was looked for, which is then a counted skip.
    row["image"] = posixpath.relpath(images.get(stem, stem + ".jpg"), root)
    yield row


class LazyFile(str):
  """An image path, read when the image is needed (a missing file surfaces per question); `refused`
  says why the path may not be read at all."""

  refused: str = ""

  def read(self) -> bytes:
    if self.refused:
      raise ImageError(f"image {str(self)!r}: {self.refused}")
    try:
      return _read_bytes(str(self))
    except FileNotFoundError as e:
      raise ImageError(f"image {self}: file not found") from e
    except OSError as e:
      raise ImageError(f"image {self}: cannot be read ({e})") from e


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)?(.*)$", re.S)


def resolve_inside(folder: str, name: str) -> LazyFile:
  """`name` (relative to `folder`, or absolute) as a LazyFile, refused unless it lies inside folder."""
  if not folder:
    out = LazyFile(name)
    out.refused = "an image given as a path needs the source's image_folder (the folder it is inside)"
    return out
  f_scheme, f_path = _SCHEME.match(folder).groups()
  n_scheme, n_path = _SCHEME.match(name).groups()
  if n_scheme is None and not n_path.startswith("/"):
    n_scheme, n_path = f_scheme, f"{f_path.rstrip('/')}/{n_path}"
  root, path = posixpath.normpath(f_path), posixpath.normpath(n_path)
  out = LazyFile(f"{n_scheme or ''}{path}")
  if n_scheme != f_scheme or not (path == root or path.startswith(root.rstrip("/") + "/")):
    out.refused = f"the path leads outside the image folder {folder!r}; refused"
  return out


def _resolve_images(value: Any, folder: str) -> Any:
  """Path-like image cells -> LazyFile inside `folder`; encoded bytes (and base64 text) unchanged."""
  if isinstance(value, list):
    return [_resolve_images(v, folder) for v in value]
  if isinstance(value, dict) and not value.get("bytes") and value.get("path"):
    return resolve_inside(folder, str(value["path"]))
  if isinstance(value, str) and not isinstance(value, LazyFile) and len(value) < BASE64_MIN_CHARS:
    return resolve_inside(folder, value)   # longer strings are base64 images (MMBench TSV)
  return value


def _tfds_rows(name: str, data_dir: str, split: str) -> Iterator[dict]:
  import tensorflow_datasets as tfds
  source = tfds.data_source(name, data_dir=data_dir, split=split)
  for i in range(len(source)):
    row = dict(source[i])
    for k, v in row.items():
      if isinstance(v, bytes) and k != "image":
        row[k] = v.decode("utf-8")
      elif isinstance(v, np.ndarray) and v.dtype == object:
        row[k] = [x.decode("utf-8") if isinstance(x, bytes) else x for x in v.tolist()]
      elif isinstance(v, np.generic):
        row[k] = v.item()
    yield row


def load_row_image(value: Any, name: str, max_pixels: int | None):
  """A row's image cell (a LazyFile path, a ParquetCell, bytes, an array) as RGB, or ImageError
  naming the file (or `name`) and why."""
  if isinstance(value, (LazyFile, ParquetCell)):
    return load_image(value.read(), name=str(value), max_pixels=max_pixels)
  if isinstance(value, str):   # readers turn every path into a LazyFile; a bare str is not read
    raise ImageError(f"image {value[:80]!r}: a bare path, not read")
  return load_image(value, name=name, max_pixels=max_pixels)


def read_rows(source: dict) -> Iterator[dict]:
  """source: {'format': ..., and 'path' (+ 'images') | 'questions' + 'image_folder' (+ 'annotations')
  | 'name' + 'data_dir' + 'split' | 'path' (folder)}; any format may set 'image_folder' for images
  given by path (a folder source's images are read inside its own path)."""
  fmt = source.get("format")
  if fmt == "parquet":
    rows = _parquet_rows(source["path"])
    if source.get("images"):
      images = {r["id"]: r["image"] for r in _parquet_rows(source["images"])}
      rows = ({**r, "image": images.get(r.get("imageId"), r.get("image"))} for r in rows)
  elif fmt == "llava":
    rows = _llava_rows(source["questions"], source.get("annotations"))
  elif fmt == "tfds":
    rows = _tfds_rows(source["name"], source.get("data_dir", ""), source.get("split", "test"))
  elif fmt == "folder":
    rows = _folder_rows(source["path"])
    source = {"image_folder": source["path"], **source}
  else:
    raise ValueError(f"benchmark source format {fmt!r}; expected one of {FORMATS}")
  folder = source.get("image_folder", "")
  for i, row in enumerate(rows):
    row.setdefault("_row", i)
    if row.get("image") is not None:
      row["image"] = _resolve_images(row["image"], folder)
    yield row
