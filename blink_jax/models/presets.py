"""Named model shapes, selectable without a checkpoint (`config.model.preset`): the embedded default's
tiny model (and `qwen2.5-vl-tiny`, its sizes in Qwen2.5-VL's architecture), bench's medium one,
LLaVA-1.5-7B / -13B and Qwen2.5-VL-3B / -7B as their published `config.json` has them
(llava-hf/llava-1.5-{7b,13b}-hf, Qwen/Qwen2.5-VL-{3B,7B}-Instruct), for random-weight runs and
ahead-of-time sizing (blink_jax/aot.py)."""

from __future__ import annotations

from typing import Any

from blink_jax.models import qwen2_5_vl_config
from blink_jax.models.llava_config import from_hf_config, from_preset

# A LLaVA-shaped model small enough for a laptop CPU: 112 px images (8x8 visual grid), 6 layers.
TINY = {
    "vision": dict(image_size=112, patch_size=14, hidden_size=64, intermediate_size=128, num_layers=3,
                   num_heads=4),
    "text": dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=6, num_heads=4,
                 num_kv_heads=2, head_dim=32),
    "image_token_id": 511,
}

# LLaVA-1.5's token geometry (336 px, 24x24 = 576 visual tokens) with small widths (docs/benchmarks.md).
MEDIUM = {
    "vision": dict(image_size=336, patch_size=14, hidden_size=256, intermediate_size=1024, num_layers=6,
                   num_heads=4),
    "text": dict(vocab_size=32064, hidden_size=512, intermediate_size=1408, num_layers=8, num_heads=8,
                 num_kv_heads=8, head_dim=64),
    "image_token_id": 32000,
}

_CLIP_L_336 = {"model_type": "clip_vision_model", "hidden_size": 1024, "image_size": 336,
               "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14,
               "projection_dim": 768, "vocab_size": 32000}


def _llava_hf(text: dict) -> dict:
  return {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "ignore_index": -100,
          "image_token_index": 32000, "pad_token_id": 32001, "projector_hidden_act": "gelu",
          "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
          "text_config": {"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                          "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "vocab_size": 32064, **text},
          "vision_config": dict(_CLIP_L_336)}


_QWEN_VIT = {"depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
             "in_chans": 3, "patch_size": 14, "spatial_merge_size": 2, "spatial_patch_size": 14, "window_size": 112,
             "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2, "temporal_patch_size": 2}
_QWEN_TOKENS = {"bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652,
                "vision_end_token_id": 151653, "vision_token_id": 151654, "image_token_id": 151655,
                "video_token_id": 151656}


def _qwen2_5_vl_hf(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int,
                   tied: bool, mrope_section=(16, 24, 24), vision: dict | None = None,
                   tokens: dict | None = None) -> dict:
  """The hub's flat Qwen2.5-VL config.json (text fields at the top level, rope_scaling)."""
  return {
      "architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl", "attention_dropout": 0.0,
      **(tokens or _QWEN_TOKENS), "hidden_act": "silu",
      "hidden_size": hidden, "initializer_range": 0.02, "intermediate_size": intermediate,
      "max_position_embeddings": 128000, "max_window_layers": layers, "num_attention_heads": heads,
      "num_hidden_layers": layers, "num_key_value_heads": kv_heads, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
      "sliding_window": 32768, "tie_word_embeddings": tied, "torch_dtype": "bfloat16", "use_cache": True,
      "use_sliding_window": False, "vocab_size": vocab,
      "vision_config": {**_QWEN_VIT, **(vision or {}), "out_hidden_size": hidden},
      "rope_scaling": {"type": "mrope", "mrope_section": list(mrope_section)},
  }


# config.json of the published checkpoints (fields transformers fills by default written out).
HF_CONFIGS = {
    "llava-1.5-7b": _llava_hf({"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
                               "num_hidden_layers": 32, "num_key_value_heads": 32}),
    "llava-1.5-13b": _llava_hf({"hidden_size": 5120, "intermediate_size": 13824, "num_attention_heads": 40,
                                "num_hidden_layers": 40, "num_key_value_heads": 40}),
    "qwen2.5-vl-3b": _qwen2_5_vl_hf(2048, 11008, 36, 16, 2, 151936, tied=True),
    "qwen2.5-vl-7b": _qwen2_5_vl_hf(3584, 18944, 28, 28, 4, 152064, tied=False),
    # TINY's sizes in Qwen2.5-VL's architecture: the embedded default's model for Qwen (random, no download).
    "qwen2.5-vl-tiny": _qwen2_5_vl_hf(
        128, 256, 6, 4, 2, 512, tied=False, mrope_section=(4, 6, 6),
        vision={"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "fullatt_block_indexes": [1]},
        tokens={"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "vision_start_token_id": 508,
                "vision_end_token_id": 509, "vision_token_id": 507, "image_token_id": 511, "video_token_id": 510}),
}
NATIVE = {"tiny": TINY, "medium": MEDIUM}
NAMES = tuple(NATIVE) + tuple(HF_CONFIGS)


def get(name: str, **runtime: Any):
  """The preset's model config (LlavaConfig or Qwen2_5_VLConfig); `runtime` sets dtype, param_dtype,
  remat, attention."""
  if name in NATIVE:
    return from_preset(NATIVE[name], **runtime)
  if name in HF_CONFIGS:
    hf = HF_CONFIGS[name]
    read = qwen2_5_vl_config.from_hf_config if hf["model_type"] == "qwen2_5_vl" else from_hf_config
    return read(hf, where=f"preset {name}", **runtime)
  raise ValueError(f"model.preset={name!r}; expected one of {NAMES}")
