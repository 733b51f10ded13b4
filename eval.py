"""Benchmarks for vanilla / Blink-interp / Blink: python eval.py --config configs/eval.py [--config.X=Y]"""

import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(pathlib.Path(__file__).parent / "configs/eval.py"), "Evaluation configuration.", lock_config=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from blink_jax.eval.runner import NothingAnswered, evaluate
  try:
    evaluate(_CONFIG.value)
  except NothingAnswered as e:
    logging.error("%s", e)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
