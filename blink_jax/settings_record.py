"""Comparing the settings a run recorded (train.py's run.json, eval.py's <mode>.run.json) with today's:
a setting the code added after the record was written is no change at its default, which is how the
recorded run ran (the settings held by dataclasses: Blink's and zoom's)."""

from __future__ import annotations

import dataclasses
from typing import Any

from blink_jax.blink.config import BlinkConfig
from blink_jax.inference.zoom import ZoomConfig

ABSENT = "<absent>"


def code_defaults() -> dict[str, Any]:
  """{"blink.<field>": default, "zoom.<field>": default}."""
  return {f"{section}.{k}": v for section, settings in (("blink", BlinkConfig()), ("zoom", ZoomConfig()))
          for k, v in dataclasses.asdict(settings).items()}


def changed(key: str, old: Any, new: Any) -> bool:
  """Whether dotted `key` changed from `old` (ABSENT: the record lacks it) to `new`."""
  if old == ABSENT:
    defaults = code_defaults()
    if key in defaults and new == defaults[key]:
      return False
  return old != new
