"""The workdir's record of what a training run is: `run.json` holds the config and the dataset it
trains on. A resumed run is checked against it, so a changed batch size, learning rate, model or
dataset cannot silently continue someone else's trajectory."""

from __future__ import annotations

import json
import logging
from typing import Any

import jax
import ml_collections
from etils import epath

from blink_jax import settings_record


# Fields that do not change what a step computes (where it runs, how often it logs, saves or
# validates, when it stops on a plateau): a resumed run may change them freely.
FREE_ON_RESUME = ("workdir", "log_batch_indices", "resume_despite_changes", "train.log_every",
                  "train.validate_every", "train.patience", "data.sft_validation.",
                  "checkpoint.", "aot.", "data.workers", "data.data_dir", "mesh.", "sharding_rules", "distributed.",
                  "model.attention", "model.remat")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flat(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def record(config: ml_collections.ConfigDict, dataset: str) -> dict[str, Any]:
  return {"config": json.loads(config.to_json_best_effort()), "dataset": dataset}


def differences(saved: dict, now: dict) -> list[str]:
  """'field: saved -> now' for every field that changed and matters."""
  a = _flat({**saved["config"], "dataset": saved["dataset"]})
  b = _flat({**now["config"], "dataset": now["dataset"]})
  out = []
  for key in sorted(set(a) | set(b)):
    if any(key == f or (f.endswith(".") and key.startswith(f)) for f in FREE_ON_RESUME):
      continue
    old, new = a.get(key, settings_record.ABSENT), b.get(key, settings_record.ABSENT)
    if settings_record.changed(key, old, new):
      out.append(f"{key}: {old!r} -> {new!r}")
  return out


def check_and_write(workdir: epath.Path, config: ml_collections.ConfigDict, dataset: str, resuming: bool):
  """On resume, refuses (or with config.resume_despite_changes, warns) when the config or dataset
  differ from the run's record; then writes the record (process 0)."""
  path = workdir / "run.json"
  now = record(config, dataset)
  if resuming and path.exists():
    changed = differences(json.loads(path.read_text()), now)
    if changed and not config.resume_despite_changes:
      raise ValueError(f"{workdir}: resuming a run whose config or data changed:\n  " + "\n  ".join(changed)
                       + "\nUse a new workdir, restore these values, or pass "
                       "--config.resume_despite_changes=True to continue with the new ones.")
    if changed:
      logging.warning("resuming %s with changed settings: %s", workdir, "; ".join(changed))
  if jax.process_index() == 0:
    path.write_text(json.dumps(now, indent=2))
