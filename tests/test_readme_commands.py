"""Every command the README and docs/*.md show is checked in-process, as the best JAX codebases check their
examples: parsed by its script's own flag definitions (train.py, eval.py, visualize.py, blink_jax.aot)
with the real config files, its settings validated, the paths it names opened, and its programs built
on abstract params and lowered (traced, not compiled or run) at the shapes the command asks for. A
broken flag, config field, path substitution or shape fails here. Checkpoints, data and buckets the
README names are replaced by stand-ins (the `stand_ins` fixture): the published models' config.json and a
tokenizer (nothing else is read by an abstract build), TokenSR exports, sample data on a local GCS
emulator. A README command that names anything else, or runs a script nothing here checks, fails.

The set-up command's job itself (train.py's default, then eval.py on its export) runs for real in
tests/integration/test_main_job.py; the test commands are not run (this is one of them)."""

import dataclasses
import importlib
import json
import pathlib
import re
import shlex
import subprocess
import sys
import time

import jax
import pytest
from absl import flags
from PIL import Image

import gcs_fixtures
import hf_fixtures
from blink_jax import aot, families
from blink_jax import sharding as shd
from blink_jax.blink.config import RANDOM_MODEL_THRESHOLDS, defaults_for, from_mapping, parse_overrides
from blink_jax.checkpoint import export_token_sr, token_sr_settings
from blink_jax.data.image_preprocessing import load_image
from blink_jax.data import fine_detail
from blink_jax.data.sample_images import write_sample_images
from blink_jax.eval import runner, sample_benchmarks
from blink_jax.eval.readers import read_rows
from blink_jax.models import presets
from blink_jax.models.token_sr import init_token_sr
from blink_jax.data.tokenizer import byte_level_tokenizer
from blink_jax.train import loop, sft

ROOT = pathlib.Path(__file__).resolve().parents[1]
UNSUBSTITUTED = ("$", "/ckpts/", "/data/", "/mnt/", "gs://")
EMBEDDED = ("tiny", "qwen2.5-vl-tiny")
# Scripts whose commands are checked by their own flag parsing (absl's --only_check_args, a subprocess).
PARSED_BY_THEMSELVES = ("bench.", "experiments.", "blink_jax.data.fine_detail")   # model.preset of the embedded defaults (no checkpoint)


DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def readme_commands() -> list[str]:
  """The indented code lines of the README, then of docs/*.md, continuation lines joined, outside ```
  fences."""
  commands, current, fenced = [], "", False
  for line in (line for doc in DOCUMENTS for line in doc.read_text().splitlines()):
    if line.startswith("```"):
      fenced = not fenced
      continue
    if fenced or not line.startswith("    "):
      continue
    current += " " + line.strip().rstrip("\\").strip()
    if not line.rstrip().endswith("\\"):
      commands.append(current.strip())
      current = ""
  return commands


def runnable(command: str) -> list[str] | None:
  """The python invocation in a README line (setup chains and the gcloud wrapper unwrapped) as
  [script or -m module, args...], or None for the test commands and lines that are not commands.
  Optional `[...]` groups are kept unless they are a generic `--config.FIELD=VALUE ...` pattern."""
  if command.startswith("gcloud"):
    command = re.search(r'--command "(.*)"', command).group(1)
  command = command.split("&&")[-1].strip()
  if not re.match(r"(\.venv/bin/)?python3? ", command) or " -m pytest" in command:
    return None
  command = re.sub(r"\[([^\]]*)\]", lambda m: "" if "FIELD=VALUE" in m.group(1) or "..." in m.group(1)
                   else m.group(1), command)
  return shlex.split(command)[1:]


def _config_only_checkpoint(path: pathlib.Path, preset: str) -> pathlib.Path:
  """A published model's config.json (presets.HF_CONFIGS) and a byte-level tokenizer.json at its
  special ids: all that an abstract build of the model reads."""
  hf = presets.HF_CONFIGS[preset]
  cfg = presets.get(preset)
  path.mkdir(parents=True)
  (path / "config.json").write_text(json.dumps(hf))
  tok = byte_level_tokenizer(cfg.image_token_id, cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id,
                             image_placeholder=families.of_config(cfg).image_placeholder)
  (path / "tokenizer.json").write_text(tok._tok.to_str())
  return path


def _export_for(path: pathlib.Path, train_config: str, width: int) -> pathlib.Path:
  """A TokenSR export with the Blink settings `train_config` trains with (8 channels: small)."""
  blink = from_mapping({**importlib.import_module(train_config).get_config().blink.to_dict(),
                        "token_sr_channels": 8})
  export_token_sr(path, init_token_sr(blink.num_scan_layers, 8, blink.region_size, width, jax.random.key(0)),
                  blink, width)
  return path


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
  """What the README's commands name, as local files and a GCS emulator's bucket."""
  root = tmp_path_factory.mktemp("readme")
  llava = _config_only_checkpoint(root / "llava-1.5-7b-hf", "llava-1.5-7b")
  qwen = _config_only_checkpoint(root / "Qwen2.5-VL-7B-Instruct", "qwen2.5-vl-7b")
  Image.fromarray(hf_fixtures.sample_photos()["chelsea"]).save(root / "cat.jpg")
  write_sample_images(root / "llava_train_images", 2)
  samples = sample_benchmarks.write_samples(root / "samples")
  pope = sample_benchmarks.write_llava_layout(list(read_rows(samples["pope"])), root / "pope")
  fine_detail_task = root / "fine_detail"
  fine_detail.write(fine_detail_task, image_size=112, per_split=(2, 2, 2))
  with gcs_fixtures.emulator() as bucket:
    parquet = root / "samples" / "parquet"
    for local, remote in [(parquet / "mme", "lmms-lab/MME/data"),
                          (parquet / "gqa", "lmms-lab/GQA/testdev_balanced_instructions"),
                          (parquet / "gqa_images", "lmms-lab/GQA/testdev_balanced_images"),
                          (root / "samples" / "folder" / "vstar", "vstar_bench"),
                          (parquet / "hrbench_4k", "HR-Bench/4k")]:
      gcs_fixtures.upload(local, f"{bucket}/{remote}")
    substitutes = {
        "/mnt/ckpts/llava-1.5-7b-hf": str(llava), "/ckpts/llava-1.5-7b-hf": str(llava),
        "/ckpts/Qwen2.5-VL-7B-Instruct": str(qwen),
        "/ckpts/runs/tokensr_7b/export": str(_export_for(root / "tokensr_7b", "configs.tokensr_7b", 4096)),
        "runs/tokensr_7b/export": str(root / "tokensr_7b"),
        "data/fine_detail": str(fine_detail_task),   # the generator's output
        "runs/tokensr_qwen2_5_vl_7b/export": str(_export_for(root / "tokensr_qwen", "configs.tokensr_qwen2_5_vl_7b",
                                                             3584)),
        "cat.jpg": str(root / "cat.jpg"),
        # orbax/TFDS reach GCS through tensorstore/gfile, which the emulator does not serve: local stand-ins
        "gs://$BUCKET/llava_train_images": str(root / "llava_train_images"),
        "gs://$BUCKET/tfds": str(root / "pod_tfds"), "gs://$BUCKET/runs/tokensr_7b": str(root / "pod_run"),
        # benchmark data is read through fsspec: the GCS emulator
        "gs://$BUCKET": bucket,
        "/data/pope/llava_pope_test.jsonl": pope["questions"], "/data/coco/val2014": pope["image_folder"],
        "/data/pope/labels.jsonl": pope["annotations"],
        "$TPU": "unused",
    }
    yield {"root": root, "bucket": bucket, "substitutes": substitutes}


def _parse(script: str, args: list[str]) -> flags.FlagValues:
  """`args` parsed by the script's own flags (absl, with ml_collections' config-file overrides)."""
  module = {"train.py": "train", "eval.py": "eval", "visualize.py": "visualize",
            "blink_jax.aot": "blink_jax.aot"}[script]
  argv = [script, *args]
  fv = flags.FlagValues()
  define = importlib.import_module(module).define_flags
  define(fv) if module == "visualize" else define(fv, argv)   # the others read --config.FIELD overrides
  fv(argv)
  return fv


def _lower(config, partitioner) -> list[str]:
  """The job's programs built on abstract params over the CPU devices and lowered; their names."""
  programs = aot.job_programs(config, partitioner)
  with partitioner.activated():
    for program in programs:
      program.lower()
  return [p.name for p in programs]


def _check_train(config) -> shd.Partitioner:
  loop.check_settings(config)
  if config.train.objective == "sft":   # its examples: each with an image, a question and an answer
    assert sft.source_rows(config.data)[0], config.data.sft
  if config.train.validate_every:       # and its held-out ones
    assert sft.source_rows(config.data, "sft_validation")[0], config.data.sft_validation
  if config.data.image_folder:
    assert pathlib.Path(config.data.image_folder).is_dir(), config.data.image_folder
  return shd.Partitioner.from_config(config)


def _check_eval(config) -> shd.Partitioner:
  names, _, partitioner = runner.check_settings(config)
  for name in names:   # each source the command names yields a question
    source = runner.configured_source(config, name)
    if source:
      assert next(read_rows(source), None) is not None, (name, source)
  return partitioner


def _check_visualize(f: flags.FlagValues):
  """visualize.py's inputs: the checkpoint's shape, the image, the export's (or the checkpoint's
  default) Blink settings with the overrides, valid for the model (its run: tests/test_visualize.py)."""
  cfg = families.read_hf_config(f.checkpoint) if f.checkpoint else presets.get("tiny")
  family = families.of_config(cfg)
  if f.image:
    load_image(f.image, name=f.image)
  grid = family.fixed_grid(cfg)
  blink = (token_sr_settings(f.token_sr, width=cfg.text.hidden_size) if f.token_sr
           else defaults_for(grid, cfg.text.num_layers))
  overrides = {**({} if f.checkpoint else RANDOM_MODEL_THRESHOLDS), **parse_overrides(f.blink)}
  from_mapping({**dataclasses.asdict(blink), **overrides}).validate(grid, cfg.text.num_layers)


def _check_aot(f: flags.FlagValues) -> shd.Partitioner:
  chip = (f.topology or f.config.aot.topology).split(":")[0]
  assert chip in aot.HBM_GIB_PER_CHIP, f.topology    # compiling for it: tests/test_aot.py
  return (_check_train if "train" in f.config else _check_eval)(f.config)


def _check_readme(stand_ins, tmp_path, monkeypatch, *, published: bool) -> list[str]:
  """Every README command parsed and checked; the programs lowered of those whose model is the
  embedded default (`published`: of those whose model is a published checkpoint's shape). The
  scripts checked."""
  monkeypatch.chdir(tmp_path)   # relative paths as from a fresh checkout: the entry points, no runs/
  for name in ("train.py", "eval.py", "visualize.py", "configs"):
    (tmp_path / name).symlink_to(ROOT / name)
  substitutes, bucket = stand_ins["substitutes"], stand_ins["bucket"]
  checked, lowered = [], set()   # a job several commands name (train.py's and aot's) is lowered once
  for line in readme_commands():
    args = runnable(line)
    if args is None:
      continue
    # longest first, so a path is not half-replaced by a shorter key
    for key in sorted(substitutes, key=len, reverse=True):
      args = [a.replace(key, substitutes[key]) for a in args]
    left = [a for a in args if any(u in a.replace(bucket, "") for u in UNSUBSTITUTED)]
    assert not left, f"README command names {left}, which this test does not stand in for: {line}"
    script = args[1] if args[0] == "-m" else args[0]
    args = args[2:] if args[0] == "-m" else args[1:]
    start = time.perf_counter()
    if script.startswith(PARSED_BY_THEMSELVES):   # flags parsed by the script itself (absl's check)
      if not published:
        proc = subprocess.run([sys.executable, "-m", script, *args, "--only_check_args"], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"command fails its check: {line}\n{proc.stderr[-2000:]}"
        checked.append(script)
      continue
    try:
      f = _parse(script, args)
      check = {"train.py": lambda: _check_train(f.config), "eval.py": lambda: _check_eval(f.config),
               "visualize.py": lambda: _check_visualize(f), "blink_jax.aot": lambda: _check_aot(f)}[script]
      partitioner = check()
      model = f.config.model if partitioner is not None else None
      job = f.config.to_json_best_effort(sort_keys=True) if model else None
      if model and (not model.hf_checkpoint and model.preset in EMBEDDED) != published and job not in lowered:
        assert _lower(f.config, partitioner), line
        lowered.add(job)
    except Exception as e:
      raise AssertionError(f"README command fails its check: {line}") from e
    print(f"{time.perf_counter() - start:5.1f} s  {line}")   # pytest -rP: where the time goes
    checked.append(script)
  return checked


def test_every_readme_command_parses_and_the_embedded_defaults_lower(stand_ins, tmp_path, monkeypatch):
  checked = _check_readme(stand_ins, tmp_path, monkeypatch, published=False)
  assert checked.count("train.py") >= 4 and checked.count("eval.py") >= 6 and "visualize.py" in checked, checked
  assert checked.count("blink_jax.aot") >= 3, checked


@pytest.mark.slow   # 7B-shaped programs (tracing 32 layers per program): the full tier
def test_readme_commands_on_published_models_lower(stand_ins, tmp_path, monkeypatch):
  _check_readme(stand_ins, tmp_path, monkeypatch, published=True)


def test_a_broken_readme_command_fails_its_check(stand_ins):
  """The checks are not vacuous: a config typo, a bad mode and a shape the model cannot take fail."""
  with pytest.raises(AttributeError, match='Did you mean "steps"'):
    _parse("train.py", ["--config", str(ROOT / "configs/tokensr.py"), "--config.train.stepz=2"])
  with pytest.raises(ValueError, match="unknown mode"):
    _check_eval(_parse("eval.py", ["--config", str(ROOT / "configs/eval.py"), "--config.modes=vanilla,zoomed"]).config)
  with pytest.raises(ValueError, match="blink config"):
    config = _parse("train.py", ["--config", str(ROOT / "configs/tokensr.py"), "--config.blink.last_scan_layer=40"]).config
    _lower(config, _check_train(config))
