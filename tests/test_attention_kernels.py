"""The CPU `blocked` kernel and TPU `splash` kernel (run in Pallas' interpret mode here) equal XLA's
`jax.nn.dot_product_attention` path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blink_jax.models import attention_kernels
from blink_jax.models.attention_kernels import self_attention
from blink_jax.models.llava_config import LlavaConfig


def _qkv(b, t, heads, kv_heads, d, dtype, seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(keys[0], (b, t, heads, d), dtype)
  k = jax.random.normal(keys[1], (b, t, kv_heads, d), dtype)
  v = jax.random.normal(keys[2], (b, t, kv_heads, d), dtype)
  return q, k, v


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (6, 2)])
def test_blocked_equals_xla_over_several_query_blocks(causal, heads, kv_heads):
  t = 2 * attention_kernels.QUERY_BLOCK + 37  # three query blocks, the last one short
  q, k, v = _qkv(3, t, heads, kv_heads, 16, jnp.float32)
  rng = np.random.default_rng(0)
  # Right padding, and dead keys in the middle (Blink's slot layout has such holes).
  key_valid = np.arange(t)[None, :] < np.array([t, t - 100, 300])[:, None]
  key_valid &= rng.random((3, t)) > 0.2
  key_valid[:, 0] = True
  key_valid = jnp.asarray(key_valid)
  xla = self_attention(q, k, v, key_valid, causal=causal, implementation="xla")
  blocked = jax.jit(lambda *a: self_attention(*a, causal=causal, implementation="blocked"))(q, k, v, key_valid)
  np.testing.assert_allclose(np.asarray(blocked), np.asarray(xla), atol=2e-6, rtol=1e-5)
  no_mask = self_attention(q, k, v, None, causal=causal, implementation="blocked")
  np.testing.assert_allclose(np.asarray(no_mask),
                             np.asarray(self_attention(q, k, v, None, causal=causal, implementation="xla")),
                             atol=2e-6, rtol=1e-5)
  assert not np.allclose(np.asarray(no_mask), np.asarray(blocked), atol=1e-3)  # the mask mattered


def test_blocked_equals_xla_in_bfloat16():
  q, k, v = _qkv(2, attention_kernels.QUERY_BLOCK + 5, 4, 2, 32, jnp.bfloat16, seed=1)
  valid = jnp.arange(q.shape[1])[None, :] < jnp.array([[q.shape[1]], [90]])
  xla = self_attention(q, k, v, valid, causal=True, implementation="xla")
  blocked = self_attention(q, k, v, valid, causal=True, implementation="blocked")
  assert blocked.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(blocked, np.float32), np.asarray(xla, np.float32), atol=2e-2)


def test_auto_picks_the_kernel_of_the_platform_and_unknown_names_fail():
  assert attention_kernels.resolve("auto") == {"cpu": "blocked", "tpu": "splash"}.get(jax.default_backend(), "xla")
  with pytest.raises(ValueError, match=r"attention implementation 'flash' is unknown; expected one of"):
    LlavaConfig(attention="flash")


def _live_rows(x, key_valid):
  """Rows whose own token is a live key: the rows every kernel must agree on (the others are
  padding or dead Blink slots, whose outputs nothing reads)."""
  return np.asarray(x, np.float32)[np.asarray(key_valid)]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2)])
def test_splash_equals_xla_in_interpret_mode(causal, heads, kv_heads):
  t = 300   # not a multiple of the kernel's 128-token blocks: padded inside
  q, k, v = _qkv(2, t, heads, kv_heads, 32, jnp.float32, seed=2)
  rng = np.random.default_rng(1)
  key_valid = np.arange(t)[None, :] < np.array([t, 170])[:, None]
  key_valid[:, 40:104] = rng.random((2, 64)) > 0.5     # a slot block, partly live
  key_valid = jnp.asarray(key_valid)
  xla = self_attention(q, k, v, key_valid, causal=causal, implementation="xla")
  splash = jax.jit(lambda *a: self_attention(*a, causal=causal, implementation="splash"))(q, k, v, key_valid)
  np.testing.assert_allclose(_live_rows(splash, key_valid), _live_rows(xla, key_valid), atol=2e-5, rtol=1e-4)


def test_splash_under_a_mesh_runs_per_shard_and_equals_xla():
  from blink_jax import sharding as shd
  partitioner = shd.Partitioner(shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
  q, k, v = _qkv(4, 200, 4, 4, 16, jnp.float32, seed=3)
  key_valid = jnp.arange(200)[None, :] < jnp.array([[200], [150], [99], [7]])
  xla = self_attention(q, k, v, key_valid, causal=True, implementation="xla")
  with partitioner.activated():
    splash = jax.jit(lambda *a: self_attention(*a, causal=True, implementation="splash"))(q, k, v, key_valid)
  np.testing.assert_allclose(_live_rows(splash, key_valid), _live_rows(xla, key_valid), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("kernel,s,t", [("xla", 300, 170), ("blocked", 450, 300), ("splash", 300, 170)])
def test_queries_continuing_a_prefix_equal_the_tail_of_full_attention(kernel, s, t):
  """Keys longer than the queries (a prompt continued after a cached prefix): the queries are the
  sequence's last t, causality aligned at the end, so the result is full attention's last t rows."""
  q, k, v = _qkv(2, s, 4, 2, 32, jnp.float32, seed=4)
  key_valid = jnp.arange(s)[None, :] < jnp.array([[s], [s - 37]])
  full = self_attention(q, k, v, key_valid, causal=True, implementation="xla")
  tail = jax.jit(lambda *a: self_attention(*a, causal=True, implementation=kernel))(q[:, s - t:], k, v, key_valid)
  live = key_valid[:, s - t:]
  np.testing.assert_allclose(_live_rows(tail, live), _live_rows(full[:, s - t:], live), atol=2e-5, rtol=1e-4)
