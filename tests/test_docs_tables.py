"""The docs' tables of measured figures are what bench/results/*.json hold (bench/tables.py): a figure
is written once, so it cannot drift between pages."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_docs_tables_are_generated_from_the_results():
  proc = subprocess.run([sys.executable, "-m", "bench.tables", "--check"], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout + proc.stderr
