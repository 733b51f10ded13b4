"""Shared by the bench scripts: the medium model (a real HF checkpoint file both stacks load), timing
(median of repeats after warm-up, block_until_ready), memory figures, and the json/PNG writers."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import platform
import statistics
import sys
import time
from typing import Any, Callable

import jax
import numpy as np
from absl import flags

from blink_jax import testing
from blink_jax.blink.config import BlinkConfig
from blink_jax.models import presets
from blink_jax.inference.pipeline import Pipeline
from blink_jax.data.tokenizer import byte_level_tokenizer

# The bench scripts measure compiles (their seconds, their programs' memory): never take one from a
# persistent compilation cache a user's environment may set (JAX_COMPILATION_CACHE_DIR).
jax.config.update("jax_enable_compilation_cache", False)

flags.DEFINE_string("results_dir", str(pathlib.Path(__file__).resolve().parent / "results"),
                    "Where <name>.json and <name>.png are written.")

# LLaVA-1.5's token geometry (336 px: 24x24 = 576 visual tokens, so Blink's 64 SR slots are the same
# share of the sequence as at 7B) with widths small enough for a 2-core CPU; 8 decoder layers.
# The same shape as the "medium" preset (blink_jax/models/presets.py) that bench/training.py trains.
_V, _T = presets.MEDIUM["vision"], presets.MEDIUM["text"]
MEDIUM = dict(image_size=_V["image_size"], vision_hidden=_V["hidden_size"], vision_layers=_V["num_layers"],
              text_hidden=_T["hidden_size"], text_layers=_T["num_layers"], heads=_T["num_heads"],
              kv_heads=_T["num_kv_heads"], intermediate=_T["intermediate_size"], vocab=_T["vocab_size"],
              weights_dtype="float32")
# Saved in bfloat16 (14 GB, as the hub's fp16 checkpoint) rather than float32 (28 GB).
SEVEN_B = dict(image_size=336, vision_hidden=1024, vision_layers=24, text_hidden=4096, text_layers=32,
               heads=32, kv_heads=32, intermediate=11008, vocab=32064, weights_dtype="bfloat16")
# A few seconds a script; for checking that the scripts run (tests/test_bench.py), not for figures.
TINY = dict(image_size=112, vision_hidden=64, vision_layers=2, text_hidden=128, text_layers=4,
            heads=4, kv_heads=2, intermediate=256, vocab=512, weights_dtype="float32")
# Qwen2.5-VL in MEDIUM's decoder widths: a 6-block window-attention ViT, images in the 24x24 grid
# bucket (672 px: 576 visual tokens, LLaVA-1.5's count), Blink's p = 4 regions on it.
QWEN_MEDIUM = dict(family="qwen2_5_vl", preprocessing="24x24", text_hidden=_T["hidden_size"],
                   text_layers=_T["num_layers"], heads=_T["num_heads"], kv_heads=_T["num_kv_heads"],
                   intermediate=_T["intermediate_size"], vocab=_T["vocab_size"], vision_hidden=256, vision_layers=6,
                   vision_heads=4)
# The compile-count bench's small Qwen2.5-VL (bench/compiles.py) and the scripts' run check.
QWEN_SMALL = dict(family="qwen2_5_vl", preprocessing="8x8", text_hidden=128, text_layers=4, heads=4, kv_heads=2,
                  intermediate=192, vocab=512, vision_hidden=32, vision_layers=4, vision_heads=2)
SHAPES = {"tiny": TINY, "medium": MEDIUM, "7b": SEVEN_B, "qwen_medium": QWEN_MEDIUM, "qwen_small": QWEN_SMALL}


def prompt(n_tokens: int, pipe: Pipeline | None = None) -> str:
  """A prompt with about n_tokens text tokens (the bench tokenizer is byte-level): vicuna-style for
  LLaVA, the chat template of pipe's family otherwise."""
  question = ("Describe the picture in detail and say what is unusual about it. " * 40)[:max(1, n_tokens - 22)]
  if pipe is not None and pipe.family.name != "llava":
    return pipe.family.prompt(question[:max(1, n_tokens - 50)])   # the template's own ~50 tokens
  return f"USER: <image>\n{question} ASSISTANT:"


def pipeline(shape_name: str, ckpt: pathlib.Path, **kw) -> Pipeline:
  """Pipeline.from_hf of a SHAPES checkpoint, with its shape's preprocessing."""
  return Pipeline.from_hf(ckpt, preprocessing=SHAPES[shape_name].get("preprocessing", "auto"), **kw)


def blink_for(pipe: Pipeline) -> BlinkConfig:
  """The spec's setting scaled to the model: scan layers 12..18 of 32, p = 4, C = width / 8;
  tau_exp = 0 so every example expands (the live-slot worst case; dead slots cost the same)."""
  n = pipe.cfg.text.num_layers
  return BlinkConfig(first_scan_layer=round(12 * n / 32), last_scan_layer=round(18 * n / 32), region_size=4,
                     tau_exp=0.0, tau_drop=0.0, max_regions=1,
                     token_sr_channels=max(8, pipe.cfg.text.hidden_size // 8))


def machine() -> str:
  dev = jax.devices()[0]
  return f"{platform.node()} | {os.cpu_count()} CPU cores | jax {jax.__version__} on {dev.platform} ({dev.device_kind})"


def hf_checkpoint(shape_name: str, ckpt_dir: str) -> pathlib.Path:
  """The random checkpoint of SHAPES[shape_name] under ckpt_dir, built on first use."""
  shape = SHAPES[shape_name]
  if shape.get("family") == "qwen2_5_vl":
    return build_qwen_checkpoint(pathlib.Path(ckpt_dir) / f"qwen2_5_vl_{shape_name}", shape)
  return build_hf_checkpoint(pathlib.Path(ckpt_dir) / f"{shape_name}_{shape['image_size']}px", shape)


def build_hf_checkpoint(path: pathlib.Path, shape: dict, seed: int = 0) -> pathlib.Path:
  """A random LlavaForConditionalGeneration of `shape` saved with save_pretrained (+ a tokenizer)."""
  if (path / "config.json").exists():
    return path
  image_id = shape["vocab"] - 64
  cfg = testing.llava_hf_config(
      image_token_id=image_id, pad_token_id=0,
      text=dict(vocab_size=shape["vocab"], hidden_size=shape["text_hidden"], intermediate_size=shape["intermediate"],
                num_hidden_layers=shape["text_layers"], num_attention_heads=shape["heads"],
                num_key_value_heads=shape["kv_heads"], max_position_embeddings=4096),
      vision=dict(image_size=shape["image_size"], hidden_size=shape["vision_hidden"],
                  intermediate_size=4 * shape["vision_hidden"], num_hidden_layers=shape["vision_layers"],
                  num_attention_heads=max(1, shape["vision_hidden"] // 64)))
  testing.save_random_model(path, "LlavaForConditionalGeneration", cfg, byte_level_tokenizer(image_id)._tok,
                            seed=seed, dtype=shape["weights_dtype"])
  return path


def build_qwen_checkpoint(path: pathlib.Path, shape: dict = QWEN_SMALL, seed: int = 0) -> pathlib.Path:
  """A random Qwen2_5_VLForConditionalGeneration of `shape` (QWEN_SMALL, QWEN_MEDIUM) saved with
  save_pretrained, with a byte-level tokenizer whose `<|image_pad|>` is the image token."""
  if (path / "config.json").exists():
    return path
  vocab = shape["vocab"]
  ids = dict(pad=0, bos=1, eos=2, image=vocab - 64, video=vocab - 63, vision_start=vocab - 62, vision_end=vocab - 61)
  cfg = testing.qwen_hf_config(
      vocab=vocab, token_ids=ids, text_layers=shape["text_layers"], text_hidden=shape["text_hidden"],
      heads=shape["heads"], kv_heads=shape["kv_heads"], intermediate=shape["intermediate"],
      vision_depth=shape["vision_layers"], vision_hidden=shape["vision_hidden"], vision_heads=shape["vision_heads"])
  tokenizer = byte_level_tokenizer(ids["image"], image_placeholder="<|image_pad|>")._tok
  testing.save_random_model(path, "Qwen2_5_VLForConditionalGeneration", cfg, tokenizer, seed=seed)
  return path


def torch_forward(ckpt: pathlib.Path, batch, implementation: str, dtype: str):
  """A zero-argument call of transformers' forward of the checkpoint's model (LLaVA or Qwen2.5-VL) on
  the batch (next-token logits only), on the device JAX runs on (CPU or GPU); synchronised before
  returning."""
  import torch
  import transformers
  device = {"cpu": "cpu", "gpu": "cuda"}.get(jax.default_backend())
  if device is None or (device == "cuda" and not torch.cuda.is_available()):
    raise SystemExit(f"JAX runs on {jax.default_backend()!r} but torch {torch.__version__} cannot run "
                     "there; install a torch build for that device or pass --notorch")
  qwen = json.loads((pathlib.Path(ckpt) / "config.json").read_text())["model_type"] == "qwen2_5_vl"
  cls = transformers.Qwen2_5_VLForConditionalGeneration if qwen else transformers.LlavaForConditionalGeneration
  model = cls.from_pretrained(ckpt, dtype=getattr(torch, dtype), attn_implementation=implementation).to(device).eval()
  ids = torch.from_numpy(batch.ids).long().to(device)
  mask = torch.from_numpy(np.arange(ids.shape[1])[None] < batch.lengths[:, None]).long().to(device)
  if qwen:
    _, h, w, _ = batch.pixels.shape
    image = dict(pixel_values=torch.from_numpy(np.concatenate([testing.hf_patches(p) for p in batch.pixels])),
                 image_grid_thw=torch.tensor([[1, h // 14, w // 14]] * len(batch.pixels)),
                 mm_token_type_ids=(ids == model.config.image_token_id).int())
  else:
    image = dict(pixel_values=torch.from_numpy(batch.pixels).permute(0, 3, 1, 2))
  image["pixel_values"] = image["pixel_values"].to(device, getattr(torch, dtype))

  def call():
    with torch.inference_mode():
      logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=1, **image).logits
    if device == "cuda":
      torch.cuda.synchronize()
    return logits
  return call


@dataclasses.dataclass(frozen=True)
class Measured:
  """What a call returns when it timed itself (a call run in another process: bench/easydel_baseline.py), so
  the pipe to that process is not part of its time."""
  seconds: float


def time_interleaved(calls: dict[Any, Callable[[], Any]], repeats: int = 5, warmup: int = 1) -> dict[Any, float]:
  """Median seconds of each zero-argument call, after warm-up calls.

  The calls are timed in turns (one round times each once), so drift in the shared machine's speed
  affects every call alike and the ratios between them stay fair. JAX outputs are blocked on; a call
  that returns a Measured is taken at its own figure.
  """
  for call in calls.values():
    for _ in range(warmup):
      jax.block_until_ready(call())
  times = {name: [] for name in calls}
  for _ in range(repeats):
    for name, call in calls.items():
      t = time.perf_counter()
      out = jax.block_until_ready(call())
      times[name].append(out.seconds if isinstance(out, Measured) else time.perf_counter() - t)
  return {name: statistics.median(ts) for name, ts in times.items()}


def time_call(fn: Callable, *args, repeats: int = 5, warmup: int = 1) -> float:
  """Median seconds of fn(*args), outputs blocked on, after warm-up calls."""
  return time_interleaved({"call": lambda: fn(*args)}, repeats, warmup)["call"]


def compiled_bytes(jitted, *args) -> int:
  """Arguments + outputs + temporaries of the compiled program (XLA's static memory plan)."""
  m = jitted.lower(*args).compile().memory_analysis()
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


def peak_device_bytes() -> int | None:
  stats = jax.devices()[0].memory_stats()
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def results_dir() -> pathlib.Path:
  results = pathlib.Path(flags.FLAGS.results_dir)
  results.mkdir(parents=True, exist_ok=True)
  return results


def write(name: str, payload: dict, table: list[list], header: list[str]):
  """Prints the table and writes <results_dir>/<name>.json."""
  widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
  fmt = "  ".join(f"{{:<{w}}}" for w in widths)
  print(fmt.format(*header))
  for row in table:
    print(fmt.format(*[str(x) for x in row]))
  command = " ".join([f"python -m bench.{pathlib.Path(sys.argv[0]).stem}", *sys.argv[1:]])
  payload = {"machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command, **payload}
  (results_dir() / f"{name}.json").write_text(json.dumps(payload, indent=2, default=float))


def bar_plot(name: str, groups: list[str], series: dict[str, list[float]], ylabel: str, title: str):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 4))
  width = 0.8 / len(series)
  x = np.arange(len(groups))
  for i, (label, values) in enumerate(series.items()):
    ax.bar(x + i * width, values, width, label=label)
  ax.set_xticks(x + width * (len(series) - 1) / 2, groups)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.legend()
  fig.tight_layout()
  fig.savefig(results_dir() / f"{name}.png", dpi=110)
  plt.close(fig)
