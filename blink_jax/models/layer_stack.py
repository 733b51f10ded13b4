"""A stack of identical layers stored with a leading `layers` axis, run over any sub-range.

Params are created by `nn.scan` (so every leaf carries the `layers` logical axis); the forward pass
runs `lax.scan` over the layer indices of the range, indexing each layer's weights in the loop. Running a sub-range is what lets the
vision tower stop at its feature layer and Blink run the layers before, during and after scanning
on different token layouts, all from one param tree.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


class StackedLayers(nn.Module):
  """Holds `num_layers` copies of `layer` (a detached module used as a template).

  Call with `start`/`stop` (static) to run that range. `carry` is threaded through the layers;
  `xs` (a pytree with leading axis stop-start, or None) is fed per layer; each layer returns
  (carry, y) and the ys are stacked.
  """
  layer: nn.Module
  num_layers: int
  remat: bool = False

  def _init_scan(self, carry, xs, kwargs):
    def body(mdl, c, x):
      return mdl(c, x, **kwargs)
    layer_cls = type(self.layer)
    attrs = {f.name: getattr(self.layer, f.name) for f in self.layer.__dataclass_fields__.values()
             if f.init and f.name not in ("parent", "name")}
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
      return self._init_scan(carry, xs, kwargs)
    stacked = self.variables["params"]["layers"]
    template = self.layer

    def body(c, index_and_x):
      # Index layer i inside the loop: slicing the stack first would copy those layers' weights.
      i, x = index_and_x
      return template.apply({"params": layer_at(stacked, i)}, c, x, **kwargs)

    if self.remat:
      body = jax.checkpoint(body, policy=jax.checkpoint_policies.nothing_saveable)
    return jax.lax.scan(body, carry, (jnp.arange(start, stop), xs))


def layer_at(stacked: Any, i: Any) -> Any:
  """Layer i's params from a stack's params (leading `layers` axis); i may be traced (a loop index)."""
  return jax.tree.map(lambda w: jax.lax.dynamic_index_in_dim(w, i, keepdims=False), stacked)


def detached(cls: Callable[..., nn.Module], *args: Any, **kwargs: Any) -> nn.Module:
  """Builds a module with no parent, for use as a StackedLayers template."""
  return cls(*args, parent=None, **kwargs)
