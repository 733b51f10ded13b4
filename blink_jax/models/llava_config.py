"""Architecture hyper-parameters of LLaVA-1.5 (CLIP ViT + mlp2x_gelu projector + Llama), read from
a Hugging Face `config.json` or built from an ml_collections preset; and what every model family
shares: the decoder's shape (TextConfig), the numeric policy (Numerics, RuntimeFields) and the rest of a
whole-model config (ModelConfig, end_token_fields)."""

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
class VisionConfig:
  image_size: int = 336
  patch_size: int = 14
  hidden_size: int = 1024
  intermediate_size: int = 4096
  num_layers: int = 24
  num_heads: int = 16
  layer_norm_eps: float = 1e-5
  num_channels: int = 3
  hidden_act: str = "quick_gelu"

  @property
  def grid(self) -> int:
    return self.image_size // self.patch_size

  @property
  def num_patches(self) -> int:
    return self.grid * self.grid

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads


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


@dataclasses.dataclass(frozen=True)
class LlavaConfig(ModelConfig):
  """The whole model (with what ModelConfig adds)."""
  vision: VisionConfig = VisionConfig()
  text: TextConfig = TextConfig()
  image_token_id: int = 32000
  vision_feature_layer: int = -2
  projector_hidden_act: str = "gelu"
  projector_bias: bool = True
  bos_token_id: int = 1
  eos_token_id: int = 2
  pad_token_id: int = 0

  @property
  def num_image_tokens(self) -> int:
    return self.vision.num_patches

  @property
  def num_vision_layers_used(self) -> int:
    """How many CLIP encoder layers produce the selected hidden state (HF hidden_states[k])."""
    k = self.vision_feature_layer
    n = self.vision.num_layers
    used = n + 1 + k if k < 0 else k
    if not 0 <= used <= n:
      raise ValueError(f"vision_feature_layer={k} is outside [-{n + 1}, {n}]")
    return used


def _pick(d: Mapping[str, Any], *names: str, default: Any = None) -> Any:
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
  for value in (_pick(text, "eos_token_id", default=_pick(hf, "eos_token_id")), (generation or {}).get("eos_token_id")):
    for i in value if isinstance(value, (list, tuple)) else [value]:
      if i is not None and int(i) not in ids:
        ids.append(int(i))
  return {"eos_token_id": ids[0], "extra_eos_token_ids": tuple(ids[1:])} if ids else {"eos_token_id": default}


def _required(d: Mapping[str, Any], name: str, where: str) -> Any:
  if name not in d:
    raise ValueError(f"{where}: config.json has no '{name}', which a LLaVA checkpoint must define")
  return d[name]


def from_hf_config(hf: Mapping[str, Any], where: str = "config.json", generation: Mapping[str, Any] | None = None,
                   **runtime: Any) -> LlavaConfig:
  """Maps a `LlavaForConditionalGeneration` config.json (and its generation_config.json's end ids)
  onto LlavaConfig.

  `runtime` sets fields that are not in the checkpoint (RuntimeFields: dtype, param_dtype, remat, ...).
  """
  arch = hf.get("architectures") or []
  if hf.get("model_type") != "llava" and "LlavaForConditionalGeneration" not in arch:
    raise ValueError(f"{where}: model_type={hf.get('model_type')!r}, architectures={arch}; "
                     "expected a LLaVA checkpoint (model_type 'llava')")
  t = _required(hf, "text_config", where)
  v = _required(hf, "vision_config", where)
  if hf.get("vision_feature_select_strategy", "default") != "default":
    raise ValueError(f"{where}: vision_feature_select_strategy="
                     f"{hf['vision_feature_select_strategy']!r}; only 'default' (drop CLS) is supported")
  rope = t.get("rope_parameters") or t.get("rope_scaling") or {}
  if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
    raise ValueError(f"{where}: rope type {rope.get('rope_type')!r} is not supported (only 'default')")
  n_heads = _pick(t, "num_attention_heads", default=32)
  hidden = _pick(t, "hidden_size", default=4096)
  text = TextConfig(
      vocab_size=_pick(t, "vocab_size", default=32064),
      hidden_size=hidden,
      intermediate_size=_pick(t, "intermediate_size", default=11008),
      num_layers=_pick(t, "num_hidden_layers", default=32),
      num_heads=n_heads,
      num_kv_heads=_pick(t, "num_key_value_heads", default=n_heads),
      head_dim=_pick(t, "head_dim", default=hidden // n_heads),
      rope_theta=float(_pick(rope, "rope_theta", default=_pick(t, "rope_theta", default=10000.0))),
      rms_norm_eps=float(_pick(t, "rms_norm_eps", default=1e-5)),
      max_position_embeddings=_pick(t, "max_position_embeddings", default=4096),
      tie_word_embeddings=bool(_pick(t, "tie_word_embeddings", default=False)),
  )
  vision = VisionConfig(
      image_size=_pick(v, "image_size", default=336),
      patch_size=_pick(v, "patch_size", default=14),
      hidden_size=_pick(v, "hidden_size", default=1024),
      intermediate_size=_pick(v, "intermediate_size", default=4096),
      num_layers=_pick(v, "num_hidden_layers", default=24),
      num_heads=_pick(v, "num_attention_heads", default=16),
      layer_norm_eps=float(_pick(v, "layer_norm_eps", default=1e-5)),
      num_channels=_pick(v, "num_channels", default=3),
      hidden_act=_pick(v, "hidden_act", default="quick_gelu"),
  )
  return LlavaConfig(
      vision=vision, text=text,
      image_token_id=_pick(hf, "image_token_id", "image_token_index", default=32000),
      vision_feature_layer=_pick(hf, "vision_feature_layer", default=-2),
      projector_hidden_act=_pick(hf, "projector_hidden_act", default="gelu"),
      projector_bias=bool(_pick(hf, "multimodal_projector_bias", default=True)),
      bos_token_id=_pick(t, "bos_token_id", default=_pick(hf, "bos_token_id", default=1)),
      **end_token_fields(t, hf, generation, default=2),
      pad_token_id=_pick(hf, "pad_token_id", default=_pick(t, "pad_token_id", default=0)),
      **runtime,
  )


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


def read_hf_config(ckpt_dir: str | os.PathLike, **runtime: Any) -> LlavaConfig:
  """The LlavaConfig of a checkpoint directory's config.json (and generation_config.json)."""
  hf, path = config_json(ckpt_dir)
  return from_hf_config(hf, where=path, generation=optional_json(ckpt_dir, "generation_config.json"), **runtime)


def from_preset(preset: Mapping[str, Any], **runtime: Any) -> LlavaConfig:
  """Builds a config from a nested mapping {'vision': {...}, 'text': {...}, ...} (configs/ presets)."""
  preset = dict(preset)
  vision = VisionConfig(**dict(preset.pop("vision", {})))
  text = TextConfig(**dict(preset.pop("text", {})))
  return LlavaConfig(vision=vision, text=text, **preset, **runtime)
