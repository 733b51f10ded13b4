"""TokenSR: super-resolves a p x p grid of LLM hidden states into a 2p x 2p grid (BLINK_SPEC §5),
and the bilinear 2x upsampling that is both its skip path and Blink-interp.

conv1x1 (D->C) -> ReLU -> conv3x3 (C->4C) + pixel shuffle x2 -> ReLU -> conv1x1 (C->D), added to
bilinear_2x(x). The last conv starts at zero, so an untrained TokenSR is exactly Blink-interp.
`arch="mlp"` (the paper's named future work) makes the expansion 1x1: each token is super-resolved
from itself alone, a per-token MLP.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from blink_jax import sharding as shd
from blink_jax.models.layer_stack import StackedLayers, detached


def bilinear_2x(x: jax.Array) -> jax.Array:
  """[..., p, p, D] -> [..., 2p, 2p, D], bilinear with half-pixel centres, in float32."""
  *lead, h, w, d = x.shape
  flat = x.reshape((-1, h, w, d)).astype(jnp.float32)
  up = jax.image.resize(flat, (flat.shape[0], 2 * h, 2 * w, d), method="bilinear", antialias=False)
  return up.reshape((*lead, 2 * h, 2 * w, d)).astype(x.dtype)


def pixel_shuffle_2x(x: jax.Array) -> jax.Array:
  """[N, h, w, 4C] -> [N, 2h, 2w, C] (depth-to-space, channel order (dy, dx, C))."""
  n, h, w, c4 = x.shape
  c = c4 // 4
  x = x.reshape(n, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, 2 * h, 2 * w, c)


# The expansion's kernel size per architecture (BlinkConfig.token_sr_arch).
KERNELS = {"conv": 3, "mlp": 1}


class TokenSRLayer(nn.Module):
  """One scanning layer's TokenSR: region grids x [N, p, p, D] -> [N, 2p, 2p, D] (carry unused)."""
  channels: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  arch: str = "conv"

  @nn.compact
  def __call__(self, carry, x):
    d, c = x.shape[-1], self.channels

    def conv(feats, k, axes, name, init=nn.initializers.lecun_normal()):
      return nn.Conv(feats, (k, k), padding="SAME", dtype=self.dtype, param_dtype=self.param_dtype,
                     kernel_init=nn.with_logical_partitioning(init, (None, None) + axes),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]),
                     name=name)

    h = nn.relu(conv(c, 1, ("embed", "mlp"), "reduce")(x))
    h = nn.relu(pixel_shuffle_2x(conv(4 * c, KERNELS[self.arch], ("mlp", None), "expand")(h)))
    h = conv(d, 1, ("mlp", "embed"), "project", nn.initializers.zeros)(h)
    return carry, bilinear_2x(x) + h.astype(x.dtype)


class TokenSR(nn.Module):
  """One TokenSRLayer per scanning layer, stacked on the `layers` axis. Call with `layer=i` (static)
  to run the i-th; at init every layer is created."""
  num_layers: int
  channels: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  arch: str = "conv"

  @nn.compact
  def __call__(self, x, layer: int = 0):
    stack = StackedLayers(detached(TokenSRLayer, self.channels, self.dtype, self.param_dtype, self.arch),
                          self.num_layers, name="layers")
    if self.is_initializing():
      _, out = stack(None, jnp.broadcast_to(x, (self.num_layers,) + x.shape))
      return out[layer]
    _, out = stack(None, x[None], start=layer, stop=layer + 1)
    return out[0]


def layer_for(blink, cfg) -> TokenSRLayer:
  """One scanning layer's TokenSR module for a BlinkConfig (channels, architecture) at a model
  config's dtypes, to apply with one layer's params (Blink's prefill, the distillation loss)."""
  return detached(TokenSRLayer, blink.token_sr_channels, jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype),
                  blink.token_sr_arch)


def _init_fn(num_layers, channels, region_size, width, dtype, param_dtype, arch):
  module = TokenSR(num_layers, channels, dtype, param_dtype, arch)
  x = jnp.zeros((1, region_size, region_size, width), dtype)
  return lambda r: module.init(r, x)["params"]


def token_sr_shardings(num_layers: int, channels: int, region_size: int, width: int,
                       partitioner: shd.Partitioner, param_dtype=jnp.float32, arch: str = "conv"):
  """NamedShardings of the TokenSR params from their logical axes."""
  init = _init_fn(num_layers, channels, region_size, width, jnp.float32, param_dtype, arch)
  return partitioner.shardings(jax.eval_shape(init, jax.random.key(0)))


def init_token_sr(num_layers: int, channels: int, region_size: int, width: int, rng: jax.Array, *,
                  partitioner: shd.Partitioner | None = None, dtype=jnp.float32, param_dtype=jnp.float32,
                  arch: str = "conv", abstract: bool = False):
  """TokenSR params ({'layers': {'layers': ...}}), created directly in their shardings when a
  sharding.Partitioner is given (with `abstract`, only their shapes: see sharding.create).
  Untrained (last conv zero): equal to Blink-interp."""
  init = _init_fn(num_layers, channels, region_size, width, dtype, param_dtype, arch)
  if partitioner is None:
    return nn.meta.unbox(init(rng))
  shardings = token_sr_shardings(num_layers, channels, region_size, width, partitioner, param_dtype, arch)
  return shd.create(lambda r: nn.meta.unbox(init(r)), shardings, rng, abstract=abstract)


def init_for(blink, cfg, rng: jax.Array, *, partitioner: shd.Partitioner | None = None, abstract: bool = False):
  """init_token_sr for a BlinkConfig's scanning layers, channels and region size at a LlavaConfig's
  width and dtypes: the one call train, the pipeline and bench make."""
  return init_token_sr(blink.num_scan_layers, blink.token_sr_channels, blink.region_size, cfg.text.hidden_size,
                       rng, partitioner=partitioner, dtype=jnp.dtype(cfg.dtype),
                       param_dtype=jnp.dtype(cfg.param_dtype), arch=blink.token_sr_arch, abstract=abstract)
