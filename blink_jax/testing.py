"""Small random Hugging Face checkpoints, written by transformers (PyTorch, CPU) exactly as the hub's
are, for the tests and the bench scripts: one writer for both families (LLaVA-1.5, Qwen2.5-VL), their
configs, and transformers' Qwen2.5-VL pixel layout. Needs requirements-test.txt (torch, transformers)."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np


def save_random_model(path: pathlib.Path, model_class: str, hf_config: Any, tokenizer: Any, *, seed: int,
                      lm_head_scale: float | None = None, dtype: str = "float32",
                      max_shard_size: str | None = None):
  """transformers.<model_class>(hf_config) initialised from torch seed `seed`, its LM head scaled by
  `lm_head_scale` (a random model's logits are near-uniform: sharpened, greedy choices do not tie),
  saved with save_pretrained in `dtype` (sharded at `max_shard_size`) beside `tokenizer` (a
  tokenizers.Tokenizer) as tokenizer.json. Returns the model."""
  import torch
  import transformers
  torch.manual_seed(seed)
  model = getattr(transformers, model_class)(hf_config).eval()
  if lm_head_scale is not None:
    with torch.no_grad():
      model.lm_head.weight.mul_(lm_head_scale)
  model = model.to(getattr(torch, dtype))
  path.mkdir(parents=True, exist_ok=True)
  model.save_pretrained(path, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
  tokenizer.save(str(path / "tokenizer.json"))
  return model


def llava_hf_config(*, image_token_id: int, pad_token_id: int, text: dict, vision: dict, **llava: Any):
  """transformers' LlavaConfig of a Llama decoder (`text`: LlamaConfig fields) and a CLIP ViT
  (`vision`: CLIPVisionConfig fields), LLaVA-1.5's feature layer (-2) and projector."""
  import transformers
  return transformers.LlavaConfig(
      vision_config=transformers.CLIPVisionConfig(patch_size=14, hidden_act="quick_gelu", **vision),
      text_config=transformers.LlamaConfig(bos_token_id=1, eos_token_id=2, pad_token_id=pad_token_id, **text),
      image_token_id=image_token_id, vision_feature_layer=-2, vision_feature_select_strategy="default",
      projector_hidden_act="gelu", pad_token_id=pad_token_id, **llava)


def qwen_hf_config(*, vocab: int, token_ids: dict[str, int], text_layers: int = 3, text_hidden: int = 64,
                   heads: int = 4, kv_heads: int = 2, vision_depth: int = 4, vision_hidden: int = 32,
                   vision_heads: int = 2, intermediate: int | None = None, tied: bool = False):
  """A small transformers Qwen2_5_VLConfig (window attention over 4x4-token windows, full attention at
  block 1 and the last); token_ids: the ids of bos, eos, pad, image, video, vision_start, vision_end."""
  import transformers
  return transformers.Qwen2_5_VLConfig(
      text_config=dict(vocab_size=vocab, hidden_size=text_hidden, intermediate_size=intermediate or 3 * text_hidden // 2,
                       num_hidden_layers=text_layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                       rms_norm_eps=1e-6, max_position_embeddings=4096, bos_token_id=token_ids["bos"],
                       eos_token_id=token_ids["eos"], pad_token_id=token_ids["pad"],
                       rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                        "mrope_section": [text_hidden // heads // 8, 3 * text_hidden // heads // 16,
                                                          3 * text_hidden // heads // 16]}),
      vision_config=dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=3 * vision_hidden // 2,
                         num_heads=vision_heads, out_hidden_size=text_hidden, fullatt_block_indexes=[1, vision_depth - 1],
                         window_size=112),
      image_token_id=token_ids["image"], video_token_id=token_ids["video"],
      vision_start_token_id=token_ids["vision_start"], vision_end_token_id=token_ids["vision_end"],
      tie_word_embeddings=tied)


def hf_patches(pixels: np.ndarray, patch_size: int = 14, merge_size: int = 2, temporal_patch_size: int = 2) -> np.ndarray:
  """An image [H, W, C] (as preprocess_qwen_image gives it) in transformers' Qwen2.5-VL pixel_values
  layout: [H W / 196, C x temporal x 14 x 14], patches in 2 x 2 merge-block order, the frame repeated
  in time."""
  h, w, c = pixels.shape
  gh, gw = h // patch_size, w // patch_size
  x = pixels.transpose(2, 0, 1).reshape(c, gh // merge_size, merge_size, patch_size, gw // merge_size,
                                        merge_size, patch_size)
  x = x.transpose(1, 4, 2, 5, 0, 3, 6)[:, :, :, :, :, None]
  x = np.broadcast_to(x, x.shape[:5] + (temporal_patch_size,) + x.shape[6:])
  return np.ascontiguousarray(x).reshape(gh * gw, c * temporal_patch_size * patch_size * patch_size)
