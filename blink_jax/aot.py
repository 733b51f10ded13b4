"""Ahead-of-time compilation for a TPU topology from any host, with no TPU, weights or data:

    python -m blink_jax.aot --config configs/tokensr.py [--topology v5e:2x4] [--config.FIELD=VALUE ...]
        [--json PATH] [--max_batch [--max_batch_limit N] [--search_log PATH]]

It takes the configs train.py and eval.py take and compiles exactly the programs those jobs run,
built by the same code (train.step.train_program; the pipeline's generate_program over the runner's
model and prompt layout) on abstract params (shapes with shardings: sharding.create) over a mesh of
the topology's devices (jax.experimental.topologies, with libtpu: requirements-tpu.txt). A train
config gives the train step; an eval config the prompt pass (prefill) and generation program of each mode, for its batch and
a LLaVA-length prompt (the system prompt, the image, `aot.text_tokens` of text). For each it prints
per-device arguments / outputs / temporaries (XLA's memory analysis; donated buffers counted once),
the device's HBM, whether it fits with >= 10% headroom, and the compile time; `--max_batch` finds
the largest global batch that fits. As MaxText's train_compile.py does for its models.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import pathlib
import re
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from blink_jax import backbone
from blink_jax import config_lists
from blink_jax import sharding as shd
from blink_jax.models import attention_kernels

# HBM per chip, GiB (Google Cloud TPU documentation, "TPU versions": v4 32, v5e 16, v5p 95, v6e 32).
HBM_GIB_PER_CHIP = {"v4": 32.0, "v5e": 16.0, "v5p": 95.0, "v6e": 32.0}
HEADROOM = 0.10
GIB = 1 << 30


@dataclasses.dataclass
class Record:
  program: str
  topology: str
  mesh: str
  attention: str      # the prompt pass's kernel on this platform (config.model.attention resolved)
  batch: int
  args_gib: float | None
  out_gib: float | None
  temp_gib: float
  total_gib: float
  hbm_gib: float
  fits: bool
  compile_s: float
  # A program libtpu refused to compile because its temporaries alone exceed HBM has args/out None
  # and temp = total = the temporaries the compiler reported (so: at least that much).


def topology_devices(name: str) -> tuple[list, float]:
  """(the topology's devices, HBM GiB per device). One clear error for a missing libtpu and for an
  unknown name."""
  chip = name.split(":")[0]
  if chip not in HBM_GIB_PER_CHIP:
    raise ValueError(f"unknown TPU topology {name!r}: expected <chip>:<layout> with chip one of "
                     f"{sorted(HBM_GIB_PER_CHIP)}, e.g. v5e:2x4, v4:2x2x1, v5p:2x2x1, v6e:2x4")
  if importlib.util.find_spec("libtpu") is None:
    raise RuntimeError("compiling for a TPU topology needs libtpu: pip install -r requirements-tpu.txt")
  from jax.experimental import topologies
  try:
    devices = list(topologies.get_topology_desc(topology_name=name, platform="tpu").devices)
  except Exception as e:  # libtpu's own message names what is wrong
    first = str(e).splitlines()[0]
    if "lockfile" in first:
      raise RuntimeError(f"libtpu is held by another process (one at a time): {first}") from e
    raise ValueError(f"unknown TPU topology {name!r}: {first}") from e
  return devices, HBM_GIB_PER_CHIP[chip] / (len(devices) / chip_count(devices))


def chip_count(devices: list) -> int:
  """How many chips the devices sit on (v4: two devices a chip)."""
  return len({tuple(d.coords) for d in devices})


def topology_partitioner(config: ml_collections.ConfigDict, devices: list, topology: str) -> shd.Partitioner:
  """config.mesh over the topology's devices, with the config's sharding rules."""
  try:
    return shd.Partitioner.from_config(config, devices)
  except ValueError as e:
    raise ValueError(f"config.mesh {config.mesh.to_dict()} does not fit topology {topology} "
                     f"({len(devices)} devices): {e}") from e


def _measure(name: str, compile_fn: Callable[[], Any], topology: str, mesh, attention: str, batch: int,
             hbm: float) -> Record:
  mesh_name = "x".join(f"{k}{v}" for k, v in mesh.shape.items())
  start = time.perf_counter()
  try:
    compiled = compile_fn()
  except jax.errors.JaxRuntimeError as e:
    # libtpu refuses a program whose temporaries alone exceed HBM: it does not fit. Its message
    # gives the temporaries ("... HLO temporaries (30.74G) exceeds available HBM (15.25G)").
    need = re.search(r"temporaries \(([\d.]+)([MG])\)", str(e))
    if "RESOURCE_EXHAUSTED" not in str(e) or need is None:
      raise
    temp = float(need.group(1)) / (1024 if need.group(2) == "M" else 1)
    return Record(name, topology, mesh_name, attention, batch, None, None, round(temp, 3),
                  round(temp, 3), round(hbm, 2), False, round(time.perf_counter() - start, 1))
  seconds = time.perf_counter() - start
  m = compiled.memory_analysis()
  args, out, temp = (m.argument_size_in_bytes / GIB, m.output_size_in_bytes / GIB, m.temp_size_in_bytes / GIB)
  total = args + out + temp - m.alias_size_in_bytes / GIB   # donated state is one buffer, not two
  return Record(name, topology, mesh_name, attention, batch, round(args, 3), round(out, 3), round(temp, 3),
                round(total, 3), round(hbm, 2), total <= (1 - HEADROOM) * hbm, round(seconds, 1))


def _kernel(config, partitioner: shd.Partitioner) -> str:
  with partitioner.activated():
    return attention_kernels.resolve(config.model.attention)


@dataclasses.dataclass
class Program:
  """One program of a job (a jitted function) and its abstract arguments: aot compiles what `lower`
  gives, the README-commands test only lowers it. Call it with the partitioner activated."""
  name: str
  batch: int
  fn: Any
  args: tuple

  def lower(self) -> jax.stages.Lowered:
    return self.fn.lower(*self.args)


def train_programs(config, partitioner: shd.Partitioner) -> list[Program]:
  from blink_jax.train.step import train_program
  program = train_program(config, partitioner, abstract=True)
  return [Program("train_step", config.train.batch_size, program.step,
                  (program.state, program.frozen, program.batch))]


def eval_programs(config, partitioner: shd.Partitioner) -> list[Program]:
  from blink_jax.data.prompt_batch import pad_prompts
  from blink_jax.eval.runner import build_pipeline
  pipe = build_pipeline(config, partitioner, abstract=True).pipe
  cfg, b = pipe.cfg, config.batch_size
  height, width = pipe.family.largest_image(cfg, pipe.preprocessing)   # Qwen2.5-VL: its largest bucket
  pixels = np.zeros((b, height, width, cfg.vision.num_channels), np.float32)
  prompt = np.concatenate([backbone.prompt_prefix(config.model, cfg),
                           np.full(pipe.family.image_tokens(cfg, pixels.shape), cfg.image_token_id),
                           np.full(config.aot.text_tokens, cfg.bos_token_id)]).astype(np.int32)
  prompts = pad_prompts([prompt] * b, pixels, pipe.buckets, cfg.pad_token_id, cfg.image_token_id)
  abstract = lambda batch: [jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=partitioner.batch(x.ndim))  # noqa: E731
                            for x in (batch.ids, batch.pixels, batch.lengths)]
  programs = []
  for mode in config_lists.names(config.modes, "modes"):
    params = pipe.mode_params(mode, abstract=True)
    extra = ()
    if mode == "zoom":   # pass 1 on the prompt; then pass 2 on image + crop (zoomed's shapes) after its cache
      pass_1 = pipe.zoom_program(prompts.image_start)
      programs.append(Program(f"zoom_pass_1 (prompt {prompts.ids.shape[1]})", b, pass_1, (params, *abstract(prompts))))
      prefix = jax.eval_shape(pass_1, params, *abstract(prompts))[1]
      stacked = not isinstance(prefix.k, list)   # [L, B, K, S, D], or per layer [B, K, S, D]
      extra = (jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=partitioner.batch(
          x.ndim, axis=int(stacked))), prefix),)
      two = np.concatenate([prompt[:prompts.image_start], np.full(pipe.family.image_tokens(cfg, pixels.shape),
                                                                  cfg.image_token_id), prompt[prompts.image_start:]])
      batch = pad_prompts([two] * b, np.stack([pixels, pixels], axis=1), pipe.buckets, cfg.pad_token_id,
                          cfg.image_token_id)
    else:
      batch = pipe.layout_for(prompts, mode)
    for name, program in {
        f"prefill_{mode} (prompt {batch.ids.shape[1]})": pipe.prefill_program(mode, batch.image_start),
        f"generate_{mode} (prompt {batch.ids.shape[1]}, +{config.max_new_tokens})":
            pipe.generate_program(mode, config.max_new_tokens, batch.image_start)}.items():
      programs.append(Program(name, b, program, (params, *abstract(batch), *extra)))
  return programs


def job_programs(config: ml_collections.ConfigDict, partitioner: shd.Partitioner) -> list[Program]:
  """The programs of the job `config` describes (a train.py config: its train step; an eval.py
  config: each mode's prefill and generation), built by the jobs' own code on abstract params."""
  return (train_programs if is_train_config(config) else eval_programs)(config, partitioner)


def is_train_config(config) -> bool:
  return "train" in config


def compile_config(config: ml_collections.ConfigDict, topology: str) -> list[Record]:
  """Every program of the job `config` describes, compiled for `topology`."""
  devices, hbm = topology_devices(topology)
  partitioner = topology_partitioner(config, devices, topology)
  kernel = _kernel(config, partitioner)

  def compile_fn(program: Program):
    with partitioner.activated():
      return program.lower().compile()
  return [_measure(p.name, functools.partial(compile_fn, p), topology, partitioner.mesh, kernel, p.batch, hbm)
          for p in job_programs(config, partitioner)]


def search_key(config: ml_collections.ConfigDict, topology: str) -> str:
  """What a max_batch search is of: the config (its batch aside), the topology and jax's version."""
  config = config.copy_and_resolve_references()
  (config.train if is_train_config(config) else config).batch_size = 0
  text = json.dumps([config.to_json_best_effort(sort_keys=True), topology, jax.__version__])
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_search_log(log: pathlib.Path, key: str) -> list[dict]:
  """The batches a search of `key` measured, in the order it measured them (other searches' lines,
  which share a log, are left out)."""
  if not log.exists():
    return []
  lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
  return [line for line in lines if line["search"] == key]


def max_batch(config: ml_collections.ConfigDict, topology: str, limit: int = 4096,
              measured: list[Record] | None = None, log: pathlib.Path | None = None) -> int:
  """The largest global batch (a multiple of what the mesh and gradient accumulation need) whose every
  program fits; 0 if none does. `measured`: the records of the config's own batch, if already compiled.
  `log`: a JSON-lines file each compiled batch is appended to (search_key, batch, the largest program's
  per-device GiB, fits, compile s); a search stopped part-way (a 7B one takes hours on a small host)
  resumes from it without compiling those batches again. A log holds what one version of the code
  measured: delete it after changing the model or the compiler.

  A program's memory is close to affine in its batch: the line through the config's own batch and its
  double (or half, if it does not fit) crosses the HBM budget at the guess, which is compiled with the
  multiple above it to confirm it. Where the line is off, the next guess interpolates between the
  nearest fitting and not-fitting batches, or bisects them where the last guess did not halve that
  bracket, so the search ends in a logarithmic number of compiles at worst; while every batch tried
  fits, the line through the two nearest the budget (not two neighbouring multiples) goes on
  (bisecting towards `limit` would compile batches many times too large). Two compiles beyond the
  config's own batch and its double when the line holds.
  """
  devices, hbm = topology_devices(topology)
  step = topology_partitioner(config, devices, topology).batch_parallelism
  node = config.train if is_train_config(config) else config
  if is_train_config(config):
    step *= config.train.grad_accum_steps
  budget = (1 - HEADROOM) * hbm
  peaks: dict[int, float] = {}     # multiples of `step` -> the largest per-device total of any program
  fitting: dict[int, bool] = {}

  key = search_key(config, topology)
  logged = {line["batch"]: line for line in read_search_log(log, key)} if log else {}
  if logged:
    print(f"  resuming from {log}: batches {', '.join(map(str, logged))} measured", flush=True)

  def note(m: int, records: list[Record]):
    peaks[m], fitting[m] = max(r.total_gib for r in records), all(r.fits for r in records)
    if log and m * step not in logged:
      log.parent.mkdir(parents=True, exist_ok=True)
      with log.open("a") as f:
        f.write(json.dumps({"search": key, "batch": m * step, "peak_gib": peaks[m], "fits": fitting[m],
                            "compile_s": round(sum(r.compile_s for r in records), 1)}) + "\n")

  def fits(m: int) -> bool:
    if m in fitting:
      return fitting[m]
    if m * step in logged:
      peaks[m], fitting[m] = logged[m * step]["peak_gib"], logged[m * step]["fits"]
      return fitting[m]
    node.batch_size = m * step
    note(m, compile_config(config, topology))
    print(f"  batch {m * step}: {peaks[m]:.2f} GiB per device of {budget:.1f} "
          f"({'fits' if fitting[m] else 'does not fit'})", flush=True)   # a search takes minutes
    return fitting[m]

  def line_ends(lo: int, hi: int) -> tuple[int, int]:
    """The line's two measured batches: the bracket's ends if both were measured, else the two nearest
    the budget, other than neighbouring multiples where there are others: their memory differs by
    noise more than by slope (v5p's 1872 and 1876 took 82.45 and 82.35 GiB, and that flat line sent
    the search to the 4096 limit)."""
    if lo in peaks and hi in peaks:
      return lo, hi
    near = sorted(peaks, key=lambda m: abs(peaks[m] - budget))
    return near[0], next((m for m in near[1:] if abs(m - near[0]) > 1), near[1])

  top = limit // step
  if top < 1:
    return 0
  own = node.batch_size // step if node.batch_size % step == 0 else 0
  if measured and 1 <= own <= top:
    note(own, measured)
  first = min(max(own, 1), top)
  second = min(2 * first, top) if fits(first) else first // 2
  if second >= 1 and second != first:
    fits(second)
  width = 2 * (top + 1)    # the first guess is always the line's
  while True:
    lo = max([m for m, ok in fitting.items() if ok], default=0)
    hi = min([m for m, ok in fitting.items() if not ok], default=top + 1)
    if hi - lo <= 1:
      if lo == top:
        print(f"  batch {lo * step} is the search's limit ({limit}): larger batches may fit too", flush=True)
      return lo * step
    # Bisect where the last guess did not halve the bracket; while nothing has failed yet there is no
    # bracket to halve, and the line through two fitting batches near the budget goes on.
    if len(peaks) < 2 or (hi <= top and 2 * (hi - lo) > width):
      guess = (lo + hi) // 2
    else:
      a, b = line_ends(lo, hi)
      slope = (peaks[b] - peaks[a]) / (b - a)
      guess = hi - 1 if slope <= 0 else int(a + (budget - peaks[a]) / slope)
    width = hi - lo
    guess = max(lo + 1, min(hi - 1, guess))
    if fits(guess) and guess + 1 < hi:   # a fitting guess is confirmed by the multiple above it
      fits(guess + 1)


def table(records: list[Record]) -> str:
  head = ["program", "topology", "mesh", "attention", "batch", "args GiB", "out GiB", "temp GiB", "total GiB",
          "HBM GiB", "fits (10% headroom)", "compile s"]
  gib = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
  rows = [[r.program, r.topology, r.mesh, r.attention, r.batch, gib(r.args_gib), gib(r.out_gib), gib(r.temp_gib),
           gib(r.total_gib) if r.args_gib is not None else f">{r.total_gib:.3f}", f"{r.hbm_gib:.1f}",
           "yes" if r.fits else "NO", f"{r.compile_s:.1f}"] for r in records]
  return "\n".join("| " + " | ".join(map(str, r)) + " |" for r in [head, ["---"] * len(head)] + rows)


def main(_):
  from absl import flags
  f = flags.FLAGS
  # What is measured is the compiler: never a program from a persistent cache (JAX_COMPILATION_CACHE_DIR).
  jax.config.update("jax_enable_compilation_cache", False)
  config = f.config
  topology = f.topology or config.aot.topology
  records = compile_config(config, topology)
  print(table(records))
  if f.max_batch:
    log = pathlib.Path(f.search_log) if f.search_log else None
    found = max_batch(config, topology, limit=f.max_batch_limit, measured=records, log=log)
    print(f"largest global batch that fits {topology}: {found}")
  if f.json:
    path = pathlib.Path(f.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([dataclasses.asdict(r) for r in records], indent=2))


def define_flags(fv=None, argv: list[str] | None = None):
  """The command's flags, with the --config.FIELD overrides of `argv` (default sys.argv): the
  README-commands test parses the README's lines with these."""
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FLAGS if fv is None else fv
  config_flags.DEFINE_config_file("config", None, "A train.py or eval.py configuration.", flag_values=fv,
                                  lock_config=True, sys_argv=argv)
  flags.DEFINE_string("topology", None, "TPU topology, e.g. v5e:2x4 (default: the config's aot.topology).",
                      flag_values=fv)
  flags.DEFINE_string("json", None, "Also write the records to this JSON file.", flag_values=fv)
  flags.DEFINE_bool("max_batch", False, "Find the largest global batch that fits (compiles at two batches "
                    "give the memory line; its crossing with the HBM budget is confirmed by compiling it).",
                    flag_values=fv)
  flags.DEFINE_integer("max_batch_limit", 4096, "With --max_batch: the largest global batch tried.", flag_values=fv)
  flags.DEFINE_string("search_log", None, "With --max_batch: append each compiled batch to this JSON-lines "
                      "file, and resume a stopped search from it.", flag_values=fv)
  flags.mark_flag_as_required("config", flag_values=fv)


if __name__ == "__main__":
  from blink_jax import cli
  cli.run(main, define_flags)
