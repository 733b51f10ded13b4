"""How the jobs' command lines run (train.py, eval.py, visualize.py, `python -m blink_jax.aot`): absl's
app.run with the backends' INFO lines off (they drown the progress bar; `--verbosity` brings them
back), and a user's mistake (a config typo, a bad value, a missing file or image) reported in one
line that names the input and what was expected; the traceback with `--verbosity=1` or
`BLINK_TRACEBACK=1`."""

from __future__ import annotations

import ast
import contextlib
import os
import sys
from typing import Callable

from absl import app, flags, logging

# What the code raises for bad input (every check names the input and what it expected); anything
# else is a defect and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
EXIT_USER_ERROR = 2


def _wants_traceback() -> bool:
  if os.environ.get("BLINK_TRACEBACK", "") not in ("", "0"):
    return True
  f = flags.FLAGS
  if f.is_parsed():
    return f["verbosity"].present and f.verbosity >= 1
  return any(a.startswith("--verbosity") or a == "-v" or a.startswith("-v=") for a in sys.argv[1:])


def _fail(message: str):
  print(f"error: {message}  (--verbosity=1 shows the traceback)", file=sys.stderr)
  sys.exit(EXIT_USER_ERROR)


def _field_error(e: AttributeError) -> str:
  """ml_collections' message for an override naming no field, e.g. '\\'stepz\\'\\nDid you mean...'."""
  text = str(e)
  try:
    text = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    pass
  return " ".join(str(text).split())


@contextlib.contextmanager
def _reported(parsing: bool):
  """USER_ERRORS (and, while the command line is parsed, ml_collections' AttributeError for an
  override naming no field) -> one line and exit status 2, unless a traceback was asked for."""
  try:
    yield
  except AttributeError as e:
    if not parsing or _wants_traceback():
      raise
    _fail(f"no such config field: {_field_error(e)}")
  except USER_ERRORS as e:
    if _wants_traceback():
      raise
    _fail(str(e))


def _parse(argv: list[str]) -> list[str]:
  with _reported(parsing=True):
    return app.parse_flags_with_usage(argv)


def run(main: Callable[[list[str]], None], define_flags: Callable[[], None]):
  """define_flags() (a config file's --config.FIELD overrides are read there), then app.run(main);
  USER_ERRORS are reported in one line (exit status 2)."""
  def guarded(argv: list[str]):
    if len(argv) > 1:
      _fail(f"unexpected arguments {argv[1:]}: flags are --name=value")
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    with _reported(parsing=False):
      main(argv)

  with _reported(parsing=True):
    define_flags()
  app.run(guarded, flags_parser=_parse)
