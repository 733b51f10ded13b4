"""Benchmarks for vanilla / Blink-interp / Blink: python eval.py --config configs/eval.py [--config.X=Y]"""

import pathlib
import sys

from absl import flags, logging
from ml_collections import config_flags


def define_flags(flag_values: flags.FlagValues = flags.FLAGS, argv: list[str] | None = None):
  """--config (a config file) and its --config.FIELD=VALUE overrides, those of `argv` (default sys.argv):
  the README-commands test parses the README's lines with these."""
  config_flags.DEFINE_config_file("config", str(pathlib.Path(__file__).parent / "configs/eval.py"),
                                  "Evaluation configuration.", flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)


def main(_):
  from blink_jax.eval.runner import NothingAnswered, evaluate
  try:
    evaluate(flags.FLAGS.config)
  except NothingAnswered as e:
    logging.error("%s", e)
    sys.exit(1)


if __name__ == "__main__":
  from blink_jax import cli
  cli.run(main, define_flags)
