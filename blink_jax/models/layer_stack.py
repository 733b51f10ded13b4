"""A stack of identical layers, run over any sub-range, in one of two param layouts.

`stacked` (the default; training and TPUs): every weight is one array with a leading `layers` axis,
created by `nn.scan` (so every leaf carries the `layers` logical axis), and the forward pass runs
`lax.scan` over the layer indices of the range, indexing each layer's weights in the loop: one layer
body to compile. `per_layer` (MaxText's scan_layers=False): params `layer_0` .. `layer_{n-1}`, one
array per layer and weight, and the range is unrolled. A loop over a stack indexes its weights with a
dynamic-slice, which XLA:CPU copies out of the stack before the dots read them: in a decoding step,
where every weight is read once for a few tokens, those copies cost most of the step. Separate arrays
are read in place (docs/benchmarks.md, "Generation").

Running a sub-range is what lets the vision tower stop at its feature layer and Blink run the layers
before, during and after scanning on different token layouts, all from one param tree.

Per-layer inputs and outputs ("per-layer trees") follow the layout: arrays with a leading layer axis
(stacked), or Python lists with one entry per layer (per_layer), which `layer_slice` indexes alike.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

LAYOUTS = ("auto", "stacked", "per_layer")


def resolve_layout(name: str, platform: str, training: bool = False) -> str:
  """The layout `name` stands for: 'auto' is per_layer for inference on CPU (where decoding reads the
  weights in place: docs/benchmarks.md) and stacked otherwise (training scans its layers; on TPUs the
  AOT-measured programs hold one layer body)."""
  if name not in LAYOUTS:
    raise ValueError(f"layer_layout={name!r} is unknown; expected one of {LAYOUTS}")
  if training and name == "per_layer":
    raise ValueError("layer_layout='per_layer' is for inference: training scans its layers (stacked "
                     "params, one layer body to compile and remat); use 'stacked' or 'auto'")
  if name == "auto":
    return "per_layer" if platform == "cpu" and not training else "stacked"
  return name


class StackedLayers(nn.Module):
  """Holds `num_layers` copies of `layer` (a detached module used as a template).

  Call with `start`/`stop` (static) to run that range. `carry` is threaded through the layers;
  `xs` (a per-layer tree over the range, or None) is fed per layer; each layer returns (carry, y) and
  the ys come back as a per-layer tree of the range.
  """
  layer: nn.Module
  num_layers: int
  remat: bool = False
  per_layer: bool = False

  def _init_layers(self, carry, xs, kwargs):
    layer_cls = type(self.layer)
    attrs = {f.name: getattr(self.layer, f.name) for f in self.layer.__dataclass_fields__.values()
             if f.init and f.name not in ("parent", "name")}
    if self.per_layer:
      return run_range(lambda c, i, x: layer_cls(**attrs, name=f"layer_{i}")(c, x, **kwargs), carry, xs, 0,
                       self.num_layers, per_layer=True)

    def body(mdl, c, x):
      return mdl(c, x, **kwargs)
    scanned = nn.scan(body, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=0, length=self.num_layers,
                      metadata_params={nn.PARTITION_NAME: "layers"})
    return scanned(layer_cls(**attrs, name="layers"), carry, xs)

  @nn.compact
  def __call__(self, carry: Any, xs: Any = None, *, start: int = 0, stop: int | None = None,
               **kwargs: Any):
    stop = self.num_layers if stop is None else stop
    if not 0 <= start <= stop <= self.num_layers:
      raise ValueError(f"layer range [{start}, {stop}) outside [0, {self.num_layers})")
    if self.is_initializing():
      return self._init_layers(carry, xs, kwargs)
    template = self.layer

    def body(c, i, x):
      return template.apply({"params": layer_params(self.variables["params"], i)}, c, x, **kwargs)

    if self.remat:   # unrolled, the layer index is a Python int
      body = jax.checkpoint(body, policy=jax.checkpoint_policies.nothing_saveable,
                            static_argnums=(1,) if self.per_layer else ())
    return run_range(body, carry, xs, start, stop, self.per_layer)


def run_range(body: Callable[[Any, Any, Any], tuple[Any, Any]], carry: Any, xs: Any, start: int, stop: int,
              per_layer: bool) -> tuple[Any, Any]:
  """carry, ys from body(carry, i, x_i) over layers i in [start, stop): a `lax.scan` over traced indices
  (stacked), or a Python loop over int indices (per_layer; ys then a per-layer tree of lists). xs is
  a per-layer tree over the range, or None."""
  if not per_layer:
    return jax.lax.scan(lambda c, ix: body(c, ix[0], ix[1]), carry, (jnp.arange(start, stop), xs))
  ys = []
  for i in range(start, stop):
    carry, y = body(carry, i, layer_slice(xs, i - start))
    ys.append(y)
  return carry, per_layer_tree(ys)


def layer_params(params: Any, i: Any) -> Any:
  """Layer i's params from a StackedLayers' params, in either layout (i may be traced when stacked)."""
  if not is_per_layer(params):
    return jax.tree.map(lambda w: jax.lax.dynamic_index_in_dim(w, i, keepdims=False), params["layers"])
  return params[f"layer_{i}"]


def per_layer_params(params: Any) -> Any:
  """A StackedLayers' params in the per_layer layout (from either layout)."""
  if is_per_layer(params):
    return params
  n = jax.tree.leaves(params["layers"])[0].shape[0]
  return {f"layer_{i}": layer_params(params, i) for i in range(n)}


def stacked_params(params: Any) -> Any:
  """A StackedLayers' params in the stacked layout (from either layout)."""
  if not is_per_layer(params):
    return params
  layers = [params[f"layer_{i}"] for i in range(len(params))]
  return {"layers": jax.tree.map(lambda *ws: jnp.stack(ws), *layers)}


def is_per_layer(params: Any) -> bool:
  """Whether a StackedLayers' params are in the per_layer layout."""
  return "layers" not in params


def layer_slice(tree: Any, i: Any) -> Any:
  """Entry i of a per-layer tree (leaves stacked on a leading axis, or lists of per-layer leaves)."""
  return jax.tree.map(lambda x: x[i], tree, is_leaf=lambda x: isinstance(x, list))


def per_layer_tree(ys: list[Any]) -> Any:
  """Per-layer outputs [y_0, y_1, ..] as one tree whose leaves are lists (the per_layer layout's
  per-layer tree); None if the layers output None."""
  return jax.tree.map(lambda *leaves: list(leaves), *ys) if ys and ys[0] is not None else None


def stack(tree: Any) -> Any:
  """A per-layer tree with leaves stacked on a leading axis (lists are stacked; arrays kept)."""
  return jax.tree.map(lambda x: jnp.stack(x) if isinstance(x, list) else x, tree,
                      is_leaf=lambda x: isinstance(x, list))


def detached(cls: Callable[..., nn.Module], *args: Any, **kwargs: Any) -> nn.Module:
  """Builds a module with no parent, for use as a StackedLayers template."""
  return cls(*args, parent=None, **kwargs)
