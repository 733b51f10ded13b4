"""EasyDeL's LLaVA, driven over a pipe by bench/easydel_baseline.py: runs in EasyDeL's own Python environment
(EasyDeL 0.3.0 pins jax 0.9.2 and flax 0.12.3, which cannot share a process with blink-jax's jax), so it
imports nothing from blink_jax or bench.

  EASYDEL_PYTHON bench/easydel_worker.py --checkpoint DIR [--dtype float32]

Reads one JSON command a line on stdin and answers one JSON line on stdout (everything the libraries
print goes to stderr):
  {"op": "inputs", "path": NPZ}                   ids [B, T], mask [B, T], pixels [B, 3, H, W]
  {"op": "outputs", "path": NPZ, "new_tokens": N} writes last-token logits [B, V] and greedy tokens [B, N]
                                                  (N may be 0)
  {"op": "time", "call": "prefill"}               one jitted prompt pass (last-token logits); seconds
  {"op": "time", "call": "generate", "new_tokens": N}   one jitted greedy generate of N tokens; seconds
  {"op": "quit"}
Timings are taken here, around the jitted call with block_until_ready, so the pipe is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np


def hub_layout(checkpoint: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
  """A copy of the checkpoint with the vision tower's keys as the hub's llava-hf files spell them.

  transformers 5.x's save_pretrained writes `vision_tower.embeddings...`; the transformers EasyDeL pins
  (5.5.4) reads only `vision_tower.vision_model.embeddings...` and would silently leave the vision tower
  random. Nothing else is changed."""
  from safetensors.numpy import load_file, save_file
  out.mkdir(parents=True, exist_ok=True)
  for f in checkpoint.iterdir():
    if f.suffix != ".safetensors" and f.is_file() and not f.name.endswith(".index.json"):
      shutil.copy(f, out / f.name)
  tensors = {}
  for f in sorted(checkpoint.glob("*.safetensors")):
    tensors.update(load_file(f))
  renamed = {(("vision_tower.vision_model." + k[len("vision_tower."):])
              if k.startswith("vision_tower.") and not k.startswith("vision_tower.vision_model.") else k): v
             for k, v in tensors.items()}
  save_file(renamed, out / "model.safetensors", metadata={"format": "pt"})
  return out


class Worker:

  def __init__(self, checkpoint: pathlib.Path, dtype: str):
    import easydel
    from flax import nnx
    dt = self.dtype = jnp.dtype(dtype)
    # EasyDeL's LlavaConfig reads `image_token_id` (default 32000) where transformers' config.json says
    # `image_token_index`: without this, a checkpoint whose image token is not 32000 would embed the
    # placeholder token instead of the image features.
    config = json.loads((checkpoint / "config.json").read_text())
    image_token = config.get("image_token_id", config.get("image_token_index", 32000))
    self.model = easydel.AutoEasyDeLModelForImageTextToText.from_pretrained(
        str(checkpoint), dtype=dt, param_dtype=dt, precision=jax.lax.Precision.HIGHEST,
        sharding_axis_dims=(1, 1, 1, 1, 1), local_files_only=True, config_kwargs={"image_token_id": image_token})
    self.mesh = self.model.mesh
    graphdef, self.state = nnx.split(self.model)

    @jax.jit
    def prefill(state, ids, pixels, mask):
      m = nnx.merge(graphdef, state)
      hidden = m(input_ids=ids, pixel_values=pixels, attention_mask=mask, apply_lm_head=False).last_hidden_state
      return m.apply_lm_head(hidden[:, -1:])[:, 0]

    def generate(state, ids, pixels, mask, new_tokens):
      m = nnx.merge(graphdef, state)
      out = m.generate(input_ids=ids, pixel_values=pixels, attention_mask=mask, max_new_tokens=new_tokens,
                       do_sample=False, pad_token_id=0, eos_token_id=-1)
      return out.sequences[:, ids.shape[1]:]

    self.prefill = prefill
    self.generate = jax.jit(generate, static_argnums=4)
    self.inputs = None

  def run(self, call: str, new_tokens: int = 0):
    with self.mesh:
      if call == "prefill":
        return jax.block_until_ready(self.prefill(self.state, *self.inputs))
      if call == "generate":
        return jax.block_until_ready(self.generate(self.state, *self.inputs, int(new_tokens)))
    raise ValueError(f"unknown call {call!r}; expected 'prefill' or 'generate'")

  def handle(self, cmd: dict) -> dict:
    op = cmd.get("op")
    if op == "inputs":
      z = np.load(cmd["path"])
      self.inputs = (jnp.asarray(z["ids"], jnp.int32), jnp.asarray(z["pixels"], self.dtype),
                     jnp.asarray(z["mask"], bool))
      return {}
    if op == "outputs":
      logits = self.run("prefill")
      n = int(cmd.get("new_tokens", 0))
      tokens = self.run("generate", n) if n else np.zeros((logits.shape[0], 0), np.int32)
      np.savez(cmd["path"], logits=np.asarray(logits, np.float32), tokens=np.asarray(tokens))
      return {}
    if op == "time":
      t = time.perf_counter()
      self.run(cmd["call"], cmd.get("new_tokens", 0))
      return {"seconds": time.perf_counter() - t}
    raise ValueError(f"unknown op {op!r}; expected inputs, outputs, time or quit")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", required=True, type=pathlib.Path)
  parser.add_argument("--dtype", default="float32")
  args = parser.parse_args()
  # This file's folder (bench/) would shadow installed packages (bench/easydel_baseline.py is not easydel).
  here = pathlib.Path(__file__).resolve().parent
  sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != here]
  reply = os.fdopen(os.dup(1), "w")   # the answers; fd 1 itself goes to stderr from here on
  os.dup2(2, 1)
  sys.stdout = sys.stderr
  import easydel

  def send(obj: dict):
    reply.write(json.dumps(obj) + "\n")
    reply.flush()

  with tempfile.TemporaryDirectory() as tmp:
    worker = Worker(hub_layout(args.checkpoint, pathlib.Path(tmp) / "ckpt"), args.dtype)
    send({"ready": True, "easydel": easydel.__version__, "jax": jax.__version__,
          "device": jax.devices()[0].device_kind})
    for line in sys.stdin:
      cmd = json.loads(line)
      if cmd.get("op") == "quit":
        break
      try:
        send({"ok": True, **worker.handle(cmd)})
      except Exception as e:  # noqa: BLE001 - the driver raises it with the traceback
        send({"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})


if __name__ == "__main__":
  main()
