"""What fits where: the shipped TPU configs compiled ahead of time (blink_jax/aot.py, libtpu, no TPU)
for each topology, and Blink's memory and compile time against vanilla's.

  python -m bench.aot [--configs tokensr_7b,tokensr_13b,eval_7b,eval_13b]
      [--topologies v4:2x2x1,v5e:2x4,v5p:2x2x1,v6e:2x4] [--max_batch] [--noblink]

Table 1, per config and topology: the config's own batch (per-device total GiB of its largest program,
fits with 10% HBM headroom, compile s) and, with --max_batch, the largest global batch that fits
(aot.max_batch: three more compiles where memory is affine in the batch) and what that is per chip.
Each compiled batch of a search is appended to <results_dir>/<name>_search.jsonl as it is measured, so
a sweep stopped part-way resumes where it stopped when run again with the same --name.
For an eval config table 1 compiles tokensr's prefill and generation only: Blink's generation is the
largest program of the three modes (table 2), and six programs a step would take an hour a cell on a
2-core host. The configs' meshes take every device (fsdp=-1), so one config serves every topology.
Table 2, per eval config, on the topology it is sized for (aot.topology): every mode's programs, Blink's
against vanilla's at the same batch and prompt bucket (per-device temporaries; compile seconds as a
ratio).
"""

from __future__ import annotations

import importlib
import time

from absl import app, flags

from bench import common
from blink_jax import aot

flags.DEFINE_list("configs", ["tokensr_7b", "tokensr_13b", "eval_7b", "eval_13b"], "Modules of configs/.")
flags.DEFINE_list("topologies", ["v4:2x2x1", "v5e:2x4", "v5p:2x2x1", "v6e:2x4"], "TPU topologies (-8 slices).")
flags.DEFINE_bool("max_batch", True, "Also find the largest global batch that fits (3 more compiles a cell if memory is affine).")
flags.DEFINE_bool("blink", True, "Table 2: every mode's programs of each eval config on the topology it is sized "
                  "for, Blink's against vanilla's.")
flags.DEFINE_string("name", "aot", "Results are written to <results_dir>/<name>.json and <name>_blink.json.")
FLAGS = flags.FLAGS


def _by_program(records: list[aot.Record], prefix: str) -> aot.Record:
  return next(r for r in records if r.program.startswith(prefix))


def blink_over_vanilla(records: list[aot.Record]) -> list[str]:
  """Temporaries and compile time of interp / tokensr over vanilla, per program kind."""
  cells = []
  for kind in ("prefill", "generate"):
    vanilla = _by_program(records, f"{kind}_vanilla")
    for mode in ("interp", "tokensr"):
      blink = _by_program(records, f"{kind}_{mode}")
      cells += [f"{blink.temp_gib:.3f} / {vanilla.temp_gib:.3f} = {blink.temp_gib / vanilla.temp_gib:.2f}",
                f"{blink.compile_s / vanilla.compile_s:.2f}"]
  return cells


def main(_):
  rows, blink_rows, results = [], [], []
  header = ["config", "topology", "chips / devices", "HBM GiB/device", "batch", "GiB/device", "fits", "compile s"]
  if FLAGS.max_batch:
    header += ["max batch", "max per chip", "search s"]
  for name in FLAGS.configs:
    load = importlib.import_module(f"configs.{name}").get_config
    is_eval = not aot.is_train_config(load())
    if is_eval and FLAGS.blink:
      config = load()
      records = aot.compile_config(config, config.aot.topology)
      blink_rows.append([name, config.aot.topology, config.batch_size] + blink_over_vanilla(records))
      results.append({"config": name, "topology": config.aot.topology, "all_modes": [vars(r) for r in records]})
    for topology in FLAGS.topologies:
      config = load()
      if is_eval:
        config.modes = "tokensr"
      records = aot.compile_config(config, topology)
      devices, _ = aot.topology_devices(topology)
      chips = aot.chip_count(devices)
      worst = max(records, key=lambda r: r.total_gib)
      result = {"config": name, "topology": topology, "devices": len(devices), "chips": chips,
                "records": [vars(r) for r in records]}
      row = [name, topology, f"{chips} / {len(devices)}", f"{worst.hbm_gib:.0f}", worst.batch, f"{worst.total_gib:.2f}",
             "yes" if all(r.fits for r in records) else "NO", f"{max(r.compile_s for r in records):.0f}"]
      if FLAGS.max_batch:
        start = time.perf_counter()
        log = common.results_dir() / f"{FLAGS.name}_search.jsonl"
        result["max_batch"] = aot.max_batch(config, topology, measured=records, log=log)
        result["search_s"] = round(time.perf_counter() - start)   # this run's: less where it resumed
        result["searched"] = [{k: v for k, v in line.items() if k != "search"}
                              for line in aot.read_search_log(log, aot.search_key(config, topology))]
        row += [result["max_batch"], f"{result['max_batch'] / chips:.0f}", result["search_s"]]
      rows.append(row)
      results.append(result)
      # Written after every cell: a 7B/13B sweep takes hours on a small host.
      common.write(FLAGS.name, {"results": results}, rows, header)
  if blink_rows:
    print()
    common.write(f"{FLAGS.name}_blink", {}, blink_rows, [
        "config", "topology", "batch", "prefill temp interp/van GiB", "compile", "prefill temp tokensr/van GiB",
        "compile", "generate temp interp/van GiB", "compile", "generate temp tokensr/van GiB", "compile"])


if __name__ == "__main__":
  app.run(main)
