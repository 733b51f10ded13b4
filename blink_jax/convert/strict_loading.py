"""Strict loading of Hugging Face safetensors into Flax params, shared by every model family's loader.

Every Flax leaf has an explicit source: one HF tensor name (or one per layer for stacked layers) and a
small reversible transform (transpose, head reshape). Loading is strict: missing HF tensors, unused
HF tensors and shape mismatches are all collected and reported together. Each leaf is built with
`jax.make_array_from_callback`, so every device takes only its own shard (from the memory-mapped
file locally; from one fetch of the tensor per host on gs://, see safetensors_reader.py).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from blink_jax import sharding as shd
from blink_jax.convert.safetensors_reader import SafetensorsCheckpoint

# HF tensors that carry no weights of ours (buffers some exporters write).
IGNORED_HF_KEYS = (r".*rotary_emb\.inv_freq$", r".*position_ids$")


@dataclasses.dataclass(frozen=True)
class Source:
  names: tuple[str, ...]          # one HF tensor, or one per layer (stacked along axis 0)
  transform: Callable[[np.ndarray], np.ndarray]


def linear(w):       # torch Linear [out, in] -> Dense kernel [in, out]
  return w.T


def identity(w):
  return w


def heads_in(heads: int, head_dim: int):   # [H*Dh, in] -> [in, H, Dh]
  return lambda w: w.T.reshape(w.shape[1], heads, head_dim)


def heads_bias(heads: int, head_dim: int):
  return lambda b: b.reshape(heads, head_dim)


def heads_out(heads: int, head_dim: int):  # [out, H*Dh] -> [H, Dh, out]
  return lambda w: w.T.reshape(heads, head_dim, w.shape[0])


def conv2d(w):         # torch Conv2d [out, in, kh, kw] -> flax [kh, kw, in, out]
  return w.transpose(2, 3, 1, 0)


def layer_norm(prefix: str) -> dict[str, Source]:
  return {"scale": Source((f"{prefix}.weight",), identity), "bias": Source((f"{prefix}.bias",), identity)}


def per_layer(sources: dict, n: int) -> dict:
  """Turns a per-layer source tree with '{i}' in names into stacked sources over n layers."""
  def stack(src: Source) -> Source:
    return Source(tuple(name.format(i=i) for i in range(n) for name in src.names), src.transform)
  return jax.tree.map(stack, sources, is_leaf=lambda x: isinstance(x, Source))


def layer_stack(sources: dict, n: int, layout: str) -> dict:
  """A StackedLayers' sources from a per-layer source tree with '{i}' in names, in the params layout
  (layer_stack.py): {"layers": stacked sources} or {"layer_0": layer 0's sources, ...}."""
  if layout == "stacked":
    return {"layers": per_layer(sources, n)}
  one = lambda i: jax.tree.map(lambda src: Source(tuple(name.format(i=i) for name in src.names), src.transform),  # noqa: E731
                               sources, is_leaf=lambda x: isinstance(x, Source))
  return {f"layer_{i}": one(i) for i in range(n)}


def dense(prefix: str, bias: bool = True) -> dict[str, Source]:
  """A torch Linear's weight (and bias) as a Linear's kernel [in, out] (and bias)."""
  out = {"kernel": Source((f"{prefix}.weight",), linear)}
  if bias:
    out["bias"] = Source((f"{prefix}.bias",), identity)
  return out


def llama_sources(t, lm: str, head: str, layout: str) -> dict:
  """The Llama-family decoder's sources (llama.Llama; t its TextConfig) under the key prefixes `lm`
  (embeddings, layers, norm) and `head` (the LM head, absent when tied to the embeddings), its layers
  in the params `layout` (stacked | per_layer)."""
  ll = f"{lm}.layers.{{i}}"

  def attn_proj(name, heads):
    out = {"kernel": Source((f"{ll}.self_attn.{name}.weight",), heads_in(heads, t.head_dim))}
    if t.attention_bias:
      out["bias"] = Source((f"{ll}.self_attn.{name}.bias",), heads_bias(heads, t.head_dim))
    return out

  text_layer = {
      "input_layernorm": {"scale": Source((f"{ll}.input_layernorm.weight",), identity)},
      "post_attention_layernorm": {"scale": Source((f"{ll}.post_attention_layernorm.weight",), identity)},
      "self_attn": {
          "q_proj": attn_proj("q_proj", t.num_heads),
          "k_proj": attn_proj("k_proj", t.num_kv_heads),
          "v_proj": attn_proj("v_proj", t.num_kv_heads),
          "o_proj": {"kernel": Source((f"{ll}.self_attn.o_proj.weight",), heads_out(t.num_heads, t.head_dim))},
      },
      "mlp": {n: dense(f"{ll}.mlp.{n}", bias=False) for n in ("gate_proj", "up_proj", "down_proj")},
  }
  language = {
      "embed_tokens": {"embedding": Source((f"{lm}.embed_tokens.weight",), identity)},
      "layers": layer_stack(text_layer, t.num_layers, layout),
      "norm": {"scale": Source((f"{lm}.norm.weight",), identity)},
  }
  if not t.tie_word_embeddings:
    language["lm_head"] = dense(head, bias=False)
  return language


def detect_prefixes(ckpt: SafetensorsCheckpoint, prefixes: Mapping[str, Sequence[str]], probes: Mapping[str, str],
                    required: str, model_name: str) -> dict[str, str]:
  """The key prefix of each component (prefixes: its candidates, the hub's first; probes: a tensor
  every layout has under it). A component with no tensors at all keeps the hub's prefix, so the strict
  check reports its tensors as missing; none of the `required` component's is an error."""
  found = {}
  for part, candidates in prefixes.items():
    hits = [c for c in candidates if f"{c}.{probes[part]}" in ckpt]
    found[part] = hits[0] if hits else candidates[0]
  if not any(f"{c}.{probes[required]}" in ckpt for c in prefixes[required]):
    raise ValueError(f"{ckpt.dir}: no {model_name} {required} tensors (looked for "
                     f"{[c + '.' + probes[required] for c in prefixes[required]]}); "
                     f"first keys: {ckpt.keys()[:5]}")
  return found


def key_matches(key: str, patterns: Sequence[str]) -> bool:
  return any(re.fullmatch(p, key) for p in patterns)


def load_params(ckpt: SafetensorsCheckpoint, sources: Any, boxed: Any, partitioner: shd.Partitioner | None,
                param_dtype: str, dont_load: Sequence[str], model_name: str) -> Any:
  """The params `sources` (a tree shaped like the params, of Source) describe, checked against the
  model's boxed abstract params and placed in `partitioner`'s shardings (default: the first device).
  `dont_load`: regexes of Flax param paths ('language_model/norm/scale') left out of the result
  instead of failing when the checkpoint lacks them."""
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
      if not key_matches(flax_path, dont_load):
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
  unused = [k for k in ckpt.keys() if k not in used and not key_matches(k, IGNORED_HF_KEYS)]
  problems = []
  if missing:
    problems.append(f"missing tensors ({len(missing)}): {missing[:20]}")
  if unused:
    problems.append(f"unused tensors ({len(unused)}): {unused[:20]}")
  if mismatched:
    problems.append("shape mismatches:\n  " + "\n  ".join(mismatched[:20]))
  if problems:
    raise ValueError(f"{ckpt.dir}: checkpoint does not match the {model_name} config in config.json:\n"
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
  return traverse_util.unflatten_dict(
      {tuple(str(k.key) for k in path): build(path, src) for path, src in plan.items()})
