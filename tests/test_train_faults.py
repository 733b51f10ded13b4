"""Training under faults and bad input: no hang, no crash, no silent wrong data. Settings are checked
before data flows; unusable images are named and bounded; image-folder datasets are keyed on the
folder's path and contents; a corrupt checkpoint falls back (or is named); a resumed run refuses a
changed config and logs exactly what an uninterrupted run logs."""

import json
import logging
import os
import shutil
import signal

import numpy as np
import pytest
from PIL import Image

import train_fixtures
from blink_jax.data.image_folder_builder import build_image_folder_dataset, dataset_name
from blink_jax.data.sample_images import write_sample_images
from blink_jax.data.train_pipeline import DecodeAndPreprocess, data_source, skipped_count, train_dataset
from blink_jax.train import loop
from blink_jax.train.loop import Preempted, train
from test_image_decoding import _png_claiming


def _broken_folder(path, n=5):
  path.mkdir(parents=True)
  for i in range(n):
    (path / f"bad_{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
  return path


def test_a_folder_of_unreadable_images_stops_with_an_error_naming_it(tmp_path):
  folder = _broken_folder(tmp_path / "unreadable")
  config = train_fixtures.tiny_config(tmp_path / "run", **{"data.image_folder": str(folder)})
  with pytest.raises(RuntimeError, match=r"image folder .*unreadable.*5 images in a row could not be used"):
    train(config)


def test_a_setting_typo_is_an_error_before_any_data_is_read(tmp_path, monkeypatch):
  monkeypatch.setattr(loop, "resolve_dataset", lambda *a: pytest.fail("data was read"))
  with pytest.raises(ValueError, match="preprocessing mode 'padd'"):
    train(train_fixtures.tiny_config(tmp_path / "run", **{"model.preprocessing": "padd"}))
  with pytest.raises(ValueError, match="data.region='salience'"):
    train(train_fixtures.tiny_config(tmp_path / "run", **{"data.region": "salience"}))
  with pytest.raises(ValueError, match="train.validate_every=5 scores answers: it needs train.objective='sft'"):
    train(train_fixtures.tiny_config(tmp_path / "run", **{"train.validate_every": 5}))
  with pytest.raises(ValueError, match="train.validate_every=5 needs held-out examples: set config.data.sft_validation"):
    train(train_fixtures.tiny_config(tmp_path / "run", **{"train.validate_every": 5, "train.objective": "sft"}))
  with pytest.raises(ValueError, match="train.patience=2 counts validations"):
    train(train_fixtures.tiny_config(tmp_path / "run", **{"train.patience": 2}))


def test_oversized_and_corrupt_images_are_skipped_by_file_name(tmp_path, caplog):
  folder = tmp_path / "imgs"
  write_sample_images(folder, 3)
  (folder / "huge.png").write_bytes(_png_claiming(14000, 14000))
  name = build_image_folder_dataset(str(folder), str(tmp_path / "tfds"))
  it = iter(train_dataset(data_source(name, str(tmp_path / "tfds"), "train"), train_fixtures.data_config(),
                          global_batch=3, transform=DecodeAndPreprocess("image", train_fixtures.pad_to(56)), seed=0))
  with caplog.at_level(logging.WARNING):
    for _ in range(3):
      assert next(it)["pixels"].shape == (3, 56, 56, 3)
  assert skipped_count(it) == 1   # met on every pass (3 batches of 3 from 4 files), counted once
  assert caplog.text.count("huge.png: 14000x14000 = 196000000 pixels exceeds the limit") == 1
  assert "example " not in caplog.text


def test_image_folder_datasets_are_keyed_on_full_path_and_contents(tmp_path):
  a, b = tmp_path / "a" / "imgs", tmp_path / "b" / "imgs"
  write_sample_images(a, 3)
  write_sample_images(b, 5)
  data_dir = str(tmp_path / "tfds")
  name_a, name_b = (build_image_folder_dataset(str(f), data_dir) for f in (a, b))
  assert name_a != name_b and name_a.split("/")[1].startswith("imgs_")
  assert len(data_source(name_a, data_dir, "train")) == 3
  assert len(data_source(name_b, data_dir, "train")) == 5
  assert build_image_folder_dataset(str(a), data_dir) == name_a            # unchanged: reused
  shutil.copy(a / sorted(os.listdir(a))[0], a / "extra.jpg")
  name_a2 = build_image_folder_dataset(str(a), data_dir)                    # changed: rebuilt
  assert name_a2 != name_a and len(data_source(name_a2, data_dir, "train")) == 4
  first = sorted(os.listdir(a))[0]
  Image.new("RGB", (20, 20)).save(a / first, format="JPEG")              # same name, new content
  os.utime(a / first, (1, 1))
  assert dataset_name(str(a)) not in (name_a.split("/")[1], name_a2.split("/")[1])


def _preempt_after(monkeypatch, steps: int):
  """SIGTERM as a TPU VM gets it, raised once `steps` batches went to the step."""
  real, calls = loop.to_global, {"n": 0}

  def to_global(*args, **kw):
    calls["n"] += 1
    if calls["n"] == steps:
      signal.raise_signal(signal.SIGTERM)
    return real(*args, **kw)
  monkeypatch.setattr(loop, "to_global", to_global)


@pytest.mark.slow   # a whole job (the full tier)
def test_preempted_run_resumes_logging_what_an_uninterrupted_run_logs(tmp_path, monkeypatch):
  settings = {"train.steps": 4, "train.log_every": 4, "checkpoint.every": 100}
  reference = train(train_fixtures.tiny_config(tmp_path / "ref", **settings))
  config = train_fixtures.tiny_config(tmp_path / "cut", **settings)
  _preempt_after(monkeypatch, 2)
  with pytest.raises(Preempted, match="stopped at step 2"):
    train(config)
  monkeypatch.undo()
  resumed = train(config)
  for key in ("loss", "kl", "cosine", "grad_norm"):   # the window 1..4 spans the preemption
    assert resumed[key] == reference[key], key


@pytest.mark.slow   # a whole job (the full tier)
def test_changed_config_on_resume_is_refused_unless_asked(tmp_path):
  run = tmp_path / "run"
  train(train_fixtures.tiny_config(run, **{"train.steps": 3}))
  record = json.loads((run / "run.json").read_text())
  assert record["config"]["train"]["batch_size"] == 8 and "sample_images" in record["dataset"]
  changed = {"train.steps": 6, "train.batch_size": 16, "train.learning_rate": 1e-2}
  with pytest.raises(ValueError, match=r"(?s)train.batch_size: 8 -> 16.*train.learning_rate.*"
                                       r"resume_despite_changes"):
    train(train_fixtures.tiny_config(run, **changed))
  # where it runs and how often it logs may change freely
  train(train_fixtures.tiny_config(run, **{"train.steps": 3, "train.log_every": 1, "mesh.data": 4,
                                              "mesh.fsdp": 2}))
  metrics = train(train_fixtures.tiny_config(run, **changed, resume_despite_changes=True))
  assert np.isfinite(metrics["loss"])


def _corrupt(step_dir):
  for p in step_dir.rglob("*"):
    if p.is_file() and p.parent.name == "d":
      p.write_bytes(b"garbage" * 10)


@pytest.mark.slow   # a whole job (the full tier)
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")   # nothing but the one warning
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
  run = tmp_path / "run"
  train(train_fixtures.tiny_config(run, **{"train.steps": 6, "checkpoint.every": 3}))
  _corrupt(run / "checkpoints" / "6")
  strict = train_fixtures.tiny_config(run, **{"train.steps": 6, "checkpoint.every": 3,
                                              "checkpoint.fallback_on_corrupt": False})
  with pytest.raises(ValueError, match=r"checkpoint step 6 at .*checkpoints/6 could not be restored"):
    train(strict)
  with caplog.at_level(logging.WARNING):
    metrics = train(train_fixtures.tiny_config(run, **{"train.steps": 6, "checkpoint.every": 3}))
  assert "checkpoint step 6" in caplog.text and "trying the previous one" in caplog.text
  assert np.isfinite(metrics["loss"])
  assert [p.name.split("_")[0] for p in (tmp_path / "run" / "checkpoints_corrupt").iterdir()] == ["6"]
  assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["3", "6"]


def test_skip_counter_survives_in_the_iterator_state(tmp_path):
  name, data_dir = train_fixtures.tiny_tfds(tmp_path, count=4, corrupt=2)
  make = lambda: iter(train_dataset(data_source(name, data_dir, "train"), train_fixtures.data_config(),  # noqa: E731
                                    global_batch=2, transform=DecodeAndPreprocess("image", train_fixtures.pad_to(56)),
                                    seed=0))
  it = make()
  for _ in range(3):
    next(it)
  state = it.get_state()
  again = make()
  again.set_state(state)
  assert skipped_count(again) == skipped_count(it)
  np.testing.assert_array_equal(next(again)["index"], next(it)["index"])
