"""The evaluation job: every benchmark x mode, predictions streamed to
`<output_dir>/<benchmark>/<mode>.jsonl` as they are produced; a rerun skips the question ids already
there (a line cut by a kill is dropped and redone), so each question is answered exactly once.

Nothing is scored that was not answered: a question whose image is missing, unreadable or refused is
skipped, named and counted; scores are computed over the answered questions only, a benchmark with
skipped questions is marked incomplete, and one with no answer has no score. Predictions are only
resumed under the settings that made them (`<mode>.run.json`, see eval/provenance.py). Scores go to
results.json and results.md, with the paper's numbers beside them for LLaVA-1.5-7B.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from typing import Any, Iterable

import jax
import ml_collections
from etils import epath
from tqdm import tqdm

from blink_jax import backbone
from blink_jax import config_lists
from blink_jax import sharding as shd
from blink_jax.blink.config import from_mapping
from blink_jax.checkpoint import DEFAULT_EXPORT, load_token_sr, params_sha256, token_sr_settings
from blink_jax.data.image_preprocessing import ImageError
from blink_jax.eval import benchmarks, diagnostics, mmvet, paired, provenance
from blink_jax.eval.example import EvalExample
from blink_jax.eval.readers import load_row_image, read_rows
from blink_jax.eval.sample_benchmarks import write_samples
from blink_jax.inference import zoom as zoom_lib
from blink_jax.inference.pipeline import Pipeline

STRUCTURAL_FIELDS = ("first_scan_layer", "last_scan_layer", "region_size", "token_sr_channels",
                     "token_sr_arch")
MAX_LISTED_SKIPS = 50


class NothingAnswered(RuntimeError):
  """Some benchmark x mode got no answer at all (results are written, without a score for it)."""


@dataclasses.dataclass
class Evaluated:
  """The loaded model in every mode, and where its TokenSR came from."""
  pipe: Pipeline
  token_sr_source: str       # what a reader of the results needs to know
  token_sr_digest: str       # "" when untrained


def _token_sr_path(config: ml_collections.ConfigDict) -> tuple[str, str]:
  """(export directory or "", a sentence on where tokensr's weights come from)."""
  if config.token_sr not in ("", "auto"):
    return config.token_sr, f"TokenSR trained weights from {config.token_sr}"
  if config.token_sr == "auto" and not config.model.hf_checkpoint:
    if epath.Path(DEFAULT_EXPORT, "blink.json").exists():
      return DEFAULT_EXPORT, f"TokenSR from {DEFAULT_EXPORT} (train.py's default job)"
    return "", (f"untrained TokenSR (= interp): {DEFAULT_EXPORT} does not exist; run "
                "`python train.py --config configs/tokensr.py` first")
  return "", "untrained TokenSR (= interp): set --config.token_sr to train.py's export/ directory"


def build_pipeline(config: ml_collections.ConfigDict, partitioner: shd.Partitioner,
                   abstract: bool = False) -> Evaluated:
  """The model to evaluate: an HF checkpoint, or the embedded random model (the one train.py's
  default trains TokenSR for) with a byte-level tokenizer, either with an SFT run's params
  (model.params) if given; plus Blink settings and TokenSR weights.
  With `abstract`, shapes only (aot.py): nothing is read but config.json, tokenizer.json, blink.json."""
  buckets = tuple(config_lists.ints(config.prompt_buckets, "prompt_buckets"))
  ckpt = config.model.hf_checkpoint
  if ckpt and not abstract and not config.model.params:
    pipe = Pipeline.from_hf(ckpt, partitioner=partitioner, dtype=config.model.dtype,
                                 param_dtype=config.model.param_dtype,
                                 preprocessing=config.model.preprocessing, buckets=buckets,
                                 attention=config.model.attention, layer_layout=config.model.layer_layout)
  else:
    cfg, params = backbone.build(config.model, partitioner, config.seed, training=False, abstract=abstract)
    pipe = Pipeline(cfg, params, backbone.tokenizer(config.model, cfg), partitioner, config.model.preprocessing,
                    buckets)
  token_sr, blink = None, from_mapping(config.blink.to_dict())
  path, source = _token_sr_path(config)
  digest = ""
  if path:
    width = pipe.cfg.text.hidden_size
    if abstract:   # its shapes follow from its settings (mode_params makes them)
      trained_for = token_sr_settings(path, width=width)
    else:
      token_sr, trained_for = load_token_sr(path, width=width, partitioner=partitioner)
      digest = params_sha256(token_sr)
    # Where TokenSR sits is fixed by training; thresholds and the rest stay the config's.
    structural = {k: getattr(trained_for, k) for k in STRUCTURAL_FIELDS}
    if any(getattr(blink, k) != v for k, v in structural.items()):
      logging.warning("config.blink %s replaced by the TokenSR export's %s",
                      {k: getattr(blink, k) for k in STRUCTURAL_FIELDS}, structural)
    blink = dataclasses.replace(blink, **structural)
  pipe = pipe.with_zoom(zoom_lib.from_mapping(config.zoom.to_dict(), "config.zoom"))
  if set(config_lists.names(config.modes, "modes")) <= {"vanilla", "zoom"}:
    return Evaluated(pipe, source, digest)   # Blink's settings play no part (nor are they checked)
  return Evaluated(pipe.with_blink(blink, token_sr), source, digest)


def load_predictions(path: epath.Path) -> dict[str, dict]:
  """question_id -> its prediction row; a torn last line (the run was killed mid-write) is cut off."""
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
    out[str(row["question_id"])] = row
    good += len(line) + 1
  return out


def collect_examples(bench: benchmarks.Benchmark, rows: Iterable[dict], where: str):
  """(examples, number of malformed rows skipped)."""
  examples, skipped, seen = [], 0, set()
  for row in rows:
    try:
      examples += bench.examples(row, where)
    except (ValueError, KeyError, TypeError) as e:
      skipped += 1
      logging.warning("%s: skipping malformed row %s: %s", where, row.get("_row"), e)
  if bench.finish is not None:
    examples = bench.finish(examples)
  for e in examples:
    if e.question_id in seen:
      raise ValueError(f"{where}: question_id {e.question_id!r} appears twice; ids must be unique")
    seen.add(e.question_id)
  return examples, skipped


def decode_image(e: EvalExample, max_pixels: int | None):
  """The example's image as RGB, or ImageError naming the file (or the input) and why."""
  return load_row_image(e.image, f"of question {e.question_id}", max_pixels)


def _targets(chunk: list[EvalExample]) -> list:
  """Each example's target box (its meta's; None without one), which the oracle ablations take."""
  return [e.meta.get("box") for e in chunk]


def _generated(pipe: Pipeline, chunk: list[EvalExample], images: list, mode: str, max_new_tokens: int) -> list[dict]:
  batch = pipe.prepare(images, [e.question for e in chunk])
  texts, expansions = pipe.generate(batch, max_new_tokens, mode=mode, with_expansions=True,
                                    targets=_targets(chunk))
  return [{"question_id": e.question_id, "text": t, "expansions": int(n)}
          for e, t, n in zip(chunk, texts, expansions)]


def _chosen(pipe: Pipeline, chunk: list[EvalExample], images: list, mode: str, batch_size: int) -> list[dict]:
  """Each example's choices scored as the assistant's reply; the prediction is the choice of highest
  mean log-probability per token (V* Bench: the least mean cross-entropy). One row per (question,
  choice), `batch_size` rows a call."""
  pairs = [(i, c) for i, e in enumerate(chunk) for c in e.choices]
  logprob, length, expansions = [], [], []
  for start in range(0, len(pairs), batch_size):
    part = pairs[start:start + batch_size]
    part += [part[-1]] * (batch_size - len(part))
    batch = pipe.prepare([images[i] for i, _ in part], [chunk[i].question for i, _ in part])
    scores = pipe.loglikelihood(batch, [pipe.family.answer(c) for _, c in part], mode=mode,
                                targets=_targets([chunk[i] for i, _ in part]))
    logprob += scores.logprob.tolist()
    length += scores.length.tolist()
    expansions += scores.expansions.tolist()
  rows, k = [], 0
  for e in chunk:
    n = len(e.choices)
    lp, tokens = logprob[k:k + n], length[k:k + n]
    best = max(range(n), key=lambda j: lp[j] / tokens[j])
    rows.append({"question_id": e.question_id, "text": e.choices[best], "choice": best,
                 "logprobs": [round(x, 4) for x in lp], "tokens": tokens, "expansions": int(expansions[k])})
    k += n
  return rows


def answer(pipe: Pipeline, examples: list[EvalExample], mode: str, path: epath.Path, *,
           batch_size: int, max_new_tokens: int, desc: str, max_pixels: int | None = None) -> list[dict]:
  """Answers the examples not yet in `path`, appending as it goes: generated, or (examples with
  choices) the choice the model finds most likely. Returns the questions skipped ({'question_id',
  'reason'}), each also logged."""
  done = load_predictions(path)
  todo = [e for e in examples if e.question_id not in done]
  # One kind per batch: generated questions first, then scored choices.
  todo = [e for e in todo if e.choices is None] + [e for e in todo if e.choices is not None]
  skipped = []
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("a") as f, tqdm(total=len(examples), initial=len(examples) - len(todo), desc=desc,
                                 disable=jax.process_index() != 0, dynamic_ncols=True) as bar:
    start = 0
    while start < len(todo):
      kind = todo[start].choices is None
      group = list(itertools.takewhile(lambda e: (e.choices is None) == kind, todo[start:start + batch_size]))
      start += len(group)
      chunk, images = [], []
      for e in group:
        try:
          images.append(decode_image(e, max_pixels))
          chunk.append(e)
        except ImageError as err:
          skipped.append({"question_id": e.question_id, "reason": str(err)})
          logging.warning("%s: question %s skipped: %s", desc, e.question_id, err)
      bar.update(len(group) - len(chunk))
      # One image shape a batch (Qwen2.5-VL's grid buckets): a group of several is answered in parts,
      # each padded to batch_size (static shapes) by repeating its last question.
      for idx in pipe.shape_batches(images, batch_size):
        real = list(dict.fromkeys(idx))
        rows = (_generated(pipe, [chunk[i] for i in idx], [images[i] for i in idx], mode, max_new_tokens)[:len(real)]
                if kind else _chosen(pipe, [chunk[i] for i in real], [images[i] for i in real], mode, batch_size))
        for row in rows:
          f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        bar.update(len(real))
  return skipped


def link_diagnostics(pipe: Pipeline, bench: benchmarks.Benchmark, examples: list[EvalExample],
                     predictions: dict[str, dict], mode: str, batch_size: int, max_pixels: int | None,
                     prefix_ids) -> dict | None:
  """eval/diagnostics.py over the answered questions that carry a box; None when none does."""
  boxed, images = [], []
  for e in examples:
    if e.meta.get("box") and e.question_id in predictions:
      boxed.append(e)
      images.append(decode_image(e, max_pixels))
  if not boxed:
    return None

  def correct(e: EvalExample) -> bool:
    return bench.score({e.question_id: predictions[e.question_id]["text"]}, [e])["accuracy"] == 100
  return diagnostics.diagnose(pipe, boxed, images, mode, batch_size, correct, prefix_ids)


def configured_source(config: ml_collections.ConfigDict, name: str) -> dict:
  """The source fields config.sources.<name> sets; {} for the embedded sample."""
  return {k: v for k, v in config.sources[name].to_dict().items() if v} if name in config.sources else {}


def resolve_sources(config: ml_collections.ConfigDict, names: list[str], output: epath.Path) -> dict[str, dict]:
  samples = None
  out = {}
  for name in names:
    source = configured_source(config, name)
    if not source:
      samples = samples or write_samples(output / "samples")
      source = samples[name]
    out[name] = source
  return out


def score_mode(bench: benchmarks.Benchmark, examples: list[EvalExample], predictions: dict[str, dict],
               skipped: list[dict]) -> dict[str, Any]:
  """Scores over the answered questions only, with how many were answered and why others were not."""
  answered = [e for e in examples if e.question_id in predictions]
  texts = {e.question_id: predictions[e.question_id]["text"] for e in answered}
  unanswered = {e.question_id for e in examples} - set(texts)
  reasons = [s for s in skipped if s["question_id"] in unanswered]
  listed = {s["question_id"] for s in reasons}
  reasons += [{"question_id": q, "reason": "no prediction (skipped in an earlier run)"}
              for q in sorted(unanswered - listed)]
  out: dict[str, Any] = {
      "questions": len(examples), "answered": len(answered), "skipped": len(unanswered),
      "complete": not unanswered, "skipped_questions": reasons[:MAX_LISTED_SKIPS],
      "expansions": sum(int(predictions[q].get("expansions", 0)) for q in texts),
      "questions_expanded": sum(int(predictions[q].get("expansions", 0)) > 0 for q in texts),
  }
  out["scores"] = bench.score(texts, answered) if answered else {}
  return out


def check_settings(config: ml_collections.ConfigDict) -> tuple[list[str], list[str], shd.Partitioner]:
  """The benchmarks, modes and partitioner `config` names, checked before anything is loaded."""
  names = config_lists.names(config.benchmarks, "benchmarks")
  modes = config_lists.names(config.modes, "modes")
  for name in names:
    benchmarks.get(name)
  for mode in modes:
    if mode not in benchmarks.MODES:
      raise ValueError(f"unknown mode {mode!r}; expected some of {benchmarks.MODES}")
  partitioner = shd.Partitioner.from_config(config)
  ways = partitioner.batch_parallelism
  if config.batch_size % ways:
    raise ValueError(f"batch_size={config.batch_size} must be divisible by the batch-parallel mesh size "
                     f"{ways} (mesh {dict(partitioner.mesh.shape)})")
  return names, modes, partitioner


def evaluate(config: ml_collections.ConfigDict) -> dict[str, Any]:
  names, modes, partitioner = check_settings(config)
  output = epath.Path(config.output_dir)
  output.mkdir(parents=True, exist_ok=True)
  model = build_pipeline(config, partitioner)
  pipe = model.pipe
  if "tokensr" in modes and jax.process_index() == 0:
    print(f"tokensr: {model.token_sr_source}")
  sources = resolve_sources(config, names, output)
  max_pixels = config.max_image_pixels or None
  results: dict[str, Any] = {"_run": {"token_sr": model.token_sr_source, "modes": modes}}
  for name in names:
    bench = benchmarks.get(name)
    examples, malformed = collect_examples(bench, read_rows(sources[name]), f"{name} ({sources[name]})")
    if not examples:
      raise ValueError(f"{name}: no usable questions in {sources[name]}")
    results[name] = {"questions": len(examples), "malformed_rows_skipped": malformed}
    texts = {}
    for mode in modes:
      path = output / name / f"{mode}.jsonl"
      provenance.check_or_start(path, provenance.record(config, model, mode, sources[name], examples))
      skipped = answer(pipe, examples, mode, path, batch_size=config.batch_size,
                       max_new_tokens=config.max_new_tokens, desc=f"{name}/{mode}", max_pixels=max_pixels)
      predictions = load_predictions(path)
      if name == "mmvet":
        mmvet.grader_file({q: p["text"] for q, p in predictions.items()}, output / name / f"{mode}_for_grader.json")
      results[name][mode] = score_mode(bench, examples, predictions, skipped)
      texts[mode] = {q: p["text"] for q, p in predictions.items()}
      if config.diagnostics and mode != "vanilla":
        found = link_diagnostics(pipe, bench, examples, predictions, mode, config.batch_size, max_pixels,
                                 backbone.prompt_prefix(config.model, pipe.cfg))
        if found is not None:
          results[name][mode]["diagnostics"] = found
          (output / name / f"{mode}.diagnostics.json").write_text(json.dumps(found, indent=2))
    if "vanilla" in modes and bench.scored_here:
      results[name]["paired"] = {m: paired.compare(bench, examples, texts["vanilla"], texts[m],
                                                   samples=config.bootstrap_samples, seed=config.seed)
                                 for m in modes if m != "vanilla"}
  left_out = earlier_benchmarks(output, names)
  write_results(results, modes, pipe, output)
  if jax.process_index() == 0:
    print(f"results: {output / 'results.md'} and results.json; answers: {output}/<benchmark>/<mode>.jsonl")
    if left_out:
      print(f"results.md and results.json now cover {','.join(names)}; the earlier results of "
            f"{','.join(left_out)} in {output} are left out of them. To score them together, run with "
            f"--config.benchmarks={','.join(names + left_out)}: answers already in the folder are resumed, "
            "not recomputed.")
  nothing = [f"{n}/{m}" for n in names for m in modes if not results[n][m]["answered"]]
  if nothing:
    raise NothingAnswered(f"no question was answered for {nothing} (every image was skipped; see the warnings "
                       f"and {output / 'results.json'}); nothing was scored for them")
  return results


def earlier_benchmarks(output: epath.Path, names: list[str]) -> list[str]:
  """The benchmarks an earlier run's results.json in `output` scored that this run does not."""
  path = output / "results.json"
  if not path.exists():
    return []
  try:
    earlier = json.loads(path.read_text())
  except json.JSONDecodeError:
    return []
  return sorted(n for n in earlier if not n.startswith("_") and n not in names)


def is_llava_7b(pipe: Pipeline) -> bool:
  if pipe.family.name != "llava":
    return False
  t, v = pipe.cfg.text, pipe.cfg.vision
  return (t.num_layers, t.hidden_size, v.image_size, v.num_layers) == (32, 4096, 336, 24)


def paired_table(results: dict, modes: list[str]) -> list[str]:
  """results.md's second table: each Blink mode minus vanilla per headline metric, over the questions
  both answered, with the 95% paired-bootstrap interval; '*' where the interval excludes 0."""
  blink = [m for m in modes if m != "vanilla"]
  rows = [(name, metric, res["paired"]) for name, res in results.items() if not name.startswith("_")
          and res.get("paired") for metric in benchmarks.get(name).headline
          if any(metric in by_metric for by_metric in res["paired"].values())]
  if not blink or not rows:
    return []
  out = ["", "Paired with vanilla (same questions; 95% bootstrap interval over them, '*' where it excludes 0):",
         "", "| benchmark | metric | questions | " + " | ".join(f"{m} - vanilla" for m in blink) + " |",
         "|" + "---|" * (3 + len(blink))]
  for name, metric, by_mode in rows:
    cells, n = [], ""
    for m in blink:
      d = by_mode.get(m, {}).get(metric)
      if d is None:
        cells.append("")
        continue
      n, ci = d["questions"], d["ci95"]
      if ci is None:
        cells.append(f"{d['difference']:+.2f}")
      else:
        cells.append(f"{d['difference']:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]" + ("*" if ci[0] > 0 or ci[1] < 0 else ""))
    out.append(f"| {name} | {metric} | {n} | " + " | ".join(cells) + " |")
  return out


def write_results(results: dict, modes: list[str], pipe: Pipeline, output: epath.Path):
  """results.json, and results.md: a metric per row, a mode per column (the paper's beside them for
  LLaVA-1.5-7B); per benchmark the answered count and Blink's expansions. A score over an incomplete
  set of answers carries a '*', a benchmark without answers shows '-'."""
  paper = is_llava_7b(pipe)
  (output / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
  header = ["benchmark", "metric"] + modes + ([f"paper {m}" for m in modes] if paper else [])
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  column = {m: i for i, m in enumerate(benchmarks.BLINK_MODES)}
  blank = [""] * len(modes) if paper else []
  incomplete = False
  for name, res in results.items():
    if name.startswith("_"):
      continue
    bench = benchmarks.get(name)
    for metric in bench.headline + tuple(k for k in bench.paper if k not in bench.headline):
      cells = []
      for m in modes:
        r = res[m]
        if not r["answered"]:
          cells.append("-")
        elif metric in r["scores"]:
          cells.append(f"{r['scores'][metric]:.2f}" + ("" if r["complete"] else "*"))
          incomplete |= not r["complete"]
        else:
          cells.append("")
      if paper:
        cells += [f"{bench.paper[metric][column[m]]:.2f}" if metric in bench.paper and m in column else ""
                  for m in modes]
      lines.append("| " + " | ".join([name, metric] + cells) + " |")
    lines.append("| " + " | ".join([name, "answered"] + [f"{res[m]['answered']}/{res[m]['questions']}"
                                                         for m in modes] + blank) + " |")
    lines.append("| " + " | ".join([name, "expansions (questions)"] + [
        "" if m in ("vanilla", "zoom") else f"{res[m]['expansions']} ({res[m]['questions_expanded']})" for m in modes]
        + blank) + " |")
  lines += paired_table(results, modes)
  notes = [f"tokensr: {results['_run']['token_sr']}"] if "tokensr" in modes else []
  if incomplete:
    notes.append("* incomplete: scored over the answered questions only; the skipped ones are listed in "
                 "results.json")
  text = "\n".join(lines) + "\n" + "".join(f"\n{n}\n" for n in notes)
  (output / "results.md").write_text(text)
  if jax.process_index() == 0:
    print(text)
