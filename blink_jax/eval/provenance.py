"""What made a predictions file: everything that changes an answer (the checkpoint's identity, the
TokenSR weights' digest, Blink's settings, the mode, dtypes, preprocessing and attention kernel,
decoding, the benchmark source and every prompt). It is written beside the predictions as
`<mode>.run.json` when they are started; a rerun resumes them only under the same record and
otherwise refuses, naming what changed, so predictions of two models are never mixed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import fsspec
from etils import epath

from blink_jax import settings_record


def checkpoint_identity(ckpt_dir: str) -> dict[str, Any]:
  """An HF checkpoint directory: its path, the digests of config.json and tokenizer.json, and every
  safetensors file's name, size and modification stamp (mtime locally, generation on GCS)."""
  fs, root = fsspec.core.url_to_fs(str(ckpt_dir).rstrip("/"))
  out: dict[str, Any] = {"path": str(ckpt_dir)}
  for name in ("config.json", "tokenizer.json"):
    path = f"{root}/{name}"
    out[name] = hashlib.sha256(fs.cat_file(path)).hexdigest() if fs.exists(path) else None
  files = {}
  for path in sorted(fs.glob(f"{root}/*.safetensors")):
    info = fs.info(path)
    stamp = info.get("mtime", info.get("generation", info.get("updated", info.get("etag"))))
    files[path.rsplit("/", 1)[-1]] = [info.get("size"), str(stamp)]
  out["safetensors"] = files
  return out


def params_identity(directory: str) -> dict[str, Any]:
  """An exported params directory: its path and every file's size and modification stamp."""
  fs, root = fsspec.core.url_to_fs(str(directory).rstrip("/"))
  files = {}
  for path in sorted(fs.find(root)):
    info = fs.info(path)
    files[path[len(root):]] = [info.get("size"), str(info.get("mtime", info.get("generation", info.get("updated"))))]
  return {"path": str(directory), "files": files}


def record(config, model, mode: str, source: dict, examples) -> dict[str, Any]:
  """The record of (config, loaded model, mode, benchmark source, questions). `model` is
  runner.Evaluated."""
  m = config.model
  if m.hf_checkpoint:
    identity = checkpoint_identity(m.hf_checkpoint)
  else:
    identity = {"random_preset": m.preset, "shape": dataclasses.asdict(model.pipe.cfg), "seed": config.seed}
  if m.params:   # an SFT run's export: its files' sizes and stamps
    identity = {**identity, "params": params_identity(m.params)}
  prompts = hashlib.sha256()
  for e in examples:
    asked = [e.question_id, e.question] + ([e.choices] if e.choices is not None else [])
    prompts.update(json.dumps(asked, ensure_ascii=False).encode())
  out = {
      "mode": mode, "model": identity, "dtype": m.dtype, "param_dtype": m.param_dtype,
      "preprocessing": model.pipe.preprocessing, "attention": m.attention, "max_new_tokens": config.max_new_tokens,
      "source": source, "questions_and_prompts_sha256": prompts.hexdigest(),
  }
  if mode == "zoom":
    out["zoom"] = dataclasses.asdict(model.pipe.zoom)
  elif mode != "vanilla":
    out["blink"] = {k: v for k, v in dataclasses.asdict(model.pipe.blink).items() if k != "mode"}
  if mode == "tokensr":
    out["token_sr_sha256"] = model.token_sr_digest or "untrained"
  return json.loads(json.dumps(out))   # JSON-normalised, as it is compared after a round trip


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
  if isinstance(old, dict) and isinstance(new, dict):
    return [d for k in sorted(set(old) | set(new))
            for d in _diff(old.get(k, settings_record.ABSENT), new.get(k, settings_record.ABSENT), f"{prefix}{k}.")]
  return [f"{prefix[:-1]}: {old!r} -> {new!r}"] if settings_record.changed(prefix[:-1], old, new) else []


def check_or_start(predictions: epath.Path, now: dict[str, Any]):
  """Raises ValueError if `predictions` holds answers made under another record; else (re)writes the
  record beside them."""
  path = predictions.with_suffix(".run.json")
  has_answers = predictions.exists() and predictions.read_text().strip()
  if has_answers:
    if not path.exists():
      raise ValueError(f"{predictions}: predictions without a record of the settings that made them "
                       f"({path.name} is missing); use another output_dir or delete the file")
    changed = _diff(json.loads(path.read_text()), now)
    if changed:
      raise ValueError(
          f"{predictions} was made with other settings; resuming would mix two models' answers:\n  "
          + "\n  ".join(changed[:20]) + f"\nUse another --config.output_dir, or delete {predictions} and "
          f"{path.name} to answer again.")
    return
  predictions.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(now, indent=2, ensure_ascii=False))
