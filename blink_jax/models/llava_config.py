"""Architecture hyper-parameters of LLaVA-1.5 (CLIP ViT + mlp2x_gelu projector + Llama), read from
a Hugging Face `config.json` or built from an ml_collections preset (what every family shares:
model_config.py)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from blink_jax.models.model_config import (ModelConfig, TextConfig, config_json, end_token_fields, optional_json,
                                           pick)


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
  n_heads = pick(t, "num_attention_heads", default=32)
  hidden = pick(t, "hidden_size", default=4096)
  text = TextConfig(
      vocab_size=pick(t, "vocab_size", default=32064),
      hidden_size=hidden,
      intermediate_size=pick(t, "intermediate_size", default=11008),
      num_layers=pick(t, "num_hidden_layers", default=32),
      num_heads=n_heads,
      num_kv_heads=pick(t, "num_key_value_heads", default=n_heads),
      head_dim=pick(t, "head_dim", default=hidden // n_heads),
      rope_theta=float(pick(rope, "rope_theta", default=pick(t, "rope_theta", default=10000.0))),
      rms_norm_eps=float(pick(t, "rms_norm_eps", default=1e-5)),
      max_position_embeddings=pick(t, "max_position_embeddings", default=4096),
      tie_word_embeddings=bool(pick(t, "tie_word_embeddings", default=False)),
  )
  vision = VisionConfig(
      image_size=pick(v, "image_size", default=336),
      patch_size=pick(v, "patch_size", default=14),
      hidden_size=pick(v, "hidden_size", default=1024),
      intermediate_size=pick(v, "intermediate_size", default=4096),
      num_layers=pick(v, "num_hidden_layers", default=24),
      num_heads=pick(v, "num_attention_heads", default=16),
      layer_norm_eps=float(pick(v, "layer_norm_eps", default=1e-5)),
      num_channels=pick(v, "num_channels", default=3),
      hidden_act=pick(v, "hidden_act", default="quick_gelu"),
  )
  return LlavaConfig(
      vision=vision, text=text,
      image_token_id=pick(hf, "image_token_id", "image_token_index", default=32000),
      vision_feature_layer=pick(hf, "vision_feature_layer", default=-2),
      projector_hidden_act=pick(hf, "projector_hidden_act", default="gelu"),
      projector_bias=bool(pick(hf, "multimodal_projector_bias", default=True)),
      bos_token_id=pick(t, "bos_token_id", default=pick(hf, "bos_token_id", default=1)),
      **end_token_fields(t, hf, generation, default=2),
      pad_token_id=pick(hf, "pad_token_id", default=pick(t, "pad_token_id", default=0)),
      **runtime,
  )


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
