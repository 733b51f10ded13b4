"""The evaluation job: every benchmark x mode, predictions streamed to
`<output_dir>/<benchmark>/<mode>.jsonl` as they are produced; a rerun skips the question ids already
there (a line cut by a kill is dropped and redone), so each question is answered exactly once.
Scores go to results.json and results.md, with the paper's numbers beside them for LLaVA-1.5-7B."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any, Iterable

import jax
import ml_collections
from etils import epath
from tqdm import tqdm

from blink_jax import sharding as shd
from blink_jax.blink.config import from_mapping
from blink_jax.checkpoint import load_token_sr
from blink_jax.eval import benchmarks, mmvet
from blink_jax.eval.example import EvalExample
from blink_jax.eval.readers import LazyFile, read_rows
from blink_jax.eval.sample_benchmarks import write_samples
from blink_jax.pipeline import LlavaPipeline
from blink_jax.tokenizer import byte_level_tokenizer


STRUCTURAL_FIELDS = ("first_scan_layer", "last_scan_layer", "region_size", "token_sr_channels")


def build_pipeline(config: ml_collections.ConfigDict, mesh) -> LlavaPipeline:
  """The model to evaluate: an HF checkpoint, or the embedded random model (the one train.py's
  default trains TokenSR for) with a byte-level tokenizer; plus Blink settings and TokenSR weights."""
  rules = shd.rules_from_config(config.sharding_rules)
  buckets = tuple(config.prompt_buckets)
  if config.model.hf_checkpoint:
    pipe = LlavaPipeline.from_hf(config.model.hf_checkpoint, mesh=mesh, dtype=config.model.dtype,
                                 param_dtype=config.model.param_dtype,
                                 preprocessing=config.model.preprocessing, buckets=buckets, rules=rules,
                                 attention=config.model.attention)
  else:
    from blink_jax.train.state import backbone
    cfg, params = backbone(config.model, mesh, rules, config.seed)
    tokenizer = byte_level_tokenizer(cfg.image_token_id, cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id)
    pipe = LlavaPipeline(cfg, params, tokenizer, mesh, config.model.preprocessing, buckets, rules)
  token_sr, blink = None, from_mapping(config.blink.to_dict())
  if config.token_sr:
    token_sr, trained_for = load_token_sr(config.token_sr, width=pipe.cfg.text.hidden_size, mesh=mesh,
                                          rules=rules)
    # Where TokenSR sits is fixed by training; thresholds and the rest stay the config's.
    structural = {k: getattr(trained_for, k) for k in STRUCTURAL_FIELDS}
    if any(getattr(blink, k) != v for k, v in structural.items()):
      logging.warning("config.blink %s replaced by the TokenSR export's %s",
                      {k: getattr(blink, k) for k in STRUCTURAL_FIELDS}, structural)
    blink = dataclasses.replace(blink, **structural)
  return pipe.with_blink(blink, token_sr)


def load_predictions(path: epath.Path) -> dict[str, str]:
  """question_id -> text; a torn last line (the run was killed mid-write) is cut off the file."""
  if not path.exists():
    return {}
  raw = path.read_text()
  lines = raw.split("\n")
  out, good = {}, 0
  for i, line in enumerate(lines):
    if not line.strip():
      good += len(line) + 1
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      if i == len(lines) - 1:
        path.write_text(raw[:good])
        break
      raise ValueError(f"{path}:{i + 1}: corrupt prediction line (not the last one); fix or delete it")
    out[str(row["question_id"])] = row["text"]
    good += len(line) + 1
  return out


def collect_examples(bench: benchmarks.Benchmark, rows: Iterable[dict], where: str):
  """(examples, number of malformed rows skipped)."""
  examples, skipped, seen = [], 0, set()
  for row in rows:
    try:
      new = bench.examples(row, where)
    except (ValueError, KeyError, TypeError) as e:
      skipped += 1
      logging.warning("%s: skipping malformed row %s: %s", where, row.get("_row"), e)
      continue
    for e in new:
      if e.question_id in seen:
        raise ValueError(f"{where}: question_id {e.question_id!r} appears twice; ids must be unique")
      seen.add(e.question_id)
      examples.append(e)
  return examples, skipped


def _load_image(e: EvalExample):
  return e.image.read() if isinstance(e.image, LazyFile) else e.image


def answer(pipe: LlavaPipeline, examples: list[EvalExample], mode: str, path: epath.Path, *,
           batch_size: int, max_new_tokens: int, desc: str) -> int:
  """Answers the examples not yet in `path`, appending as it goes. Returns how many had no image."""
  done = load_predictions(path)
  todo = [e for e in examples if e.question_id not in done]
  missing = 0
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("a") as f, tqdm(total=len(examples), initial=len(examples) - len(todo), desc=desc,
                                 disable=jax.process_index() != 0, dynamic_ncols=True) as bar:
    for start in range(0, len(todo), batch_size):
      chunk, images = [], []
      for e in todo[start:start + batch_size]:
        try:
          images.append(_load_image(e))
          chunk.append(e)
        except (FileNotFoundError, OSError) as err:
          missing += 1
          logging.warning("%s: question %s skipped, image unavailable: %s", desc, e.question_id, err)
      bar.update(len(todo[start:start + batch_size]) - len(chunk))
      if not chunk:
        continue
      fill = batch_size - len(chunk)  # static batch shape: repeat the last question
      batch = pipe.prepare(images + [images[-1]] * fill, [e.question for e in chunk] + [chunk[-1].question] * fill)
      texts = pipe.generate(batch, max_new_tokens, mode=mode)[:len(chunk)]
      for e, text in zip(chunk, texts):
        f.write(json.dumps({"question_id": e.question_id, "text": text}, ensure_ascii=False) + "\n")
      f.flush()
      bar.update(len(chunk))
  return missing


def resolve_sources(config: ml_collections.ConfigDict, output: epath.Path) -> dict[str, dict]:
  samples = None
  out = {}
  for name in config.benchmarks:
    source = {k: v for k, v in config.sources[name].to_dict().items() if v} if name in config.sources else {}
    if not source:
      samples = samples or write_samples(output / "samples")
      source = samples[name]
    out[name] = source
  return out


def evaluate(config: ml_collections.ConfigDict) -> dict[str, Any]:
  for name in config.benchmarks:
    benchmarks.get(name)
  for mode in config.modes:
    if mode not in benchmarks.MODES:
      raise ValueError(f"unknown mode {mode!r}; expected some of {benchmarks.MODES}")
  output = epath.Path(config.output_dir)
  output.mkdir(parents=True, exist_ok=True)
  mesh = shd.make_mesh(config.mesh.to_dict())
  ways = shd.batch_parallelism(mesh, shd.rules_from_config(config.sharding_rules))
  if config.batch_size % ways:
    raise ValueError(f"batch_size={config.batch_size} must be divisible by the batch-parallel mesh size "
                     f"{ways} (mesh {dict(mesh.shape)})")
  pipe = build_pipeline(config, mesh)
  sources = resolve_sources(config, output)
  results: dict[str, Any] = {}
  for name in config.benchmarks:
    bench = benchmarks.get(name)
    examples, malformed = collect_examples(bench, read_rows(sources[name]), f"{name} ({sources[name]})")
    if not examples:
      raise ValueError(f"{name}: no usable questions in {sources[name]}")
    results[name] = {"questions": len(examples), "malformed_rows_skipped": malformed}
    for mode in config.modes:
      path = output / name / f"{mode}.jsonl"
      missing = answer(pipe, examples, mode, path, batch_size=config.batch_size,
                       max_new_tokens=config.max_new_tokens, desc=f"{name}/{mode}")
      predictions = load_predictions(path)
      if name == "mmvet":
        mmvet.grader_file(predictions, output / name / f"{mode}_for_grader.json")
      results[name][mode] = {**bench.score(predictions, examples), "missing_images_skipped": missing}
  write_results(results, config, pipe, output)
  return results


def is_llava_7b(pipe: LlavaPipeline) -> bool:
  t, v = pipe.cfg.text, pipe.cfg.vision
  return (t.num_layers, t.hidden_size, v.image_size, v.num_layers) == (32, 4096, 336, 24)


def write_results(results: dict, config, pipe: LlavaPipeline, output: epath.Path):
  modes = list(config.modes)
  paper = is_llava_7b(pipe)
  (output / "results.json").write_text(json.dumps(results, indent=2))
  header = ["benchmark", "metric"] + modes + ([f"paper {m}" for m in modes] if paper else [])
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  column = {m: i for i, m in enumerate(benchmarks.MODES)}
  for name, res in results.items():
    bench = benchmarks.get(name)
    for metric in bench.headline + tuple(k for k in bench.paper if k not in bench.headline):
      cells = [f"{res[m][metric]:.2f}" if metric in res.get(m, {}) else "" for m in modes]
      if paper:
        cells += [f"{bench.paper[metric][column[m]]:.2f}" if metric in bench.paper else "" for m in modes]
      lines.append("| " + " | ".join([name, metric] + cells) + " |")
  (output / "results.md").write_text("\n".join(lines) + "\n")
  if jax.process_index() == 0:
    print("\n".join(lines))
