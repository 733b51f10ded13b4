"""What every model family's config shares: the decoder's shape (TextConfig), the numeric policy
(Numerics, RuntimeFields), the rest of a whole-model config (ModelConfig, end_token_fields) and
reading a checkpoint's JSON files (config_json, optional_json, pick)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import fsspec
import jax.numpy as jnp

from blink_jax.models.attention_kernels import check_implementation


@dataclasses.dataclass(frozen=True)
class Numerics:
  """How a module computes, as opposed to what it is (its VisionConfig / TextConfig): the compute and
  storage dtypes, whether its layer stack recomputes activations in the backward pass, the prompt
  pass's attention kernel and the decoder's layer layout (stacked | per_layer: layer_stack.py). One
  object the model's modules share (LlavaConfig.numerics)."""
  dtype: jnp.dtype = jnp.dtype("float32")
  param_dtype: jnp.dtype = jnp.dtype("float32")
  remat: bool = False
  attention: str = "auto"
  layer_layout: str = "stacked"


@dataclasses.dataclass(frozen=True)
class RuntimeFields:
  """The fields a model config carries that its checkpoint does not (set by train/eval configs), and
  the Numerics they make. `dtype` is the compute dtype, `param_dtype` the storage dtype."""
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: bool = False
  attention: str = "auto"  # the prompt pass's attention kernel: auto | xla | blocked | splash (attention_kernels.py)
  layer_layout: str = "stacked"  # the decoder's params: stacked | per_layer (layer_stack.py; 'auto' is resolved before)

  def __post_init__(self):
    check_implementation(self.attention)
    if self.layer_layout not in ("stacked", "per_layer"):
      raise ValueError(f"layer_layout={self.layer_layout!r}; expected 'stacked' or 'per_layer' "
                       "(layer_stack.resolve_layout turns 'auto' into one of them)")

  @property
  def numerics(self) -> Numerics:
    return Numerics(jnp.dtype(self.dtype), jnp.dtype(self.param_dtype), self.remat, self.attention,
                    self.layer_layout)


@dataclasses.dataclass(frozen=True)
class ModelConfig(RuntimeFields):
  """What every family's whole-model config has besides its architecture: the runtime fields, the ids
  after its `eos_token_id` that also end generation (end_token_fields), and replace()."""
  extra_eos_token_ids: tuple[int, ...] = ()

  @property
  def eos_token_ids(self) -> tuple[int, ...]:
    return (self.eos_token_id,) + self.extra_eos_token_ids

  def replace(self, **kw: Any) -> "ModelConfig":
    return dataclasses.replace(self, **kw)


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """The Llama-family decoder (llama.py): LLaVA's Vicuna, and Qwen2.5-VL's Qwen2 with q/k/v biases
  (`attention_bias`) and multimodal RoPE (`mrope_section`: how many of the head_dim / 2 rotary
  frequencies follow the temporal, height and width position; empty for 1-D RoPE)."""
  vocab_size: int = 32064
  hidden_size: int = 4096
  intermediate_size: int = 11008
  num_layers: int = 32
  num_heads: int = 32
  num_kv_heads: int = 32
  head_dim: int = 128
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-5
  max_position_embeddings: int = 4096
  tie_word_embeddings: bool = False
  attention_bias: bool = False
  mrope_section: tuple[int, ...] = ()

  def __post_init__(self):
    if self.mrope_section and (len(self.mrope_section) != 3 or sum(self.mrope_section) * 2 != self.head_dim):
      raise ValueError(f"mrope_section={self.mrope_section}: expected three sections summing to head_dim / 2 "
                       f"= {self.head_dim // 2}")


def pick(d: Mapping[str, Any], *names: str, default: Any = None) -> Any:
  """The first of `names` that `d` holds a value for (config.json spells a field several ways)."""
  for n in names:
    if n in d and d[n] is not None:
      return d[n]
  return default


def end_token_fields(text: Mapping[str, Any], hf: Mapping[str, Any], generation: Mapping[str, Any] | None,
                     default: int) -> dict[str, Any]:
  """{eos_token_id, extra_eos_token_ids} of a checkpoint: the eos_token_id entries (an int, a list or
  None) of its decoder's config (else config.json's top level), then of generation_config.json, in
  order (transformers' generate stops at any of them; e.g. Qwen2.5-VL-Instruct's <|im_end|> and
  <|endoftext|>); `default` when none names one."""
  ids: list[int] = []
  for value in (pick(text, "eos_token_id", default=pick(hf, "eos_token_id")), (generation or {}).get("eos_token_id")):
    for i in value if isinstance(value, (list, tuple)) else [value]:
      if i is not None and int(i) not in ids:
        ids.append(int(i))
  return {"eos_token_id": ids[0], "extra_eos_token_ids": tuple(ids[1:])} if ids else {"eos_token_id": default}


def config_json(ckpt_dir: str | os.PathLike) -> tuple[dict[str, Any], str]:
  """(the parsed config.json of a checkpoint directory (local or any fsspec URL, e.g. gs://), its path)."""
  path = f"{str(ckpt_dir).rstrip('/')}/config.json"
  hf = optional_json(ckpt_dir, "config.json")
  if hf is None:
    raise FileNotFoundError(f"{path}: no config.json; expected a Hugging Face checkpoint directory")
  return hf, path


def optional_json(ckpt_dir: str | os.PathLike, name: str) -> dict[str, Any] | None:
  """A checkpoint directory's JSON file `name` parsed, or None when it has none."""
  path = f"{str(ckpt_dir).rstrip('/')}/{name}"
  fs, fs_path = fsspec.core.url_to_fs(path)
  if not fs.exists(fs_path):
    return None
  try:
    return json.loads(fs.cat_file(fs_path))
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from e
