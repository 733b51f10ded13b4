"""The full LLaVA-1.5-7B config, checked at zero memory with jax.eval_shape against transformers'
model built on the meta device."""

import flax.linen as nn
import jax
import numpy as np
import torch
import transformers

from blink_jax.convert import hf_llava
from blink_jax.models.llava_config import from_hf_config


def _hf_7b_config() -> dict:
  """config.json of llava-hf/llava-1.5-7b-hf (as published)."""
  return {
      "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
      "ignore_index": -100, "image_token_index": 32000, "pad_token_id": 32001,
      "projector_hidden_act": "gelu", "vision_feature_layer": -2,
      "vision_feature_select_strategy": "default",
      "text_config": {"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                      "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "torch_dtype": "float16",
                      "vocab_size": 32064},
      "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024, "image_size": 336,
                        "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24,
                        "patch_size": 14, "projection_dim": 768, "vocab_size": 32000},
  }


def test_7b_param_count_and_every_tensor_shape_match_transformers():
  hf_cfg = _hf_7b_config()
  cfg = from_hf_config(hf_cfg)
  assert (cfg.text.num_layers, cfg.text.hidden_size, cfg.num_image_tokens) == (32, 4096, 576)
  abstract = nn.meta.unbox(hf_llava.abstract_params(cfg))
  ours = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))

  with torch.device("meta"):
    model = transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(**{
        k: v for k, v in hf_cfg.items() if k not in ("architectures", "model_type")}))
  hf_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
  assert ours == sum(int(np.prod(s)) for s in hf_shapes.values())
  assert 7.0e9 < ours < 7.1e9

  sources = hf_llava.hf_sources(cfg, {"vision": "model.vision_tower",
                                      "projector": "model.multi_modal_projector",
                                      "language": "model.language_model", "lm_head": "lm_head"})
  flat_src = jax.tree_util.tree_flatten_with_path(sources, is_leaf=lambda x: isinstance(x, hf_llava.Source))[0]
  flat_abs = dict(jax.tree_util.tree_flatten_with_path(abstract)[0])
  covered = set()
  for path, src in flat_src:
    shape = flat_abs[path].shape
    per_layer = shape[1:] if len(src.names) > 1 else shape
    for name in src.names:
      fake = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), hf_shapes[name],
                                             [0] * len(hf_shapes[name]))
      assert src.transform(fake).shape == per_layer, name
      covered.add(name)
  assert covered == set(hf_shapes)
