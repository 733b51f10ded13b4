"""Loads a Hugging Face `Qwen2_5_VLForConditionalGeneration` checkpoint directory into Flax params: the
source of every param leaf (loaded strictly by strict_loading.py).

Key layouts: the hub's (`Qwen/Qwen2.5-VL-{3B,7B}-Instruct`, and what transformers 5 writes:
`visual.*`, `model.*`, `lm_head`) and transformers 4.5x's exports (`model.visual.*`,
`model.language_model.*`, `lm_head`).
"""

from __future__ import annotations

from typing import Any, Sequence

from etils import epath

from blink_jax import sharding as shd
from blink_jax.convert import strict_loading
from blink_jax.convert.safetensors_reader import SafetensorsCheckpoint
from blink_jax.convert.strict_loading import Source, dense, heads_bias, heads_in, heads_out, identity, llama_sources, per_layer
from blink_jax.models.model_config import config_json, optional_json
from blink_jax.models import vision_language
from blink_jax.models.qwen2_5_vl import Qwen2_5_VL
from blink_jax.models.qwen2_5_vl_config import Qwen2_5_VLConfig, from_hf_config, pixel_bounds

PREFIXES = {
    "vision": ("visual", "model.visual"),
    "language": ("model", "model.language_model"),
    "lm_head": ("lm_head",),
}
_PROBE = {"vision": "patch_embed.proj.weight", "language": "embed_tokens.weight", "lm_head": "weight"}


def _conv3d(w):       # torch Conv3d [out, in, kt, kh, kw] -> [kt, kh, kw, in, out]
  return w.transpose(2, 3, 4, 1, 0)


def hf_sources(cfg: Qwen2_5_VLConfig, prefixes: dict[str, str]) -> dict:
  """The source of every Flax param leaf, as a tree shaped like the params."""
  vt, lm, head = (prefixes[k] for k in ("vision", "language", "lm_head"))
  v = cfg.vision
  vl = f"{vt}.blocks.{{i}}"
  fused = (3 * v.num_heads, v.head_dim)      # qkv: [3 C, C] -> [C, 3, H, Dh]
  block = {
      "norm1": {"scale": Source((f"{vl}.norm1.weight",), identity)},
      "norm2": {"scale": Source((f"{vl}.norm2.weight",), identity)},
      "qkv": {"kernel": Source((f"{vl}.attn.qkv.weight",),
                               lambda w: heads_in(*fused)(w).reshape(w.shape[1], 3, v.num_heads, v.head_dim)),
              "bias": Source((f"{vl}.attn.qkv.bias",), lambda b: heads_bias(*fused)(b).reshape(3, v.num_heads, v.head_dim))},
      "proj": {"kernel": Source((f"{vl}.attn.proj.weight",), heads_out(v.num_heads, v.head_dim)),
               "bias": Source((f"{vl}.attn.proj.bias",), identity)},
      **{n: dense(f"{vl}.mlp.{n}") for n in ("gate_proj", "up_proj", "down_proj")},
  }
  return {
      "visual": {
          "patch_embed": Source((f"{vt}.patch_embed.proj.weight",), _conv3d),
          "blocks": {"layers": per_layer(block, v.depth)},
          "merger": {"ln_q": {"scale": Source((f"{vt}.merger.ln_q.weight",), identity)},
                     "linear_1": dense(f"{vt}.merger.mlp.0"), "linear_2": dense(f"{vt}.merger.mlp.2")},
      },
      "language_model": llama_sources(cfg.text, lm, head, cfg.layer_layout),
  }


def detect_prefixes(ckpt: SafetensorsCheckpoint) -> dict[str, str]:
  return strict_loading.detect_prefixes(ckpt, PREFIXES, _PROBE, "language", "Qwen2.5-VL")


def abstract_params(cfg: Qwen2_5_VLConfig) -> Any:
  """Boxed (logically annotated) param shapes of the whole model, without allocating anything."""
  return vision_language.abstract_params(Qwen2_5_VL(cfg))


def read_hf_config(ckpt_dir: str | epath.PathLike, **runtime: Any) -> Qwen2_5_VLConfig:
  """The config of a checkpoint directory: its config.json, with generation_config.json's end ids and
  the image processor's pixel bounds from its preprocessor_config.json, where it has them."""
  hf, path = config_json(ckpt_dir)
  processor = optional_json(ckpt_dir, "preprocessor_config.json")
  return from_hf_config(hf, where=path, generation=optional_json(ckpt_dir, "generation_config.json"),
                        **pixel_bounds(processor or {}), **runtime)


def load_hf_qwen2_5_vl(ckpt_dir: str | epath.PathLike, *, partitioner: shd.Partitioner | None = None,
                       dont_load: Sequence[str] = (), **runtime: Any) -> tuple[Qwen2_5_VLConfig, Any]:
  """(config, params) from an HF Qwen2.5-VL directory (local or gs://), params placed in their logical
  shardings by `partitioner` (default: all on the first device); `dont_load` as strict_loading's;
  `runtime`: the config's fields config.json lacks (RuntimeFields)."""
  cfg = read_hf_config(ckpt_dir, **runtime)
  ckpt = SafetensorsCheckpoint(ckpt_dir)
  sources = hf_sources(cfg, detect_prefixes(ckpt))
  return cfg, strict_loading.load_params(ckpt, sources, abstract_params(cfg), partitioner, cfg.param_dtype,
                                         dont_load, "Qwen2.5-VL")
