"""Small training configs and data for the training tests."""

from __future__ import annotations

import functools
import pathlib

from blink_jax.data.image_folder_builder import build_image_folder_dataset
from blink_jax.data.image_preprocessing import preprocess_image
from blink_jax.data.sample_images import write_sample_images
from configs import tokensr


def tiny_config(workdir: pathlib.Path, **overrides):
  """The default job, shortened: 8 sample images, batch 8 (one example per fake device)."""
  c = tokensr.get_config()
  c.workdir = str(workdir)
  c.data.sample_images = 8
  c.train.batch_size = 8
  c.train.steps = 6
  c.train.log_every = 2
  c.checkpoint.every = 3
  c.checkpoint.async_save = False
  return set_fields(c, overrides)


def set_fields(config, overrides: dict):
  """Sets dotted fields ("train.steps") of an ml_collections config, as --config.train.steps would."""
  for key, value in overrides.items():
    node = config
    *path, leaf = key.split(".")
    for part in path:
      node = node[part]
    node[leaf] = value
  return config


def tiny_tfds(root: pathlib.Path, count: int = 8, corrupt: int = 0) -> tuple[str, str]:
  """(name, data_dir) of a TFDS dataset of `count` sample images plus `corrupt` broken files."""
  folder = root / "images"
  write_sample_images(folder, count)
  for i in range(corrupt):
    (folder / f"broken_{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
  data_dir = str(root / "tfds")
  return build_image_folder_dataset(str(folder), data_dir, "tiny"), data_dir


def data_config(**overrides):
  """The default job's `config.data` (what train_dataset reads) with `overrides`."""
  return set_fields(tokensr.get_config().data, overrides)


def pad_to(size: int):
  """The training pipeline's `preprocess` for LLaVA's pad-to-square at `size` px."""
  return functools.partial(preprocess_image, size=size, mode="pad")
