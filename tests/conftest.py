"""Test setup: 8 fake CPU devices (set before jax is imported) and shared fixtures."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Tests compile for TPU topologies (libtpu, no chip) in subprocesses, one per pytest worker: let two
# hold libtpu at once (libtpu otherwise takes a lock file for the chips, which these never touch).
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
# One persistent compilation cache for the whole session: every worker, and the subprocesses its tests
# start (they inherit the environment), loads a program another has compiled rather than compiling it
# (few repeat within one run: the gain is mostly a developer's second run). Every program is cached,
# however fast its compile. A size limit turns on JAX's own file lock around each read and write, so concurrent writers
# are safe; a torn entry (a killed writer) fails to decompress and is compiled again. Kept between
# runs; BLINK_TEST_JAX_CACHE=DIR puts it elsewhere. Tests that measure compiles turn it off (aot, bench).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ.get(
    "BLINK_TEST_JAX_CACHE", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                         ".cache", "jax-tests")))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 << 30))

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
# The tests check what programs compute, not how fast: XLA's cheapest compile (most of a test's time on
# CPU) for the programs they run in-process. Jobs they start as subprocesses compile as users' do.
jax.config.update("jax_disable_most_optimizations", True)

import pathlib  # noqa: E402

import pytest  # noqa: E402

import gcs_fixtures  # noqa: E402
import hf_fixtures  # noqa: E402


@pytest.fixture(scope="session")
def mha_ckpt(tmp_path_factory) -> pathlib.Path:
  """Tiny multi-head-attention LLaVA, 56 px images (16 visual tokens), sharded safetensors."""
  path = tmp_path_factory.mktemp("mha")
  hf_fixtures.build_checkpoint(path, image_size=56, kv_heads=4, seed=0)
  return path


@pytest.fixture(scope="session")
def gqa_ckpt(tmp_path_factory) -> pathlib.Path:
  """Tiny grouped-query LLaVA (4 heads, 2 kv heads), 84 px images (36 visual tokens), one file."""
  path = tmp_path_factory.mktemp("gqa")
  hf_fixtures.build_checkpoint(path, image_size=84, kv_heads=2, seed=1, max_shard_size=None)
  return path


@pytest.fixture(scope="session")
def blink_ckpt(tmp_path_factory) -> pathlib.Path:
  """Tiny GQA LLaVA with 8 decoder layers and a 6x6 visual grid, for Blink (scan layers 1..6)."""
  path = tmp_path_factory.mktemp("blink")
  hf_fixtures.build_checkpoint(path, image_size=84, kv_heads=2, text_layers=8, seed=3,
                               max_shard_size=None, lm_head_scale=2.0)
  return path


@pytest.fixture(scope="session")
def qwen_ckpt(tmp_path_factory) -> pathlib.Path:
  """Tiny random Qwen2.5-VL (3 decoder layers, 4 vision blocks) with its tokenizer."""
  import qwen_fixtures
  path = tmp_path_factory.mktemp("qwen")
  qwen_fixtures.build_checkpoint(path, seed=0)
  return path


@pytest.fixture()
def gcs_emulator():
  """A fresh in-memory GCS for one test; yields its bucket URL, gs://bench."""
  with gcs_fixtures.emulator() as url:
    yield url
