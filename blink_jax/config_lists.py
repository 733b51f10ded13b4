"""List-valued config fields. ml_collections cannot override a list from the command line, so such
fields are comma-separated strings ("--config.modes=vanilla,interp"); these parse them (a list or
tuple set from Python is accepted as is)."""

from __future__ import annotations

from typing import Sequence


def names(value: str | Sequence[str], field: str) -> list[str]:
  items = value.split(",") if isinstance(value, str) else list(value)
  out = [str(x).strip() for x in items if str(x).strip()]
  if not out:
    raise ValueError(f"config.{field} is empty; expected a comma-separated list")
  return out


def ints(value: str | Sequence[int], field: str) -> list[int]:
  out = []
  for x in names(value, field) if isinstance(value, str) else list(value):
    try:
      out.append(int(x))
    except ValueError as e:
      raise ValueError(f"config.{field}: {x!r} is not an integer") from e
  return out
