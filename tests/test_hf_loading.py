"""Where checkpoints come from: the key layouts transformers versions export, and gs:// (through
fsspec, on a local GCS emulator) for a sharded checkpoint."""

import jax
import numpy as np
from safetensors.numpy import load_file, save_file

import gcs_fixtures
import hf_fixtures
from blink_jax import sharding as shd
from blink_jax.convert.safetensors_reader import SafetensorsCheckpoint
from blink_jax.inference.pipeline import Pipeline


def test_transformers_key_layout_loads_the_same_params(gqa_ckpt, tmp_path):
  import shutil
  shutil.copytree(gqa_ckpt, tmp_path / "c")
  tensors = load_file(str(tmp_path / "c" / "model.safetensors"))
  renames = {"language_model.model.": "model.language_model.", "language_model.lm_head.": "lm_head.",
             "vision_tower.": "model.vision_tower.", "multi_modal_projector.": "model.multi_modal_projector."}
  renamed = {}
  for k, v in tensors.items():
    for old, new in renames.items():
      if k.startswith(old):
        k = new + k[len(old):]
        break
    renamed[k] = v
  save_file(renamed, str(tmp_path / "c" / "model.safetensors"))
  a = Pipeline.from_hf(gqa_ckpt).params
  b = Pipeline.from_hf(tmp_path / "c").params
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_checkpoint_from_gcs_equals_local(mha_ckpt, gcs_emulator, monkeypatch):
  """A sharded checkpoint (index + several files) read from gs:// onto 8 devices gives the same params,
  tokenizer and logits as from disk, and each tensor is fetched exactly once."""
  url = f"{gcs_emulator}/llava"
  gcs_fixtures.upload(mha_ckpt, url)
  partitioner = shd.Partitioner(shd.make_mesh({"data": 1, "fsdp": 4, "tensor": 2}))
  ckpt = SafetensorsCheckpoint(url)
  assert not ckpt.memory_mapped and len(ckpt._fs.glob(f"{url}/*.safetensors")) > 1
  ranged_reads = []
  cat_file = ckpt._fs.cat_file  # fsspec caches filesystems: the loader gets this same instance

  def counting(path, start=None, end=None, **kw):
    if start is not None:
      ranged_reads.append(path)
    return cat_file(path, start=start, end=end, **kw)

  monkeypatch.setattr(ckpt._fs, "cat_file", counting)
  remote = Pipeline.from_hf(url, partitioner=partitioner)
  assert len(ranged_reads) == len(ckpt.keys())
  local = Pipeline.from_hf(mha_ckpt, partitioner=partitioner)
  jax.tree.map(np.testing.assert_array_equal, local.params, remote.params)
  batch = local.prepare(*_inputs(4))
  np.testing.assert_array_equal(remote.prepare(*_inputs(4)).ids, batch.ids)
  np.testing.assert_array_equal(np.asarray(remote.logits(batch)), np.asarray(local.logits(batch)))


def test_qwen_checkpoint_from_gcs_equals_local(qwen_ckpt, gcs_emulator, tmp_path):
  """A Qwen2.5-VL directory on gs:// (sharded safetensors, its tokenizer, and the generation and
  preprocessor configs its family reads) loads to the params, config and logits it gives from disk."""
  import shutil
  local_dir = tmp_path / "qwen"
  shutil.copytree(qwen_ckpt, local_dir)
  (local_dir / "preprocessor_config.json").write_text('{"min_pixels": 50176, "max_pixels": 200704}')
  url = f"{gcs_emulator}/qwen"
  gcs_fixtures.upload(local_dir, url)
  partitioner = shd.Partitioner(shd.make_mesh({"data": 1, "fsdp": 4, "tensor": 2}))
  remote = Pipeline.from_hf(url, partitioner=partitioner, preprocessing="native")
  local = Pipeline.from_hf(local_dir, partitioner=partitioner, preprocessing="native")
  assert remote.cfg == local.cfg and (remote.cfg.min_pixels, remote.cfg.max_pixels) == (50176, 200704)
  jax.tree.map(np.testing.assert_array_equal, local.params, remote.params)
  photo = hf_fixtures.sample_photos()["chelsea"]
  images, questions = [photo] * 4, ["what is in this image ?", "describe it", "a cat ?", "how many ?"]
  batch = local.prepare(images, questions)
  np.testing.assert_array_equal(remote.prepare(images, questions).ids, batch.ids)
  four = np.asarray(local.logits(batch))
  np.testing.assert_array_equal(np.asarray(remote.logits(batch)), four)
  # One example on the 4 batch-parallel devices: padded to the mesh inside, its own row returned.
  one = local.prepare(images[:1], questions[:1])
  n = int(one.lengths[0])
  logits = np.asarray(local.logits(one))
  assert logits.shape[0] == 1
  np.testing.assert_allclose(logits[0, :n], four[0, :n], atol=2e-5, rtol=1e-5)


def _inputs(n):
  photos = list(hf_fixtures.sample_photos().values())
  return photos[:n], [hf_fixtures.long_question(5 + 7 * i, seed=i) for i in range(n)]
