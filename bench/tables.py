"""The tables of measured figures in docs/ (benchmarks.md, tpu.md), generated from bench/results/*.json
so that a figure is written once and cannot drift: each table says the run (date, machine, command)
its rows come from. A doc holds a table between `<!-- table:NAME -->` and `<!-- /table:NAME -->`.

  python -m bench.tables           # rewrites the tables in docs/
  python -m bench.tables --check   # exit 1 if a doc's table differs from its results (tests run this)
"""

from __future__ import annotations

import json
import pathlib
import re
import sys
from typing import Any, Callable

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"
# How each results file was made (new runs record their own command: bench/common.py writes it).
COMMANDS = {
    "prefill_medium_text70": "python -m bench.prefill --batches 1,8,32 --easydel_python PY",
    "prefill_qwen_medium_text70": "python -m bench.prefill --batches 1,8 --shape qwen_medium",
    "generation_medium": "python -m bench.generation --batches 1,8 --easydel_python PY",
    "generation_qwen_medium": "python -m bench.generation --batches 1,8 --shape qwen_medium",
    "training_medium": "python -m bench.training --shape medium --batch 8",
    "compiles": "python -m bench.compiles --prompts 200",
    "compiles_qwen2_5_vl": "python -m bench.compiles --prompts 200 --family qwen2_5_vl",
}


def load(name: str) -> dict[str, Any]:
  return json.loads((RESULTS / f"{name}.json").read_text())


def _md(header: list[str], rows: list[list[Any]]) -> list[str]:
  return ["| " + " | ".join(map(str, r)) + " |" for r in [header, ["---"] * len(header), *rows]]


def _source(name: str, d: dict) -> str:
  command = d.get("command") or COMMANDS[name]
  return f"Measured {d['time'][:10]} on {d['machine']}: `{command}` (bench/results/{name}.json)."


def _ratio(a: float, b: float) -> str:
  return f"{a / b:.2f}"


def prefill(name: str) -> list[str]:
  d = load(name)
  header = ["batch", "prompt tokens", "padded vanilla / Blink", "vanilla ms", "interp / vanilla",
            "tokensr / vanilla", "saliency / scan layer", "JAX / torch sdpa", "JAX / EasyDeL", "XLA's attention / JAX's kernel"]
  rows = []
  for r in d["records"]:
    van = r["vanilla"]["seconds"]
    rows.append([r["batch"], r["prompt_tokens"], f"{r['vanilla_length']} / {r['blink_length']}", f"{1e3 * van:.0f}",
                 _ratio(r["interp"]["seconds"], van), _ratio(r["tokensr"]["seconds"], van),
                 f"{100 * r['saliency_seconds'] / r['scan_layer_seconds']:.1f}%",
                 _ratio(van, r["torch_sdpa"]["seconds"]),
                 _ratio(van, r["easydel"]["seconds"]) if "easydel" in r else "-",
                 _ratio(r["vanilla_xla_attention"]["seconds"], van) if "vanilla_xla_attention" in r else "-"])
  return [_source(name, d), f"JAX attention kernel: `{d['attention']}`.", ""] + _md(header, rows)


def generation(name: str) -> list[str]:
  d = load(name)
  header = ["batch", "layout", "vanilla TTFT ms", "vanilla step ms", "interp / vanilla step",
            "tokensr / vanilla step", "per_layer / stacked step", "TTFT / EasyDeL", "step / EasyDeL's decode"]
  rows = []
  for r in d["records"]:
    van = r["vanilla"]
    step = van.get("step_alone_ms", van["decode_ms_per_step"])
    per_mode = lambda m: r[m].get("step_alone_ms", r[m]["decode_ms_per_step"])  # noqa: E731
    easy = r.get("easydel")
    rows.append([r["batch"], r.get("layout", r.get("layer_layout", "stacked")), f"{1e3 * van['ttft_seconds']:.0f}",
                 f"{step:.1f}", _ratio(per_mode("interp"), step), _ratio(per_mode("tokensr"), step),
                 _ratio(step, r["stacked_vanilla_step_ms"]) if "stacked_vanilla_step_ms" in r else "-",
                 _ratio(van["ttft_seconds"], easy["ttft_seconds"]) if easy else "-",
                 _ratio(step, easy["decode_ms_per_step"]) if easy else "-"])
  return [_source(name, d), f"{d['new_tokens']} new tokens, no EOS; a step is one compiled decode step alone "
          "(the modes timed in turns); EasyDeL's decode is its end-to-end figure ((time of N tokens - time of 1) / (N - 1)), the "
          "only one its worker gives.", ""] + _md(header, rows)


def training(name: str) -> list[str]:
  d = load(name)
  header = ["global batch", "s / step", "examples / s", "TFLOP / step (XLA)", "achieved TFLOP/s"]
  rows = [[d["batch"], f"{d['seconds_per_step']:.2f}", f"{d['batch'] / d['seconds_per_step']:.1f}",
           f"{d['flops_per_step'] / 1e12:.3f}", f"{d['achieved_tflops']:.3f}"]]
  return [_source(name, d), ""] + _md(header, rows)


def zoom(name: str) -> list[str]:
  d = load(name)
  header = ["batch", "vanilla prefill ms", "tokensr / vanilla", "zoom pass 1 / vanilla", "zoom pass 2 / vanilla",
            "zoom on device / vanilla", "zoom with crops / vanilla", "generation: tokensr / vanilla",
            "generation: zoom / vanilla", "compiled MiB: vanilla / pass 1 / pass 2"]
  rows = []
  for r in d["records"]:
    s, van, mib = r["seconds"], r["seconds"]["vanilla"], r["compiled_bytes"]
    rows.append([r["batch"], f"{1e3 * van:.0f}", _ratio(s["tokensr"], van), _ratio(s["zoom_pass_1"], van),
                 _ratio(s["zoom_pass_2"], van), _ratio(r["zoom_prefill_device_seconds"], van),
                 _ratio(r["zoom_prefill_seconds"], van), _ratio(s["generate_tokensr"], s["generate_vanilla"]),
                 _ratio(s["generate_zoom"], s["generate_vanilla"]),
                 " / ".join(f"{mib[k] / 2**20:.0f}" for k in ("vanilla", "zoom_pass_1", "zoom_pass_2"))])
  z = d["zoom"]
  return [_source(name, d), f"Zoom at decoder layer {z['layer']}, crop {z['box']} of the image side; "
          f"{d['new_tokens']} new tokens a generation.", ""] + _md(header, rows)


def compiles(name: str) -> list[str]:
  d = load(name)
  header = ["mode", "buckets hit", "programs", "backend compiles, first pass", "compile s", "compiles, second pass"]
  rows = [[m, r["buckets_hit"], r["programs"], r["backend_compiles_first_pass"], f"{r['compile_seconds']:.1f}",
           r["compiles_second_pass"]] for m, r in d["records"].items()]
  return [_source(name, d), f"{d['prompts']} prompts, batch {d['batch']}, prompt buckets {d['buckets']}.", ""] + \
      _md(header, rows)


def _aot_cells() -> list[tuple[str, dict, dict]]:
  """Every (results file, its payload, one config x topology cell) of `python -m bench.aot` runs."""
  cells = []
  for path in sorted(RESULTS.glob("aot*.json")):
    d = json.loads(path.read_text())
    for cell in d.get("results", []) if isinstance(d, dict) else []:
      cells.append((path.stem, d, cell))
  return cells


def _newest(cells, key: Callable[[dict], Any]):
  best: dict[Any, tuple[str, dict, dict]] = {}
  for name, d, cell in cells:
    k = key(cell)
    if k not in best or d["time"] >= best[k][1]["time"]:
      best[k] = (name, d, cell)
  return [best[k] for k in sorted(best)]


def _aot_command(cell: dict, max_batch: bool) -> str:
  return (f"python -m bench.aot --configs {cell['config']} --topologies {cell['topology']}"
          + ("" if max_batch else " --nomax_batch"))


def tpu_fit(_: str) -> list[str]:
  """Per config x topology, the config's own batch: its largest program (newest run of each cell)."""
  cells = _newest([c for c in _aot_cells() if "records" in c[2]], lambda c: (c["config"], c["topology"]))
  header = ["config", "topology (chips / devices, HBM per device)", "global batch (per chip)",
            "GiB per device, largest program", "fits (10% headroom)", "compile s", "date", "command"]
  rows = []
  for name, d, cell in cells:
    top = max(cell["records"], key=lambda r: r["total_gib"])
    rows.append([f"`{cell['config']}`", f"{cell['topology']} ({cell['chips']} / {cell['devices']}, {top['hbm_gib']:.0f} GiB)",
                 f"{top['batch']} ({top['batch'] // cell['chips']})", f"{top['total_gib']:.2f} ({top['program']})",
                 "yes" if top["fits"] else "NO", f"{top['compile_s']:.0f}", d["time"][:10],
                 f"`{_aot_command(cell, False)}`"])
  machines = sorted({d["machine"] for _, d, _ in cells})
  return [f"Compiled ahead of time with libtpu on {'; '.join(machines)} (bench/results/aot*.json).", ""] + \
      _md(header, rows)


def tpu_max_batch(_: str) -> list[str]:
  cells = _newest([c for c in _aot_cells() if "max_batch" in c[2]], lambda c: (c["config"], c["topology"]))
  header = ["config", "topology", "its own global batch", "largest global batch that fits (per chip)", "search s",
            "date", "command"]
  rows = []
  for name, d, cell in cells:
    own = max(cell["records"], key=lambda r: r["total_gib"])["batch"]
    rows.append([f"`{cell['config']}`", cell["topology"], own,
                 f"{cell['max_batch']} ({cell['max_batch'] // cell['chips']})",
                 cell.get("search_s", "-"), d["time"][:10], f"`{_aot_command(cell, True)}`"])
  return _md(header, rows)


def tpu_blink(_: str) -> list[str]:
  """Every mode of an eval config on the topology it is sized for: Blink's against vanilla's."""
  cells = _newest([c for c in _aot_cells() if "all_modes" in c[2]], lambda c: (c["config"], c["topology"]))
  header = ["config", "topology", "program", "vanilla temp GiB", "interp / vanilla temp", "tokensr / vanilla temp",
            "tokensr / vanilla compile s", "date"]
  rows = []
  for name, d, cell in cells:
    by = {r["program"].split(" ")[0]: r for r in cell["all_modes"]}
    for kind in ("prefill", "generate"):
      van, it, sr = by[f"{kind}_vanilla"], by[f"{kind}_interp"], by[f"{kind}_tokensr"]
      rows.append([f"`{cell['config']}`", cell["topology"], kind, f"{van['temp_gib']:.2f}",
                   _ratio(it["temp_gib"], van["temp_gib"]), _ratio(sr["temp_gib"], van["temp_gib"]),
                   _ratio(sr["compile_s"], van["compile_s"]), d["time"][:10]])
  return [f"`{_aot_command({'config': '<eval config>', 'topology': '<its aot.topology>'}, True)}` "
          "(table 2 of bench/aot.py: every mode's prefill and generation at the same batch and prompt bucket).",
          ""] + _md(header, rows)


def aot_records(name: str) -> list[str]:
  """A `python -m blink_jax.aot --json` file with its run's date, machine and command."""
  from blink_jax import aot
  d = load(name)
  return [_source(name, d), ""] + aot.table([aot.Record(**r) for r in d["records"]]).splitlines()


TABLES: dict[str, Callable[[str], list[str]]] = {
    "prefill_medium_text70": prefill, "prefill_qwen_medium_text70": prefill,
    "generation_medium": generation, "generation_qwen_medium": generation,
    "training_medium": training, "compiles": compiles, "zoom_medium": zoom, "compiles_qwen2_5_vl": compiles,
    "tpu_fit": tpu_fit, "tpu_max_batch": tpu_max_batch, "tpu_blink": tpu_blink,
    "aot_qwen2_5_vl_7b_v5e": aot_records, "aot_tokensr_qwen2_5_vl_7b_v5e": aot_records,
    "aot_zoom_7b_v5e": aot_records,
}
MARK = re.compile(r"(<!-- table:(\S+) -->\n)(.*?)(<!-- /table:\2 -->)", re.S)


def render(text: str) -> str:
  """`text` with every marked table regenerated from its results."""
  def fill(m: re.Match) -> str:
    if m.group(2) not in TABLES:
      raise KeyError(f"unknown table {m.group(2)!r}; known: {sorted(TABLES)}")
    return m.group(1) + "\n".join(TABLES[m.group(2)](m.group(2))) + "\n" + m.group(4)
  return MARK.sub(fill, text)


def main(argv: list[str]) -> int:
  stale = []
  for doc in sorted(DOCS.glob("*.md")):
    text = doc.read_text()
    new = render(text)
    if new != text:
      stale.append(doc.name)
      if "--check" not in argv:
        doc.write_text(new)
  if stale:
    print(("out of date: " if "--check" in argv else "rewrote: ") + ", ".join(stale))
  return 1 if stale and "--check" in argv else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
