"""A linear map whose kernel is created directly in its logical shape (e.g. [embed, heads, head_dim]),
so every param dimension carries its own logical axis name."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# The HF-style initialiser of every weight matrix and embedding (std = initializer_range 0.02).
WEIGHT_INIT = nn.initializers.normal(stddev=0.02)


class Linear(nn.Module):
  """Contracts the last `len(in_shape)` dims of x with a kernel [*in_shape, *features].

  `axes` names every kernel dim (inputs then outputs); the bias, if any, takes the output names.
  """
  features: Sequence[int]
  axes: Sequence[str | None]
  in_dims: int = 1
  use_bias: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    features = tuple(self.features)
    in_shape = x.shape[x.ndim - self.in_dims:]
    if len(self.axes) != len(in_shape) + len(features):
      raise ValueError(f"{self.name}: {len(self.axes)} axis names for a kernel of rank "
                       f"{len(in_shape) + len(features)}")
    kernel = self.param("kernel", nn.with_logical_partitioning(WEIGHT_INIT, tuple(self.axes)),
                        in_shape + features, self.param_dtype)
    contract = (tuple(range(x.ndim - self.in_dims, x.ndim)), tuple(range(self.in_dims)))
    y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype), (contract, ((), ())))
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                             tuple(self.axes[self.in_dims:])),
                        features, self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y
