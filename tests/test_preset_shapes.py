"""The LLaVA-1.5-7B / -13B and Qwen2.5-VL-3B / -7B presets (their published config.json), checked at
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


@pytest.mark.parametrize("name, layers, width, params", [("llava-1.5-7b", 32, 4096, (7.0e9, 7.1e9)),
                                                         ("llava-1.5-13b", 40, 5120, (13.3e9, 13.4e9))])
def test_preset_param_count_and_every_tensor_shape_match_transformers(name, layers, width, params):
  hf_cfg = presets.HF_CONFIGS[name]
  cfg = presets.get(name)
  assert cfg == from_hf_config(hf_cfg)
  assert (cfg.text.num_layers, cfg.text.hidden_size, cfg.num_image_tokens) == (layers, width, 576)
  abstract = nn.meta.unbox(hf_llava.abstract_params(cfg))
  ours = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))

  with torch.device("meta"):
    model = transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(**{
        k: v for k, v in hf_cfg.items() if k not in ("architectures", "model_type")}))
  hf_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
  assert ours == sum(int(np.prod(s)) for s in hf_shapes.values())
  assert params[0] < ours < params[1]

  sources = hf_llava.hf_sources(cfg, {"vision": "model.vision_tower",
                                      "projector": "model.multi_modal_projector",
                                      "language": "model.language_model", "lm_head": "lm_head"})
  _check_every_tensor(sources, abstract, hf_shapes)


@pytest.mark.parametrize("name, layers, width, params", [("qwen2.5-vl-3b", 36, 2048, (3.7e9, 3.8e9)),
                                                         ("qwen2.5-vl-7b", 28, 3584, (8.2e9, 8.3e9))])
def test_qwen_preset_every_tensor_shape_matches_transformers(name, layers, width, params):
  hf_cfg = presets.HF_CONFIGS[name]
  cfg = presets.get(name)
  assert (cfg.text.num_layers, cfg.text.hidden_size) == (layers, width)
  abstract = nn.meta.unbox(hf_qwen2_5_vl.abstract_params(cfg))
  ours = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
  with torch.device("meta"):
    model = transformers.Qwen2_5_VLForConditionalGeneration(transformers.Qwen2_5_VLConfig(**{
        k: v for k, v in hf_cfg.items() if k not in ("architectures", "model_type")}))
  hf_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
  if cfg.text.tie_word_embeddings:   # the head is the embedding: one tensor, listed twice by torch
    del hf_shapes["lm_head.weight"]
  assert ours == sum(int(np.prod(s)) for s in hf_shapes.values())
  assert params[0] < ours < params[1]
  sources = hf_qwen2_5_vl.hf_sources(cfg, {"vision": "model.visual", "language": "model.language_model",
                                           "lm_head": "lm_head"})
  _check_every_tensor(sources, abstract, hf_shapes)
