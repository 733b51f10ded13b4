"""Reads a (sharded) safetensors checkpoint lazily, from a local directory or any fsspec URL (gs://).

Locally each tensor is a read-only memory-mapped numpy view, so a loader copies only the slices it
places on devices. Remotely (`memory_mapped` False) each `get` fetches the tensor with one ranged
read; a loader should ask once per tensor. bf16 is read through ml_dtypes.

Corrupt files (bad header, offsets past the end, unknown dtypes) raise ValueError naming the file.
"""

from __future__ import annotations

import json
import os
import posixpath
import struct
from typing import Iterator

import fsspec
import ml_dtypes
import numpy as np
from fsspec.implementations.local import LocalFileSystem

DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_, "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
}


class SafetensorsCheckpoint:
  """All tensors of a checkpoint directory: `model.safetensors.index.json` + shards, or `*.safetensors`."""

  def __init__(self, ckpt_dir: str | os.PathLike):
    self.dir = str(ckpt_dir).rstrip("/")
    self._fs, self._root = fsspec.core.url_to_fs(self.dir)
    self.memory_mapped = isinstance(self._fs, LocalFileSystem)
    if not self._fs.isdir(self._root):
      raise FileNotFoundError(f"{self.dir}: checkpoint directory not found")
    index = f"{self.dir}/model.safetensors.index.json"
    if self._fs.exists(index):
      try:
        weight_map = json.loads(self._fs.cat_file(index))["weight_map"]
      except (json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"{index}: not a safetensors index (needs a 'weight_map'): {e}") from e
      files = sorted(set(weight_map.values()))
    else:
      files = sorted(posixpath.basename(p) for p in self._fs.glob(f"{self._root}/*.safetensors"))
      weight_map = None
    if not files:
      raise FileNotFoundError(f"{self.dir}: no *.safetensors files and no model.safetensors.index.json")
    self._entries: dict[str, tuple[str, dict]] = {}
    self._maps: dict[str, np.memmap] = {}
    for name in files:
      path = f"{self.dir}/{name}"
      if not self._fs.exists(path):
        raise FileNotFoundError(f"{path}: listed in the safetensors index but missing")
      for key, meta in self._read_header(path).items():
        if weight_map is not None and weight_map.get(key) not in (None, name):
          raise ValueError(f"{path}: tensor {key!r} is mapped to {weight_map[key]} by the index")
        self._entries[key] = (path, meta)
    if weight_map is not None:
      absent = sorted(set(weight_map) - set(self._entries))
      if absent:
        raise ValueError(f"{index}: lists tensors absent from their files: {absent[:10]}")

  def _read_header(self, path: str) -> dict:
    size = self._fs.size(path)
    with self._fs.open(path, "rb") as f:
      raw = f.read(8)
      if len(raw) != 8:
        raise ValueError(f"{path}: corrupt safetensors file (shorter than its 8-byte header length)")
      (n,) = struct.unpack("<Q", raw)
      if n > size - 8:
        raise ValueError(f"{path}: corrupt safetensors file (header length {n} exceeds file size {size})")
      try:
        header = json.loads(f.read(n))
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: corrupt safetensors file (header is not JSON: {e})") from e
    header.pop("__metadata__", None)
    data_size = size - 8 - n
    for key, meta in header.items():
      try:
        dtype = np.dtype(DTYPES[meta["dtype"]])
        start, end = meta["data_offsets"]
        shape = tuple(meta["shape"])
      except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: corrupt safetensors entry {key!r}: {meta} ({e})") from e
      if end > data_size or end - start != dtype.itemsize * int(np.prod(shape)):
        raise ValueError(f"{path}: corrupt safetensors entry {key!r}: offsets {start}..{end} do not fit "
                         f"shape {shape} {meta['dtype']} in {data_size} data bytes (truncated file?)")
      meta["_dtype"], meta["_offset"] = dtype, 8 + n + start
    return header

  def keys(self) -> list[str]:
    return sorted(self._entries)

  def __contains__(self, key: str) -> bool:
    return key in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self.keys())

  def shape(self, key: str) -> tuple[int, ...]:
    return tuple(self._entries[key][1]["shape"])

  def get(self, key: str) -> np.ndarray:
    """One tensor: a read-only memory-mapped view locally (no copy until sliced and converted), one
    ranged read remotely."""
    path, meta = self._entries[key]
    dtype, off, shape = meta["_dtype"], meta["_offset"], tuple(meta["shape"])
    count = int(np.prod(shape))
    if not self.memory_mapped:
      data = self._fs.cat_file(path, start=off, end=off + count * dtype.itemsize)
      return np.frombuffer(data, dtype=dtype, count=count).reshape(shape)
    if path not in self._maps:
      self._maps[path] = np.memmap(f"{self._root}/{posixpath.basename(path)}", dtype=np.uint8, mode="r")
    return np.frombuffer(self._maps[path], dtype=dtype, count=count, offset=off).reshape(shape)
