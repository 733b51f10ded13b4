"""Device mesh and logical-axis sharding: modules name their axes, the config maps names to mesh axes.

Mesh axes are ("data", "fsdp", "tensor"). Params and activations are annotated with logical names
(`embed`, `mlp`, `heads`, ..., `act_batch`, ...); `DEFAULT_RULES` (overridable in config) map them.
A `Partitioner` holds the mesh and the rules together and makes every sharding from them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("act_batch", ("data", "fsdp")),
    ("act_len", None),
    ("act_emb", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("layers", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("vocab", "tensor"),
)


def make_mesh(shape: Mapping[str, int] | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over `devices` (default: all) with sizes per axis; one axis may be -1 (takes the rest)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = dict(shape or {"data": -1})
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"mesh axes {sorted(unknown)} unknown; expected a subset of {MESH_AXES}")
  sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh {shape}: at most one axis may be -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"mesh {shape}: {len(devices)} devices are not divisible by {known}")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices; "
                     f"{len(devices)} are available")
  return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def rules_from_config(rules: str | Sequence[Sequence[Any]] | None) -> tuple[tuple[str, Any], ...]:
  """The logical -> mesh rules a config asks for. A string (what --config.sharding_rules takes)
  overrides named entries of DEFAULT_RULES: "embed=fsdp,mlp=tensor,act_batch=data+fsdp,vocab=" (an
  empty target replicates); a sequence of (name, target) pairs replaces them; None or "" keeps them."""
  if not rules:
    return DEFAULT_RULES
  if isinstance(rules, str):
    known = dict(DEFAULT_RULES)
    for item in filter(None, (x.strip() for x in rules.split(","))):
      name, sep, target = item.partition("=")
      name = name.strip()
      if not sep or name not in known:
        raise ValueError(f"sharding_rules entry {item!r}: expected NAME=AXIS[+AXIS] with NAME one of "
                         f"{sorted(known)}")
      axes = tuple(a.strip() for a in target.split("+") if a.strip())
      bad = [a for a in axes if a not in MESH_AXES]
      if bad:
        raise ValueError(f"sharding_rules entry {item!r}: unknown mesh axes {bad}; expected {MESH_AXES}")
      known[name] = None if not axes else axes[0] if len(axes) == 1 else axes
    return tuple(known.items())
  out = []
  for r in rules:
    name, target = r[0], r[1]
    target = tuple(target) if isinstance(target, (list, tuple)) else target
    out.append((name, target))
  return tuple(out)


def _fit_spec(spec: P, shape: tuple[int, ...], mesh: Mesh, path: str) -> P:
  """Drops mesh axes from dims they do not divide (small/odd dims stay replicated)."""
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    size = int(np.prod([mesh.shape[a] for a in names])) if names else 1
    if names and dim % size:
      logging.info("sharding: %s dim %d not divisible by %s=%d; replicated", path, dim, names, size)
      fitted.append(None)
    else:
      fitted.append(axes)
  return P(*fitted)


def create(fn, shardings: Any, *args, abstract: bool = False) -> Any:
  """fn(*args) computed straight into `shardings` (jit with out_shardings), or with `abstract` only its
  shapes and dtypes, as ShapeDtypeStructs carrying those shardings: what ahead-of-time compilation
  for devices that are not here (blink_jax/aot.py) lowers against."""
  if not abstract:
    return jax.jit(fn, out_shardings=shardings)(*args)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      jax.eval_shape(fn, *args), shardings)


@dataclasses.dataclass(frozen=True)
class Partitioner:
  """A device mesh and the logical-axis rules that map the modules' axis names onto it: every sharding
  the project makes (params, batches, activation constraints) comes from one of these."""
  mesh: Mesh
  rules: tuple[tuple[str, Any], ...] = DEFAULT_RULES

  @classmethod
  def from_config(cls, config, devices: Sequence[jax.Device] | None = None) -> "Partitioner":
    """The mesh (`config.mesh`) over `devices` (default: all) and the rules (`config.sharding_rules`)
    a train or eval config asks for."""
    return cls(make_mesh(config.mesh.to_dict(), devices), rules_from_config(config.sharding_rules))

  @property
  def platform(self) -> str:
    """The platform of the mesh's devices (cpu, gpu, tpu; the target's, when compiling ahead of time)."""
    return self.mesh.devices.flat[0].platform

  @classmethod
  def single_device(cls) -> "Partitioner":
    """Everything on the first device: what loading without a partitioner gives."""
    return cls(make_mesh({"data": 1}, jax.devices()[:1]))

  def shardings(self, boxed_tree: Any) -> Any:
    """NamedShardings for a tree of (possibly abstract) params boxed with logical axis names."""
    specs = nn.get_partition_spec(boxed_tree)
    mesh_specs = nn.logical_to_mesh(specs, self.rules)
    unboxed = nn.meta.unbox(boxed_tree)

    def one(path, spec, leaf):
      return NamedSharding(self.mesh, _fit_spec(spec, leaf.shape, self.mesh, jax.tree_util.keystr(path)))

    return jax.tree_util.tree_map_with_path(one, mesh_specs, unboxed, is_leaf=lambda x: isinstance(x, P))

  def _batch_axes(self) -> tuple[str, ...]:
    (axes,) = nn.logical_to_mesh_axes(("act_batch",), self.rules)
    return (axes,) if isinstance(axes, str) else tuple(axes or ())

  def batch(self, ndim: int, axis: int = 0) -> NamedSharding:
    """Sharding of an array whose axis `axis` (default: the leading one) is the batch."""
    spec = [None] * ndim
    spec[axis] = self._batch_axes() or None
    return NamedSharding(self.mesh, P(*spec))

  @property
  def batch_parallelism(self) -> int:
    """Into how many parts the batch axis is split (the product of the mesh axes `act_batch` maps to)."""
    return int(np.prod([self.mesh.shape[a] for a in self._batch_axes()]))

  @contextlib.contextmanager
  def activated(self):
    """Mesh + logical rules in scope, so `nn.with_logical_constraint` inside modules takes effect."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      yield
