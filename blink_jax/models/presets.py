"""Named model shapes, selectable without a checkpoint (`config.model.preset`): the embedded default's
tiny model, bench's medium one, and LLaVA-1.5-7B / -13B as their published `config.json` has them
(llava-hf/llava-1.5-{7b,13b}-hf), for random-weight runs and ahead-of-time sizing (blink_jax/aot.py)."""

from __future__ import annotations

from typing import Any

from blink_jax.models.llava_config import LlavaConfig, from_hf_config, from_preset

# A LLaVA-shaped model small enough for a laptop CPU: 112 px images (8x8 visual grid), 6 layers.
TINY = {
    "vision": dict(image_size=112, patch_size=14, hidden_size=64, intermediate_size=128, num_layers=3,
                   num_heads=4),
    "text": dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=6, num_heads=4,
                 num_kv_heads=2, head_dim=32),
    "image_token_id": 511,
}

# LLaVA-1.5's token geometry (336 px, 24x24 = 576 visual tokens) with small widths (bench/README.md).
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


# config.json of the published checkpoints (fields transformers fills by default written out).
HF_CONFIGS = {
    "llava-1.5-7b": _llava_hf({"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
                               "num_hidden_layers": 32, "num_key_value_heads": 32}),
    "llava-1.5-13b": _llava_hf({"hidden_size": 5120, "intermediate_size": 13824, "num_attention_heads": 40,
                                "num_hidden_layers": 40, "num_key_value_heads": 40}),
}
NATIVE = {"tiny": TINY, "medium": MEDIUM}
NAMES = tuple(NATIVE) + tuple(HF_CONFIGS)


def get(name: str, **runtime: Any) -> LlavaConfig:
  """The preset's LlavaConfig; `runtime` sets dtype, param_dtype, remat, attention."""
  if name in NATIVE:
    return from_preset(NATIVE[name], **runtime)
  if name in HF_CONFIGS:
    return from_hf_config(HF_CONFIGS[name], where=f"preset {name}", **runtime)
  raise ValueError(f"model.preset={name!r}; expected one of {NAMES}")
