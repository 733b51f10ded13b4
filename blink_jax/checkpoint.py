"""Checkpoints: the training run's (train state + data iterator, resumable) and the trained-TokenSR
export that eval.py / visualize.py load.

Export: a directory with `blink.json` (the BlinkConfig it was trained for, plus the LLM width) and
`params/` (an orbax StandardCheckpointer pytree of the TokenSR params).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
import time
import traceback
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import traverse_util
from jax.experimental import multihost_utils

from blink_jax import sharding as shd
from blink_jax.blink.config import BlinkConfig, from_mapping
from blink_jax.models.token_sr import init_token_sr, token_sr_shardings

# Where train.py's default job (configs/tokensr.py: workdir runs/tokensr) exports its TokenSR: eval.py
# and visualize.py use it for the embedded model when it exists.
DEFAULT_EXPORT = "runs/tokensr/export"


def params_sha256(params: Any) -> str:
  """A digest of a param tree's paths and values, equal on every process (leaves are gathered)."""
  digest = hashlib.sha256()
  flat = traverse_util.flatten_dict(params, sep="/") if isinstance(params, dict) else {"": params}
  for k in sorted(flat):
    digest.update(k.encode())
    digest.update(np.asarray(multihost_utils.process_allgather(flat[k], tiled=True)).tobytes())
  return digest.hexdigest()


def export_token_sr(directory: str | epath.PathLike, token_sr: Any, blink: BlinkConfig, width: int):
  directory = epath.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    (directory / "blink.json").write_text(json.dumps({"blink": dataclasses.asdict(blink), "width": width},
                                                     indent=2))
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(directory.resolve() / "params", token_sr, force=True)


def token_sr_settings(directory: str | epath.PathLike, *, width: int) -> BlinkConfig:
  """The BlinkConfig an export was trained with (its blink.json); checks it fits an LLM of `width`."""
  directory = epath.Path(directory)
  meta_path = directory / "blink.json"
  if not meta_path.exists():
    raise FileNotFoundError(f"{directory}: not a TokenSR export (no blink.json); "
                            "expected the export/ directory train.py writes")
  meta = json.loads(meta_path.read_text())
  if meta["width"] != width:
    raise ValueError(f"{directory}: TokenSR was trained for LLM width {meta['width']}, "
                     f"the model has width {width}")
  return from_mapping(meta["blink"])


def load_token_sr(directory: str | epath.PathLike, *, width: int,
                  partitioner: shd.Partitioner | None = None) -> tuple[Any, BlinkConfig]:
  """(params, the BlinkConfig they were trained with); checks they fit an LLM of `width`."""
  directory = epath.Path(directory)
  blink = token_sr_settings(directory, width=width)
  partitioner = partitioner or shd.Partitioner.single_device()
  dims = (blink.num_scan_layers, blink.token_sr_channels, blink.region_size, width)
  target = jax.eval_shape(lambda: init_token_sr(*dims, jax.random.key(0), arch=blink.token_sr_arch))
  shardings = token_sr_shardings(*dims, partitioner, arch=blink.token_sr_arch)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), target, shardings)
  try:
    with ocp.StandardCheckpointer() as ckptr:
      params = ckptr.restore(directory.resolve() / "params", abstract)
  except Exception as e:  # orbax/tensorstore raise many types for a damaged checkpoint
    raise ValueError(f"{directory}: the TokenSR export's params/ could not be read "
                     f"({type(e).__name__}: {str(e)[:300]}); re-export it from its training run") from e
  return params, blink


def _drop_closed_loop_callbacks():
  """When a restore fails, tensorstore's reads still in flight call back into orbax's asyncio loop,
  closed by then, at any later time: each callback prints an 'Event loop is closed' traceback (about
  20 for one corrupt checkpoint) through sys.unraisablehook. They say nothing that the failure's own
  message does not: from the first restore on, the process drops exactly those (once installed)."""
  previous = sys.unraisablehook
  if getattr(previous, "drops_closed_loop_callbacks", False):
    return

  def hook(unraisable):
    frames = traceback.extract_tb(unraisable.exc_traceback) if unraisable.exc_traceback else []
    if not (unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed"
            and frames and frames[0].name == "call_soon_threadsafe"):
      previous(unraisable)
  hook.drops_closed_loop_callbacks = True
  sys.unraisablehook = hook


def export_model(directory: str | epath.PathLike, flat_params: dict[str, Any]):
  """A fine-tuned model's params (flat {'path/to/leaf': array}, as training holds them) as an orbax
  pytree in `directory`, for `config.model.params` (load_model)."""
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(epath.Path(directory).resolve(), flat_params, force=True)


def load_model(directory: str | epath.PathLike, like: Any) -> Any:
  """An export_model directory restored in the shapes, dtypes and shardings of `like` (the model's
  params tree, stacked layers); a mismatch names the directory."""
  flat = traverse_util.flatten_dict(like, sep="/")
  target = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=v.sharding) for k, v in flat.items()}
  try:
    with ocp.StandardCheckpointer() as ckptr:
      restored = ckptr.restore(epath.Path(directory).resolve(), target)
  except Exception as e:  # orbax/tensorstore raise many types for a missing or mismatched checkpoint
    raise ValueError(f"config.model.params={str(directory)!r}: not the params of this model "
                     f"({type(e).__name__}: {str(e)[:300]}); expected the export/model of an SFT run of it") from e
  return traverse_util.unflatten_dict(restored, sep="/")


class TrainCheckpoints:
  """Orbax CheckpointManager over {state, data, log}: the train state, the grain iterator and the
  partial metric window (so a resumed run logs what an uninterrupted one would), saved together
  (async) every `every` steps, the last `keep` kept."""

  def __init__(self, directory: str | epath.PathLike, every: int, keep: int, async_save: bool = True):
    self.directory = epath.Path(directory).resolve()
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=("state", "data", "log"),
        options=ocp.CheckpointManagerOptions(save_interval_steps=every, max_to_keep=keep,
                                             enable_async_checkpointing=async_save))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iterator: Any, log: dict, force: bool = False) -> bool:
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator),
        log=ocp.args.JsonSave(log)), force=force)

  def restore(self, step: int, state_like: Any, data_iterator: Any) -> tuple[Any, Any, dict]:
    """(state, iterator, log) at `step`; state_like gives the shapes, dtypes and shardings."""
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            state_like)
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), data=grain.checkpoint.CheckpointRestore(data_iterator),
        log=ocp.args.JsonRestore()))
    return out.state, out.data, out.log

  def restore_latest_good(self, state_like: Any, data_iterator: Any, fallback: bool):
    """(step, state, iterator, log) from the newest checkpoint that restores, or None if there is none.

    A checkpoint that fails to restore is named; with `fallback` it is moved aside to
    `<directory>_corrupt/` (so later saves of that step do not collide) and the previous one is tried.
    """
    _drop_closed_loop_callbacks()
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        return (step, *self.restore(step, state_like, data_iterator))
      except Exception as e:  # orbax/tensorstore raise many types for a damaged checkpoint
        where = self.directory / str(step)
        problem = (f"checkpoint step {step} at {where} could not be restored "
                   f"({type(e).__name__}: {str(e)[:300]})")
        if not fallback:
          raise ValueError(f"{problem}; pass --config.checkpoint.fallback_on_corrupt=True to resume from the "
                           "previous checkpoint") from e
        aside = epath.Path(f"{self.directory}_corrupt") / f"{step}_{int(time.time())}"
        logging.warning("%s; moving it to %s and trying the previous one", problem, aside)
        if jax.process_index() == 0:
          aside.parent.mkdir(parents=True, exist_ok=True)
          where.rename(aside)
        if jax.process_count() > 1:
          multihost_utils.sync_global_devices(f"corrupt checkpoint {step} moved")
        self.manager.reload()
    return None

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()
