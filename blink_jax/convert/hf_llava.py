"""Loads a Hugging Face `LlavaForConditionalGeneration` checkpoint directory into Flax params.

Every Flax leaf has an explicit source: one HF tensor name (or one per layer for stacked layers) and a
small reversible transform (transpose, head reshape). Loading is strict: missing HF tensors, unused
HF tensors and shape mismatches are all collected and reported together. Each leaf is built with
`jax.make_array_from_callback`, so every device takes only its own shard (from the memory-mapped
file locally; from one fetch of the tensor per host on gs://, see safetensors_reader.py).

The key layouts of the hub's `llava-hf` files and of every transformers version's exports are
understood (see PREFIXES).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
from flax import traverse_util
import numpy as np
from etils import epath

from blink_jax import sharding as shd
from blink_jax.convert.safetensors_reader import SafetensorsCheckpoint
from blink_jax.models.llava import Llava
from blink_jax.models.llava_config import LlavaConfig, read_hf_config

# HF tensors that carry no weights of ours (buffers some exporters write).
IGNORED_HF_KEYS = (r".*rotary_emb\.inv_freq$", r".*position_ids$")


@dataclasses.dataclass(frozen=True)
class Source:
  names: tuple[str, ...]          # one HF tensor, or one per layer (stacked along axis 0)
  transform: Callable[[np.ndarray], np.ndarray]


def _linear(w):       # torch Linear [out, in] -> Dense kernel [in, out]
  return w.T


def _identity(w):
  return w


def _heads_in(heads: int, head_dim: int):   # [H*Dh, in] -> [in, H, Dh]
  return lambda w: w.T.reshape(w.shape[1], heads, head_dim)


def _heads_bias(heads: int, head_dim: int):
  return lambda b: b.reshape(heads, head_dim)


def _heads_out(heads: int, head_dim: int):  # [out, H*Dh] -> [H, Dh, out]
  return lambda w: w.T.reshape(heads, head_dim, w.shape[0])


def _conv(w):         # torch Conv2d [out, in, kh, kw] -> flax [kh, kw, in, out]
  return w.transpose(2, 3, 1, 0)


def _norm(prefix: str) -> dict[str, Source]:
  return {"scale": Source((f"{prefix}.weight",), _identity), "bias": Source((f"{prefix}.bias",), _identity)}


def _per_layer(sources: dict, n: int) -> dict:
  """Turns a per-layer source tree with '{i}' in names into stacked sources over n layers."""
  def stack(src: Source) -> Source:
    return Source(tuple(name.format(i=i) for i in range(n) for name in src.names), src.transform)
  return jax.tree.map(stack, sources, is_leaf=lambda x: isinstance(x, Source))


def hf_sources(cfg: LlavaConfig, prefixes: dict[str, str]) -> dict:
  """The source of every Flax param leaf, as a tree shaped like the params."""
  vt, mm, lm, head = (prefixes[k] for k in ("vision", "projector", "language", "lm_head"))
  v, t = cfg.vision, cfg.text
  vl = f"{vt}.encoder.layers.{{i}}"
  vh = (v.num_heads, v.head_dim)

  def attn_proj(name):
    return {"kernel": Source((f"{vl}.self_attn.{name}.weight",), _heads_in(*vh)),
            "bias": Source((f"{vl}.self_attn.{name}.bias",), _heads_bias(*vh))}

  def dense(prefix, bias=True):
    out = {"kernel": Source((f"{prefix}.weight",), _linear)}
    if bias:
      out["bias"] = Source((f"{prefix}.bias",), _identity)
    return out

  vision_layer = {
      "layer_norm1": _norm(f"{vl}.layer_norm1"), "layer_norm2": _norm(f"{vl}.layer_norm2"),
      "q_proj": attn_proj("q_proj"), "k_proj": attn_proj("k_proj"), "v_proj": attn_proj("v_proj"),
      "out_proj": {"kernel": Source((f"{vl}.self_attn.out_proj.weight",), _heads_out(*vh)),
                   "bias": Source((f"{vl}.self_attn.out_proj.bias",), _identity)},
      "fc1": dense(f"{vl}.mlp.fc1"), "fc2": dense(f"{vl}.mlp.fc2"),
  }
  ll = f"{lm}.layers.{{i}}"
  text_layer = {
      "input_layernorm": {"scale": Source((f"{ll}.input_layernorm.weight",), _identity)},
      "post_attention_layernorm": {"scale": Source((f"{ll}.post_attention_layernorm.weight",), _identity)},
      "self_attn": {
          "q_proj": {"kernel": Source((f"{ll}.self_attn.q_proj.weight",), _heads_in(t.num_heads, t.head_dim))},
          "k_proj": {"kernel": Source((f"{ll}.self_attn.k_proj.weight",), _heads_in(t.num_kv_heads, t.head_dim))},
          "v_proj": {"kernel": Source((f"{ll}.self_attn.v_proj.weight",), _heads_in(t.num_kv_heads, t.head_dim))},
          "o_proj": {"kernel": Source((f"{ll}.self_attn.o_proj.weight",), _heads_out(t.num_heads, t.head_dim))},
      },
      "mlp": {n: dense(f"{ll}.mlp.{n}", bias=False) for n in ("gate_proj", "up_proj", "down_proj")},
  }
  language = {
      "embed_tokens": {"embedding": Source((f"{lm}.embed_tokens.weight",), _identity)},
      "layers": {"layers": _per_layer(text_layer, t.num_layers)},
      "norm": {"scale": Source((f"{lm}.norm.weight",), _identity)},
  }
  if not t.tie_word_embeddings:
    language["lm_head"] = dense(head, bias=False)
  return {
      "vision_tower": {
          "patch_embedding": {"kernel": Source((f"{vt}.embeddings.patch_embedding.weight",), _conv)},
          "class_embedding": Source((f"{vt}.embeddings.class_embedding",), _identity),
          "position_embedding": Source((f"{vt}.embeddings.position_embedding.weight",), _identity),
          "pre_layrnorm": _norm(f"{vt}.pre_layrnorm"),
          "post_layernorm": _norm(f"{vt}.post_layernorm"),
          "layers": {"layers": _per_layer(vision_layer, v.num_layers)},
      },
      "multi_modal_projector": {"linear_1": dense(f"{mm}.linear_1", cfg.projector_bias),
                                "linear_2": dense(f"{mm}.linear_2", cfg.projector_bias)},
      "language_model": language,
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
  """The key prefix of each component in this checkpoint. A component with no tensors at all keeps
  the hub's prefix, so the strict check below reports its tensors as missing."""
  found = {}
  for part, candidates in PREFIXES.items():
    hits = [c for c in candidates if f"{c}.{_PROBE[part]}" in ckpt]
    found[part] = hits[0] if hits else candidates[0]
  if not any(f"{c}.{_PROBE['language']}" in ckpt for c in PREFIXES["language"]):
    raise ValueError(f"{ckpt.dir}: no LLaVA language-model tensors (looked for "
                     f"{[c + '.' + _PROBE['language'] for c in PREFIXES['language']]}); "
                     f"first keys: {ckpt.keys()[:5]}")
  return found


def abstract_params(cfg: LlavaConfig) -> Any:
  """Boxed (logically annotated) param shapes of the whole model, without allocating anything."""
  model = Llava(cfg)
  v = cfg.vision
  ids = jax.ShapeDtypeStruct((1, 8), np.int32)
  pixels = jax.ShapeDtypeStruct((1, v.image_size, v.image_size, v.num_channels), np.float32)
  pos = jax.ShapeDtypeStruct((1, 8), np.int32)
  valid = jax.ShapeDtypeStruct((1, 8), np.bool_)
  return jax.eval_shape(model.init, jax.random.key(0), ids, pixels, pos, valid)["params"]


def _key_matches(key: str, patterns: Sequence[str]) -> bool:
  return any(re.fullmatch(p, key) for p in patterns)


def load_hf_llava(ckpt_dir: str | epath.PathLike, *, partitioner: shd.Partitioner | None = None,
                  dtype: str = "float32", param_dtype: str = "float32",
                  remat: bool = False, attention: str = "auto",
                  dont_load: Sequence[str] = ()) -> tuple[LlavaConfig, Any]:
  """(config, params) from an HF LLaVA directory, params placed in their logical shardings by
  `partitioner` (default: all on the first device).

  `dont_load`: regexes of Flax param paths ('language_model/norm/scale') that are left out of the
  result instead of failing when the checkpoint lacks them.
  """
  cfg = read_hf_config(ckpt_dir, dtype=dtype, param_dtype=param_dtype, remat=remat, attention=attention)
  ckpt = SafetensorsCheckpoint(ckpt_dir)
  sources = hf_sources(cfg, detect_prefixes(ckpt))
  boxed = abstract_params(cfg)
  shardings = (partitioner or shd.Partitioner.single_device()).shardings(boxed)
  abstract = nn.meta.unbox(boxed)
  target = np.dtype(param_dtype)

  missing, mismatched, used = [], [], set()
  flat_src = jax.tree_util.tree_flatten_with_path(sources, is_leaf=lambda x: isinstance(x, Source))[0]
  flat_abs = dict(jax.tree_util.tree_flatten_with_path(abstract)[0])
  plan = {}
  for path, src in flat_src:
    flax_path = "/".join(str(getattr(k, "key", k)) for k in path)
    if path not in flat_abs:
      raise AssertionError(f"loader maps {flax_path}, which the model does not have")
    shape = flat_abs[path].shape
    absent = [n for n in src.names if n not in ckpt]
    if absent:
      # The leaf cannot be built, but its other tensors (the other layers') are not "unused".
      used.update(n for n in src.names if n in ckpt)
      if not _key_matches(flax_path, dont_load):
        missing.extend(absent)
      continue
    per_layer = shape[1:] if len(src.names) > 1 else shape
    for n in src.names:  # shapes only: nothing is read
      got = jax.eval_shape(src.transform, jax.ShapeDtypeStruct(ckpt.shape(n), np.float32)).shape
      if got != per_layer:
        mismatched.append(f"{n}: checkpoint {ckpt.shape(n)} -> {got}, model expects {per_layer} "
                          f"({flax_path})")
    used.update(src.names)
    plan[path] = src
  unused = [k for k in ckpt.keys() if k not in used and not _key_matches(k, IGNORED_HF_KEYS)]
  problems = []
  if missing:
    problems.append(f"missing tensors ({len(missing)}): {missing[:20]}")
  if unused:
    problems.append(f"unused tensors ({len(unused)}): {unused[:20]}")
  if mismatched:
    problems.append("shape mismatches:\n  " + "\n  ".join(mismatched[:20]))
  if problems:
    raise ValueError(f"{ckpt.dir}: checkpoint does not match the LLaVA config in config.json:\n"
                     + "\n".join(problems))

  flat_shardings = dict(jax.tree_util.tree_flatten_with_path(shardings)[0])

  def build(path, src: Source):
    shape = flat_abs[path].shape
    stacked = len(src.names) > 1

    def shard(index):
      if stacked:
        layers = range(shape[0])[index[0]]
        return np.stack([np.asarray(src.transform(ckpt.get(src.names[i]))[index[1:]], target)
                         for i in layers])
      return np.asarray(src.transform(ckpt.get(src.names[0]))[index], target)

    if not ckpt.memory_mapped:
      # Remote: fetch the leaf once per host and cut each local device's shard from it (shard by
      # shard, every device would fetch every tensor it overlaps).
      whole = shard(tuple(slice(None) for _ in shape))
      return jax.make_array_from_callback(shape, flat_shardings[path], lambda index: whole[index])
    return jax.make_array_from_callback(shape, flat_shardings[path], shard)

  # Params are nested dicts; leaves left out by `dont_load` are simply absent.
  return cfg, traverse_util.unflatten_dict(
      {tuple(str(k.key) for k in path): build(path, src) for path, src in plan.items()})
