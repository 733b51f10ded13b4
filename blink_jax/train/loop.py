"""The TokenSR distillation job: set-up, the step loop, metrics, checkpoints, preemption, export.

Settings are validated before any data is read. A preempted run (SIGTERM) saves a checkpoint and
raises `Preempted`, which train.py turns into exit code PREEMPTED_EXIT_CODE (75, EX_TEMPFAIL), so a
scheduler can tell "rerun me" from success."""

from __future__ import annotations

import functools
import json
import logging
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from clu import metric_writers
from etils import epath
from jax.experimental import multihost_utils
from tqdm import tqdm

from blink_jax import backbone, families
from blink_jax import sharding as shd
from blink_jax.checkpoint import TrainCheckpoints, export_model, export_token_sr, params_sha256
from blink_jax.data.image_folder_builder import build_image_folder_dataset, dataset_name
from blink_jax.data.sample_images import write_sample_images
from blink_jax.data.train_pipeline import (DecodeAndPreprocess, QuestionSuffix, data_source, skipped_count,
                                           to_global, train_dataset)
from blink_jax.train import run_record, sft
from blink_jax.train.state import unflatten
from blink_jax.train.step import check_objective, train_program

PREEMPTED_EXIT_CODE = 75
RATE_METRICS = ("learning_rate", "steps_per_sec", "examples_per_sec", "skipped_images")


class Preempted(Exception):
  """The run saved a checkpoint at `step` and stopped for preemption; rerun the same command."""

  def __init__(self, step: int):
    super().__init__(f"stopped at step {step} for preemption; rerun the same command to resume")
    self.step = step


class _Preemption:
  """Turns SIGTERM (a TPU VM being preempted) into a flag the loop checks after each step."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint after this step, then exiting")
    self.requested = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


def maybe_initialize_distributed(config: ml_collections.ConfigDict):
  """jax.distributed.initialize() for multi-host runs (TPU pods detect everything themselves)."""
  d = config.distributed
  if not d.enabled:
    return
  kwargs = {}
  if d.coordinator_address:
    kwargs = dict(coordinator_address=d.coordinator_address, num_processes=d.num_processes,
                  process_id=d.process_id)
  jax.distributed.initialize(**kwargs)


def resolve_dataset(config: ml_collections.ConfigDict, workdir: epath.Path):
  """(TFDS data source, its identity for messages and the run record): a dataset by name, an image
  folder (built once per folder content), or the embedded sample."""
  d = config.data
  if d.name:
    return data_source(d.name, d.data_dir, d.split), f"{d.name} ({d.split}) in {d.data_dir}"
  data_dir = d.data_dir or str(workdir / "tfds")
  if d.image_folder:
    folder = d.image_folder
  else:
    folder = str(workdir / "sample_images")
    if jax.process_index() == 0 and not epath.Path(folder).exists():
      write_sample_images(folder, d.sample_images)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("sample images written")
  if not epath.Path(folder).is_dir():
    raise FileNotFoundError(f"config.data.image_folder={folder!r}: image folder not found")
  # Every host must open the dataset process 0 builds, even if the folder changes meanwhile.
  name = dataset_name(folder) if jax.process_index() == 0 else ""
  if jax.process_count() > 1:
    raw = multihost_utils.broadcast_one_to_all(np.frombuffer(name.encode().ljust(256), np.uint8))
    name = bytes(np.asarray(raw)).decode().strip()
  if jax.process_index() == 0:
    build_image_folder_dataset(folder, data_dir, name)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("dataset built")
  return (data_source(f"blink_image_folder/{name}", data_dir, "train"),
          f"image folder {folder} (dataset blink_image_folder/{name} in {data_dir})")


def _examples(config: ml_collections.ConfigDict, program, workdir: epath.Path):
  """(the examples' source, its identity, what makes a step's example of one): images for
  distillation (with question tokens for saliency-guided regions), or question-answer pairs for SFT."""
  cfg, family, max_pixels = program.cfg, program.family, config.data.max_image_pixels or None
  if config.train.objective == "sft":
    rows, dataset = sft.source_rows(config.data)
    return rows, dataset, sft.TokenizeExample(family, cfg, program.preprocessing, program.tokenizer,
                                              program.batch["ids"].shape[1], max_pixels, program.prefix,
                                              program.expansion)
  source, dataset = resolve_dataset(config, workdir)
  questions = None
  if "question_ids" in program.batch:   # saliency-guided regions: the step takes question tokens
    questions = QuestionSuffix(program.tokenizer, family.image_tokens(cfg, program.batch["pixels"].shape),
                               config.data.max_question_tokens, cfg.pad_token_id, family.prompt)
  preprocess = functools.partial(family.preprocess, cfg=cfg, preprocessing=program.preprocessing)
  return source, dataset, DecodeAndPreprocess(config.data.image_key, preprocess, questions, max_pixels=max_pixels)


def check_settings(config: ml_collections.ConfigDict):
  """Settings that would otherwise surface only once data flows (and look like bad images)."""
  families.of_config(backbone.model_config(config.model, training=True)).training_preprocessing(
      config.model.preprocessing)
  check_objective(config.train)
  if config.data.region not in ("saliency", "random"):
    raise ValueError(f"data.region={config.data.region!r}; expected 'saliency' or 'random'")
  if config.data.max_consecutive_skips < 1:
    raise ValueError(f"data.max_consecutive_skips={config.data.max_consecutive_skips} must be >= 1")
  t = config.train
  if t.validate_every < 0 or t.patience < 0:
    raise ValueError(f"train.validate_every={t.validate_every}, train.patience={t.patience}: each must be >= 0")
  if t.validate_every and t.objective != "sft":
    raise ValueError(f"train.validate_every={t.validate_every} scores answers: it needs train.objective='sft', "
                     f"not {t.objective!r}")
  if t.validate_every and not config.data.sft_validation.format:
    raise ValueError(f"train.validate_every={t.validate_every} needs held-out examples: set "
                     "config.data.sft_validation.format and its fields, as config.data.sft's")
  if t.patience and not t.validate_every:
    raise ValueError(f"train.patience={t.patience} counts validations: set train.validate_every too")
  if not 0.0 <= t.sft_expand <= 1.0 or (t.sft_expand and t.objective != "sft"):
    raise ValueError(f"train.sft_expand={t.sft_expand} is a share of fine-tuning examples: it needs "
                     f"0 <= sft_expand <= 1 and train.objective='sft' (not {t.objective!r})")


def train(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Runs (or resumes) the job described by `config`; returns the last logged metrics. Raises
  Preempted after saving when SIGTERM (or the multi-host preemption notice) arrives."""
  check_settings(config)
  maybe_initialize_distributed(config)
  workdir = epath.Path(config.workdir).resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  partitioner = shd.Partitioner.from_config(config)
  program = train_program(config, partitioner)
  cfg, t = program.cfg, config.train
  source, dataset, transform = _examples(config, program, workdir)
  iterator = iter(train_dataset(source, config.data, global_batch=t.batch_size, transform=transform,
                                seed=config.seed, where=dataset))
  state, frozen = program.state, program.frozen
  ckpts = TrainCheckpoints(workdir / "checkpoints", config.checkpoint.every, config.checkpoint.keep,
                           config.checkpoint.async_save)
  run_record.check_and_write(workdir, config, dataset, resuming=ckpts.latest_step() is not None)
  validation = sft.Validation(config.data, transform, t.batch_size, jax.process_index(), jax.process_count()) \
      if t.validate_every else None
  # The metric window since the last log: device sums, and the step it started after; the validations
  # so far, [step, answer_accuracy, loss] each.
  window, window_start, history = None, 0, []
  restored = ckpts.restore_latest_good(state, iterator, config.checkpoint.fallback_on_corrupt)
  start = 0
  if restored is not None:
    start, state, iterator, log = restored
    window_start = int(log["window_start"])
    window = {k: jnp.asarray(v, jnp.float32) for k, v in log["window"].items()} or None
    history = log.get("validation", [])
    if jax.process_index() == 0:
      tqdm.write(f"resumed from {workdir / 'checkpoints'} at step {start}")
  # A run that stopped on a plateau is finished (a larger train.patience resumes it).
  end = start if sft.plateaued(history, t.patience) else t.steps

  step_fn, batch_keys = program.step, tuple(program.batch)
  is_main = jax.process_index() == 0
  writer = metric_writers.create_default_writer(str(workdir), just_logging=not is_main)
  batch_log = (workdir / f"batches_process{jax.process_index()}.jsonl").open("a") \
      if config.log_batch_indices else None
  preemption = _Preemption()
  last: dict[str, Any] = {}
  tick, tick_step = time.perf_counter(), start   # rates count the steps this process ran
  bar = tqdm(total=t.steps, initial=start, disable=not is_main, desc=t.objective, dynamic_ncols=True)
  try:
    with partitioner.activated():
      for step in range(start, end):
        local = next(iterator)
        if batch_log:
          batch_log.write(json.dumps({"step": step, "index": local["index"].tolist()}) + "\n")
          batch_log.flush()
        state, metrics = step_fn(state, frozen, to_global({k: local[k] for k in batch_keys}, partitioner))
        window = metrics if window is None else jax.tree.map(jnp.add, window, metrics)
        done = step + 1
        bar.update(1)
        plateau = False
        if validation is not None and (done % t.validate_every == 0 or done == t.steps):
          began = time.perf_counter()
          plateau = _validate(validation, program.validate, state, frozen, partitioner, history, done, t, writer)
          tick += time.perf_counter() - began    # the rates count training steps only
        if done % t.log_every == 0 or done == t.steps or plateau:
          # Means over the steps since the last log; the only host sync of the loop (and checkpoints').
          last = {k: float(v) / (done - window_start) for k, v in jax.device_get(window).items()}
          window, window_start = None, done
          if not all(np.isfinite(v) for v in last.values()):
            raise FloatingPointError(f"non-finite metrics at step {done}: {last}")
          now = time.perf_counter()
          rate = (done - tick_step) / max(now - tick, 1e-9)
          tick, tick_step = now, done
          last.update(steps_per_sec=rate, examples_per_sec=rate * t.batch_size,
                      skipped_images=skipped_count(iterator))
          writer.write_scalars(done, last)
          bar.set_postfix(loss=f"{last['loss']:.4f}")
          if is_main:
            objective = "  ".join(f"{k} {v:.4f}" for k, v in last.items() if k not in RATE_METRICS)
            tqdm.write(f"step {done}/{t.steps}  {objective}  lr {last['learning_rate']:.2e}  {rate:.2f} steps/s")
        stop = preemption.requested or (jax.process_count() > 1 and ckpts.reached_preemption(done))
        if stop or plateau or done == t.steps or done % config.checkpoint.every == 0:
          log = {"window_start": window_start, "validation": history,
                 "window": {k: float(v) for k, v in jax.device_get(window or {}).items()}}
          ckpts.save(done, state, iterator, log, force=True)
        if stop:
          ckpts.wait()
          raise Preempted(done)
        if plateau:
          break
  finally:
    preemption.restore()
    bar.close()
    if batch_log:
      batch_log.close()
    writer.flush()
  ckpts.wait()
  ckpts.close()
  summary = workdir / f"summary_process{jax.process_index()}.json"
  if start == end and summary.exists() and (workdir / "export" / EXPORTED[t.objective]).exists():
    # A finished run, rerun: its export and summary stay as they are (a rewritten export would be
    # another model to whatever recorded the first, e.g. eval.py's resumable answers).
    if is_main:
      tqdm.write(f"{workdir}: already complete at step {start}; its export is in {workdir / 'export'}")
    return json.loads(summary.read_text())["metrics"]
  if t.objective == "sft":
    export_model(workdir / "export" / "model", {**frozen, **state.params})
    if is_main:
      tqdm.write(f"exported the fine-tuned params to {workdir / 'export' / 'model'} "
                 "(--config.model.params of train.py and eval.py)")
  elif (token_sr := unflatten(dict(state.params)).get("token_sr")) is not None:
    export_token_sr(workdir / "export", token_sr, program.blink, cfg.text.hidden_size)
    if is_main:
      tqdm.write(f"exported TokenSR to {workdir / 'export'}")
  write_summary(workdir, int(jax.device_get(state.step)), last, state.params, history)
  return last


def _validate(validation: sft.Validation, validate, state, frozen, partitioner: shd.Partitioner, history: list,
              done: int, t: ml_collections.ConfigDict, writer) -> bool:
  """Scores the held-out examples after step `done`, appends [done, answer_accuracy, loss] to
  `history`, logs it; returns whether accuracy has plateaued (train.patience)."""
  scores = validation.score(validate, state.params, frozen, partitioner)
  history.append([done, scores["answer_accuracy"], scores["loss"]])
  writer.write_scalars(done, {f"validation/{k}": v for k, v in scores.items()})
  plateau = sft.plateaued(history, t.patience)
  if jax.process_index() == 0:
    best = max(history, key=lambda h: h[1])
    tqdm.write(f"step {done}/{t.steps}  validation: answer accuracy {scores['answer_accuracy']:.4f}  loss "
               f"{scores['loss']:.4f}  (best {best[1]:.4f} at step {best[0]})"
               + (f"; not bettered in {t.patience} validations: stopping" if plateau else ""))
  return plateau


# What a finished run exports, per objective (under <workdir>/export).
EXPORTED = {"sft": "model", "distill": "blink.json"}


def write_summary(workdir: epath.Path, step: int, metrics: dict, params: dict, validation: list):
  """summary_process{i}.json: final step, last metrics, the validations ([step, answer_accuracy, loss]
  each) and a checksum of the trained params as this process sees them (equal on every process of a
  healthy multi-host run)."""
  (workdir / f"summary_process{jax.process_index()}.json").write_text(json.dumps(
      {"step": step, "metrics": metrics, "validation": validation, "params_sha256": params_sha256(params)},
      indent=2))
