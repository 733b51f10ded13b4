"""blink-jax as an lmms-eval model (`python -m lmms_eval --model blink_jax --model_args ...`), so the
tasks every peer method reports on run through Blink's pipeline. Registered through the entry-point
group `lmms_eval.models` (pyproject.toml); needs `pip install -r requirements-lmms-eval.txt`.

  --model_args checkpoint=/ckpts/llava-1.5-7b-hf,mode=interp,dtype=bfloat16,
               token_sr=runs/tokensr_7b/export,blink=tau_exp:0.1;max_regions:2

- `mode`: vanilla | interp | tokensr | zoom. `blink`: `;`-separated `field:value` overrides of the
  Blink settings (the spec's carried to the checkpoint, or the TokenSR export's when `token_sr` is
  given); `zoom`: those of attention-guided zoom's (inference/zoom.py: layer, box, relative).
- The checkpoint's family (LLaVA-1.5 or Qwen2.5-VL, from its config.json) sets the prompt: the
  task's context as the user turn of LLaVA-1.5's vicuna_v1 template, `<image>` first unless the
  context places it; or of Qwen2.5-VL's chat template, the image first (a `<image>` in the context
  is dropped). One image per request; greedy decoding only.
- `generate_until`: batched through the pipeline (`batch_size`, rounded up to what the mesh splits;
  requests grouped by the image shape their images are resized to, Qwen2.5-VL's grid buckets),
  stopped at `max_new_tokens` and cut at the first `until` string.
- `loglikelihood`: the continuation scored as the assistant's reply (LLaVA: after `ASSISTANT:` and a
  space, as the template writes it; Qwen2.5-VL: right after `assistant\n`; no end-of-turn token),
  against the mode's own prefill: (its loss, whether greedy), the loss being the negative summed
  log-probability. lmms-eval's multiple-choice scoring picks the option of least loss (`np.argmin`
  in its Task.process_results, as its own models return losses), so the option the model finds most
  likely; a log-probability (lm-evaluation-harness's convention) would be picked inverted.
- One host: all its devices, params sharded over them (mesh fsdp=-1). For a pod, use eval.py.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from PIL import Image

from blink_jax import sharding as shd
from blink_jax.blink.config import parse_overrides
from blink_jax.inference import zoom as zoom_lib
from blink_jax.inference.pipeline import MODES
from blink_jax.data.prompt import IMAGE_PLACEHOLDER, vicuna_v1_prompt
from blink_jax.inference.pipeline import Pipeline


def manifest():
  """The entry point lmms-eval's model registry loads."""
  from lmms_eval.models.registry_v2 import ModelManifest
  return ModelManifest(model_id="blink_jax", simple_class_path=f"{__name__}.BlinkJax")




class BlinkJax(lmms):

  def __init__(self, checkpoint: str, mode: str = "vanilla", dtype: str = "float32", token_sr: str = "",
               blink: str = "", zoom: str = "", batch_size: int | str = 1, max_new_tokens: int = 128, preprocessing: str = "auto",
               attention: str = "auto", **unused: Any):
    super().__init__()
    if mode not in MODES:
      raise ValueError(f"blink_jax model_args mode={mode!r}; expected one of {MODES}")
    if unused:
      logging.warning("blink_jax: ignoring model_args %s", sorted(unused))
    partitioner = shd.Partitioner(shd.make_mesh({"data": 1, "fsdp": -1, "tensor": 1}))
    pipe = Pipeline.from_hf(str(checkpoint), partitioner=partitioner, dtype=dtype, preprocessing=preprocessing,
                                 attention=attention)
    overrides = parse_overrides([i for i in str(blink).split(";") if i.strip()], sep=":")
    self.pipe = pipe.with_blink_for_checkpoint(token_sr or None, overrides).with_zoom(zoom_lib.from_mapping(
        parse_overrides([i for i in str(zoom).split(";") if i.strip()], sep=":"), "blink_jax model_args zoom"))
    self.mode, self.max_new_tokens = mode, int(max_new_tokens)
    ways = partitioner.batch_parallelism
    self.batch_size = -(-int(batch_size) // ways) * ways

  def _doc_image(self, request: Instance) -> Image.Image:
    if len(request.args) != 6:
      raise ValueError(f"blink_jax: a request without its document ({request.args[:2]!r}...: lmms-eval's "
                       "unconditional loglikelihood for acc_mutual_info) is not supported; it needs an image")
    _, _, doc_to_visual, doc_id, task, split = request.args
    visuals = doc_to_visual(self.task_dict[task][split][doc_id])
    if len(visuals) != 1 or not isinstance(visuals[0], Image.Image):
      raise ValueError(f"blink_jax takes one image per request (LLaVA-1.5); {task} doc {doc_id} has "
                       f"{len(visuals)} visuals of types {sorted({type(v).__name__ for v in visuals})}")
    return visuals[0].convert("RGB")

  def _prompt(self, context: str) -> str:
    if self.pipe.family.name == "llava":
      return vicuna_v1_prompt(context, with_image=IMAGE_PLACEHOLDER not in context)
    return self.pipe.family.prompt(context.replace(IMAGE_PLACEHOLDER, "").strip())

  def _batches(self, requests: list[Instance]):
    """(indices, images, prompts) per batch of one image shape, the last of each shape padded by
    repeating its last request."""
    images = [self._doc_image(r) for r in requests]
    for idx in self.pipe.shape_batches(images, self.batch_size):
      yield idx, [images[i] for i in idx], [self._prompt(requests[i].args[0]) for i in idx]

  def generate_until(self, requests: list[Instance]) -> list[str]:
    out: list[str | None] = [None] * len(requests)
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(requests):   # one batch holds one set of generation settings
      groups.setdefault(json.dumps(r.args[1], sort_keys=True, default=str), []).append(i)
    for members in groups.values():
      kwargs = dict(requests[members[0]].args[1])
      if kwargs.get("do_sample") or float(kwargs.get("temperature") or 0) > 0:
        raise ValueError(f"blink_jax decodes greedily; task {requests[members[0]].args[4]} asks for sampling "
                         f"({kwargs})")
      until = kwargs.get("until") or []
      until = [until] if isinstance(until, str) else list(until)
      new_tokens = int(kwargs.get("max_new_tokens") or self.max_new_tokens)
      group = [requests[i] for i in members]
      for idx, images, prompts in self._batches(group):
        texts = self.pipe.generate(self.pipe.prepare(images, prompts=prompts), new_tokens, mode=self.mode)
        for i, text in zip(idx, texts):   # idx indexes `group`
          for stop in until:
            text = text.split(stop, 1)[0] if stop else text
          out[members[i]] = text
    return out

  def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
    """Per request (loss = -summed log-probability of the continuation, is it greedy), wrapped in a
    GenerationResult: lmms-eval 0.7's evaluator passes each response through unwrap_generation_output,
    which turns a bare tuple into its string (and the task then fails to unpack it), but hands a
    GenerationResult's payload on unchanged."""
    out: list[GenerationResult | None] = [None] * len(requests)
    for idx, images, prompts in self._batches(requests):
      replies = []
      for i in idx:
        _, target, _, doc_id, task, split = requests[i].args
        text = target if isinstance(target, str) else target(self.task_dict[task][split][doc_id])
        replies.append(self.pipe.family.reply_prefix + str(text).lstrip())
      scores = self.pipe.loglikelihood(self.pipe.prepare(images, prompts=prompts), replies, mode=self.mode)
      for k, i in enumerate(idx):
        out[i] = GenerationResult((-float(scores.logprob[k]), bool(scores.greedy[k])))
    return out

  def generate_until_multi_round(self, requests) -> list[str]:
    raise NotImplementedError("blink_jax answers single-round requests (generate_until, loglikelihood)")
