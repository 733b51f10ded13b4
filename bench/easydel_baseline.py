"""EasyDeL's LLaVA as a bench baseline: the same checkpoint and inputs as blink-jax, in EasyDeL's own
Python environment (bench/easydel_worker.py in a subprocess), checked against transformers' logits before
any of its times are used.

EasyDeL 0.3.0 pins jax 0.9.2 and flax 0.12.3 and blink-jax needs jax 0.10.2, so the two cannot share a
process; its environment is made once with

  python3 -m venv ~/easydel-venv && ~/easydel-venv/bin/pip install -r bench/requirements-easydel.txt

and named to the bench scripts with `--easydel_python ~/easydel-venv/bin/python`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import tempfile

import numpy as np

from bench import common
from blink_jax.data.prompt_batch import PromptBatch

_WORKER = pathlib.Path(__file__).resolve().parent / "easydel_worker.py"


class EasyDeLError(RuntimeError):
  pass


class EasyDeL:
  """One EasyDeL worker process holding the model; `call(...)` gives zero-argument calls for
  common.time_interleaved that return the worker's own timing (common.Measured)."""

  def __init__(self, python: str, checkpoint: pathlib.Path, dtype: str = "float32"):
    if not pathlib.Path(python).is_file():
      raise SystemExit(f"--easydel_python {python!r} is not a file; expected the python of a venv with "
                       "bench/requirements-easydel.txt installed (see bench/easydel_baseline.py)")
    self._tmp = tempfile.TemporaryDirectory()
    self._proc = subprocess.Popen([python, str(_WORKER), "--checkpoint", str(checkpoint), "--dtype", dtype],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    hello = self._read()
    self.version = hello["easydel"]

  def _read(self) -> dict:
    line = self._proc.stdout.readline()
    if not line:
      raise EasyDeLError(f"the EasyDeL worker exited (status {self._proc.wait()}); its stderr is above")
    reply = json.loads(line)
    if reply.get("ok") is False:
      raise EasyDeLError(f"EasyDeL worker: {reply['error']}\n{reply['traceback']}")
    return reply

  def _ask(self, **cmd) -> dict:
    self._proc.stdin.write(json.dumps(cmd) + "\n")
    self._proc.stdin.flush()
    return self._read()

  def set_batch(self, batch: PromptBatch):
    """The batch (unpadded: see `unpadded`), pixels channels-first as transformers takes them."""
    batch = unpadded(batch)
    path = pathlib.Path(self._tmp.name) / "inputs.npz"
    np.savez(path, ids=batch.ids, mask=np.ones(batch.ids.shape, bool), pixels=np.transpose(batch.pixels, (0, 3, 1, 2)))
    self._ask(op="inputs", path=str(path))

  def outputs(self, new_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """(last-token logits [B, V], greedy tokens [B, new_tokens]) of the current batch."""
    path = pathlib.Path(self._tmp.name) / "outputs.npz"
    self._ask(op="outputs", path=str(path), new_tokens=new_tokens)
    z = np.load(path)
    return z["logits"], z["tokens"]

  def call(self, call: str, new_tokens: int = 0):
    return lambda: common.Measured(self._ask(op="time", call=call, new_tokens=new_tokens)["seconds"])

  def close(self):
    if self._proc.poll() is None:
      self._proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
      self._proc.stdin.close()
      self._proc.wait(timeout=60)
    self._tmp.cleanup()


def unpadded(batch: PromptBatch) -> PromptBatch:
  """The batch without its bucket padding: EasyDeL runs the prompts' exact length, so all prompts of a
  batch must have one length (the bench's do)."""
  if len(set(batch.lengths.tolist())) != 1:
    raise ValueError("the EasyDeL baseline takes prompts of one length (no padding); got lengths "
                     f"{sorted(set(batch.lengths.tolist()))}")
  return dataclasses.replace(batch, ids=batch.ids[:, :int(batch.lengths[0])])


def checked(easydel: EasyDeL, batch: PromptBatch, checkpoint: pathlib.Path, dtype: str, new_tokens: int = 0,
            ours_tokens: np.ndarray | None = None, rtol: float = 1e-2) -> dict:
  """Loads the batch into the worker and checks EasyDeL's last-token logits against transformers' on
  the same checkpoint and inputs; raises when max |difference| exceeds rtol x max |logit|, so no timing
  of a different model is reported. Returns the figures for the bench's json: the logits' max
  |difference| (EasyDeL 0.3.0's float32 is not transformers' to the last bit: about 0.2% of the
  logits' range on the bench models) and, given blink-jax's greedy tokens [B, new_tokens], the share
  of EasyDeL's that equal them (random weights leave near-ties, so that share is information, not a
  check)."""
  easydel.set_batch(batch)
  logits, tokens = easydel.outputs(new_tokens)
  reference = common.torch_forward(checkpoint, unpadded(batch), "sdpa", dtype)()[:, -1].float().cpu().numpy()
  diff, scale = float(np.max(np.abs(logits - reference))), float(np.max(np.abs(reference)))
  if not diff <= rtol * scale:
    raise EasyDeLError(f"EasyDeL {easydel.version}'s last-token logits differ from transformers' by {diff:.3g} "
                       f"(> {rtol} x their largest, {scale:.3g}); its timings would not be of the same model")
  record = {"easydel": easydel.version, "logits_max_abs_diff_vs_transformers": diff, "logits_max_abs": scale}
  if ours_tokens is not None:
    record["greedy_tokens_equal_to_ours"] = float(np.mean(tokens == ours_tokens))
  return record
