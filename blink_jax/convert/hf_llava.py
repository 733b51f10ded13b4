"""Loads a Hugging Face `LlavaForConditionalGeneration` checkpoint directory into Flax params: the
source of every param leaf (loaded strictly by strict_loading.py).

The key layouts of the hub's `llava-hf` files and of every transformers version's exports are
understood (see PREFIXES).
"""

from __future__ import annotations

from typing import Any, Sequence

from etils import epath

from blink_jax import sharding as shd
from blink_jax.convert import strict_loading
from blink_jax.convert.safetensors_reader import SafetensorsCheckpoint
from blink_jax.convert.strict_loading import (Source, conv2d, dense, heads_bias, heads_in, heads_out, identity,
                                              layer_norm, llama_sources, per_layer)
from blink_jax.models import vision_language
from blink_jax.models.llava import Llava
from blink_jax.models.llava_config import LlavaConfig, read_hf_config


def hf_sources(cfg: LlavaConfig, prefixes: dict[str, str]) -> dict:
  """The source of every Flax param leaf, as a tree shaped like the params."""
  vt, mm, lm, head = (prefixes[k] for k in ("vision", "projector", "language", "lm_head"))
  v, t = cfg.vision, cfg.text
  vl = f"{vt}.encoder.layers.{{i}}"
  vh = (v.num_heads, v.head_dim)

  def attn_proj(name):
    return {"kernel": Source((f"{vl}.self_attn.{name}.weight",), heads_in(*vh)),
            "bias": Source((f"{vl}.self_attn.{name}.bias",), heads_bias(*vh))}

  vision_layer = {
      "layer_norm1": layer_norm(f"{vl}.layer_norm1"), "layer_norm2": layer_norm(f"{vl}.layer_norm2"),
      "q_proj": attn_proj("q_proj"), "k_proj": attn_proj("k_proj"), "v_proj": attn_proj("v_proj"),
      "out_proj": {"kernel": Source((f"{vl}.self_attn.out_proj.weight",), heads_out(*vh)),
                   "bias": Source((f"{vl}.self_attn.out_proj.bias",), identity)},
      "fc1": dense(f"{vl}.mlp.fc1"), "fc2": dense(f"{vl}.mlp.fc2"),
  }
  return {
      "vision_tower": {
          "patch_embedding": {"kernel": Source((f"{vt}.embeddings.patch_embedding.weight",), conv2d)},
          "class_embedding": Source((f"{vt}.embeddings.class_embedding",), identity),
          "position_embedding": Source((f"{vt}.embeddings.position_embedding.weight",), identity),
          "pre_layrnorm": layer_norm(f"{vt}.pre_layrnorm"),
          "post_layernorm": layer_norm(f"{vt}.post_layernorm"),
          "layers": {"layers": per_layer(vision_layer, v.num_layers)},
      },
      "multi_modal_projector": {"linear_1": dense(f"{mm}.linear_1", cfg.projector_bias),
                                "linear_2": dense(f"{mm}.linear_2", cfg.projector_bias)},
      "language_model": llama_sources(t, lm, head, cfg.layer_layout),
  }


# Where each component lives, per exporter: the hub's llava-hf files, transformers>=4.52 in-memory
# names, and what transformers 5 writes (vision tower without `vision_model.`).
PREFIXES = {
    "vision": ("vision_tower.vision_model", "model.vision_tower.vision_model", "vision_tower",
               "model.vision_tower"),
    "projector": ("multi_modal_projector", "model.multi_modal_projector"),
    "language": ("language_model.model", "model.language_model"),
    "lm_head": ("language_model.lm_head", "lm_head"),
}
_PROBE = {"vision": "embeddings.patch_embedding.weight", "projector": "linear_1.weight",
          "language": "embed_tokens.weight", "lm_head": "weight"}


def detect_prefixes(ckpt: SafetensorsCheckpoint) -> dict[str, str]:
  return strict_loading.detect_prefixes(ckpt, PREFIXES, _PROBE, "language", "LLaVA")


def abstract_params(cfg: LlavaConfig) -> Any:
  """Boxed (logically annotated) param shapes of the whole model, without allocating anything."""
  return vision_language.abstract_params(Llava(cfg))


def load_hf_llava(ckpt_dir: str | epath.PathLike, *, partitioner: shd.Partitioner | None = None,
                  dont_load: Sequence[str] = (), **runtime: Any) -> tuple[LlavaConfig, Any]:
  """(config, params) from an HF LLaVA directory, params placed in their logical shardings by
  `partitioner` (default: all on the first device).

  `dont_load`: regexes of Flax param paths ('language_model/norm/scale') that are left out of the
  result instead of failing when the checkpoint lacks them. `runtime`: the config's fields config.json
  lacks (RuntimeFields: dtype, param_dtype, remat, attention, layer_layout).
  """
  cfg = read_hf_config(ckpt_dir, **runtime)
  ckpt = SafetensorsCheckpoint(ckpt_dir)
  sources = hf_sources(cfg, detect_prefixes(ckpt))
  return cfg, strict_loading.load_params(ckpt, sources, abstract_params(cfg), partitioner, cfg.param_dtype,
                                         dont_load, "LLaVA")
