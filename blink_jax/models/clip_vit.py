"""The CLIP ViT vision tower of LLaVA (pre-LN, quick_gelu), returning patch features of a chosen layer."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from blink_jax.models.attention_kernels import self_attention
from blink_jax.models.layer_stack import StackedLayers, detached
from blink_jax.models.linear import WEIGHT_INIT, Linear
from blink_jax.models.llava_config import VisionConfig
from blink_jax.models.model_config import Numerics

ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
}


def activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f"activation {name!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def _dense(feats, axes, dtype, param_dtype, name, in_dims=1):
  feats = (feats,) if isinstance(feats, int) else feats
  return Linear(feats, axes, in_dims, use_bias=True, dtype=dtype, param_dtype=param_dtype, name=name)


def _layer_norm(eps, dtype, param_dtype, name):
  return nn.LayerNorm(epsilon=eps, dtype=dtype, param_dtype=param_dtype, name=name,
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))


class EncoderLayer(nn.Module):
  """carry = hidden [B, N, C]; no per-layer input."""
  cfg: VisionConfig
  numerics: Numerics = Numerics()

  @nn.compact
  def __call__(self, h, _):
    c, dt, pdt = self.cfg, self.numerics.dtype, self.numerics.param_dtype
    x = _layer_norm(c.layer_norm_eps, dt, pdt, "layer_norm1")(h)
    heads = (c.num_heads, c.head_dim)
    q = _dense(heads, ("embed", "heads", "head_dim"), dt, pdt, "q_proj")(x)
    k = _dense(heads, ("embed", "heads", "head_dim"), dt, pdt, "k_proj")(x)
    v = _dense(heads, ("embed", "heads", "head_dim"), dt, pdt, "v_proj")(x)
    a = self_attention(q, k, v, None, causal=False, implementation=self.numerics.attention)
    h = h + _dense(c.hidden_size, ("heads", "head_dim", "embed"), dt, pdt, "out_proj", 2)(a)
    x = _layer_norm(c.layer_norm_eps, dt, pdt, "layer_norm2")(h)
    x = _dense(c.intermediate_size, ("embed", "mlp"), dt, pdt, "fc1")(x)
    x = _dense(c.hidden_size, ("mlp", "embed"), dt, pdt, "fc2")(activation(c.hidden_act)(x))
    return h + x, None


class ClipVisionTower(nn.Module):
  """pixels [B, H, W, 3] (normalised, NHWC) -> hidden state after `num_layers_used` encoder layers,
  CLS dropped: [B, grid*grid, C]."""
  cfg: VisionConfig
  num_layers_used: int
  numerics: Numerics = Numerics()

  @nn.compact
  def __call__(self, pixels):
    c, dt, pdt = self.cfg, self.numerics.dtype, self.numerics.param_dtype
    if pixels.shape[1:] != (c.image_size, c.image_size, c.num_channels):
      raise ValueError(f"pixels have shape {pixels.shape}; the vision tower expects "
                       f"[B, {c.image_size}, {c.image_size}, {c.num_channels}]")
    patches = nn.Conv(c.hidden_size, (c.patch_size, c.patch_size), strides=c.patch_size,
                      padding="VALID", use_bias=False, dtype=dt, param_dtype=pdt,
                      kernel_init=nn.with_logical_partitioning(WEIGHT_INIT, (None, None, None, "embed")),
                      name="patch_embedding")(pixels.astype(dt))
    b = patches.shape[0]
    patches = patches.reshape(b, -1, c.hidden_size)
    cls = self.param("class_embedding", nn.with_logical_partitioning(WEIGHT_INIT, ("embed",)),
                     (c.hidden_size,), pdt)
    h = jnp.concatenate([jnp.broadcast_to(cls.astype(dt), (b, 1, c.hidden_size)), patches], axis=1)
    pos = self.param("position_embedding", nn.with_logical_partitioning(WEIGHT_INIT, (None, "embed")),
                     (c.num_patches + 1, c.hidden_size), pdt)
    h = h + pos.astype(dt)[None]
    h = _layer_norm(c.layer_norm_eps, dt, pdt, "pre_layrnorm")(h)
    h = nn.with_logical_constraint(h, ("act_batch", "act_len", "act_emb"))
    layers = StackedLayers(detached(EncoderLayer, c, self.numerics), c.num_layers, remat=self.numerics.remat,
                           name="layers")
    if self.is_initializing():
      # Create every layer's params and the (unused by LLaVA) post_layernorm, as the checkpoint has.
      full, _ = layers(h)
      _layer_norm(c.layer_norm_eps, dt, pdt, "post_layernorm")(full[:, 0])
    h, _ = layers(h, stop=self.num_layers_used)
    return h[:, 1:]
