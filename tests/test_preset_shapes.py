"""The LLaVA-1.5-7B / -13B and Qwen2.5-VL-3B / -7B (and -tiny) presets (their published config.json), checked at
zero memory with jax.eval_shape against transformers' model built on the meta device: every tensor's
shape."""

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
import transformers

from blink_jax.convert import hf_llava, hf_qwen2_5_vl, strict_loading
from blink_jax.models import presets
from blink_jax.models.llava_config import from_hf_config


def _check_every_tensor(sources, abstract, hf_shapes):
  """Every transformers tensor is some param leaf's source, transformed to that leaf's shape."""
  flat_src = jax.tree_util.tree_flatten_with_path(sources, is_leaf=lambda x: isinstance(x, strict_loading.Source))[0]
  flat_abs = dict(jax.tree_util.tree_flatten_with_path(abstract)[0])
  covered = set()
  for path, src in flat_src:
    shape = flat_abs[path].shape
    per_layer = shape[1:] if len(src.names) > 1 else shape
    for key in src.names:
      fake = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), hf_shapes[key], [0] * len(hf_shapes[key]))
      assert src.transform(fake).shape == per_layer, key
      covered.add(key)
  assert covered == set(hf_shapes)


def _transformers_shapes(name: str, model_cls, config_cls) -> dict[str, tuple[int, ...]]:
  """Every tensor's shape in transformers' model of preset `name`, built on the meta device (a tied
  head is the embedding: one tensor, listed once)."""
  hf_cfg = presets.HF_CONFIGS[name]
  with torch.device("meta"):
    model = model_cls(config_cls(**{k: v for k, v in hf_cfg.items() if k not in ("architectures", "model_type")}))
  shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
  if presets.get(name).text.tie_word_embeddings:
    del shapes["lm_head.weight"]
  return shapes


def _check_counts_and_shapes(name, abstract_params, hf_sources, prefixes, model_cls, config_cls, params):
  """Our param count equals transformers' and lies in `params`; every tensor maps onto its leaf."""
  cfg = presets.get(name)
  abstract = nn.meta.unbox(abstract_params(cfg))
  ours = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
  hf_shapes = _transformers_shapes(name, model_cls, config_cls)
  assert ours == sum(int(np.prod(s)) for s in hf_shapes.values())
  assert params[0] < ours < params[1]
  _check_every_tensor(hf_sources(cfg, prefixes), abstract, hf_shapes)


@pytest.mark.parametrize("name, layers, width, params", [("llava-1.5-7b", 32, 4096, (7.0e9, 7.1e9)),
                                                         ("llava-1.5-13b", 40, 5120, (13.3e9, 13.4e9))])
def test_preset_param_count_and_every_tensor_shape_match_transformers(name, layers, width, params):
  cfg = presets.get(name)
  assert cfg == from_hf_config(presets.HF_CONFIGS[name])
  assert (cfg.text.num_layers, cfg.text.hidden_size, cfg.num_image_tokens) == (layers, width, 576)
  _check_counts_and_shapes(name, hf_llava.abstract_params, hf_llava.hf_sources,
                           {"vision": "model.vision_tower", "projector": "model.multi_modal_projector",
                            "language": "model.language_model", "lm_head": "lm_head"},
                           transformers.LlavaForConditionalGeneration, transformers.LlavaConfig, params)


@pytest.mark.parametrize("name, layers, width, params", [("qwen2.5-vl-3b", 36, 2048, (3.7e9, 3.8e9)),
                                                         ("qwen2.5-vl-7b", 28, 3584, (8.2e9, 8.3e9)),
                                                         ("qwen2.5-vl-tiny", 6, 128, (2e5, 2e6))])
def test_qwen_preset_every_tensor_shape_matches_transformers(name, layers, width, params):
  cfg = presets.get(name)
  assert (cfg.text.num_layers, cfg.text.hidden_size) == (layers, width)
  _check_counts_and_shapes(name, hf_qwen2_5_vl.abstract_params, hf_qwen2_5_vl.hf_sources,
                           {"vision": "model.visual", "language": "model.language_model", "lm_head": "lm_head"},
                           transformers.Qwen2_5_VLForConditionalGeneration, transformers.Qwen2_5_VLConfig, params)
