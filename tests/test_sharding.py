"""The tiny model loads sharded over 8 fake CPU devices and computes the same logits as on one."""

import jax
import numpy as np

import hf_fixtures
from blink_jax import sharding as shd
from blink_jax.inference.pipeline import Pipeline


def test_sharded_load_and_logits_equal_single_device(gqa_ckpt):
  assert jax.device_count() == 8
  photos = hf_fixtures.sample_photos()
  single = Pipeline.from_hf(gqa_ckpt)
  partitioner = shd.Partitioner(shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
  sharded = Pipeline.from_hf(gqa_ckpt, partitioner=partitioner)   # per_layer params on CPU (auto)
  stacked = Pipeline.from_hf(gqa_ckpt, partitioner=partitioner, layer_layout="stacked")

  q = stacked.params["language_model"]["layers"]["layers"]["self_attn"]["q_proj"]["kernel"]
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  assert q.addressable_shards[0].data.shape == (q.shape[0], q.shape[1] // 2, q.shape[2] // 2, q.shape[3])
  q0 = sharded.params["language_model"]["layers"]["layer_0"]["self_attn"]["q_proj"]["kernel"]
  assert q0.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
  np.testing.assert_array_equal(q0, q[0])
  embed = sharded.params["language_model"]["embed_tokens"]["embedding"]
  assert embed.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")

  images = [photos["chelsea"], photos["coffee"], photos["rocket"], photos["astronaut"]]
  questions = ["what is in this image ?", "describe it", "how many cat ?", "red or blue ?"]
  batch = single.prepare(images, questions)
  ref = np.asarray(single.logits(batch))
  out = sharded.logits(batch)
  assert out.sharding.spec[0] == ("data", "fsdp")
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=5e-5)  # reduction order
  tokens = single.generate_tokens(batch, 6)
  np.testing.assert_array_equal(sharded.generate_tokens(batch, 6), tokens)
  np.testing.assert_array_equal(stacked.generate_tokens(batch, 6), tokens)


def test_mesh_errors_name_the_problem():
  import pytest
  with pytest.raises(ValueError, match="needs 16 devices"):
    shd.make_mesh({"data": 4, "fsdp": 4})
  with pytest.raises(ValueError, match="unknown"):
    shd.make_mesh({"pipeline": 2})
