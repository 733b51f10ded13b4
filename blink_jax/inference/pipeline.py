"""The user-facing inference API: a loaded vision-language model (LLaVA-1.5 or Qwen2.5-VL, by the
checkpoint's family: families.py) with its tokenizer, preprocessing and prompt template.

    pipe = Pipeline.from_hf("/ckpts/llava-1.5-7b-hf", dtype="bfloat16")
    batch = pipe.prepare(["cat.jpg"], ["What is in the image?"])
    logits = pipe.logits(batch)              # [B, T, V]
    texts = pipe.generate(batch, max_new_tokens=32)                  # vanilla
    texts = pipe.generate(batch, max_new_tokens=32, mode="interp")   # Blink-interp
    out = pipe.blink_forward(batch, mode="tokensr", trace=True)       # logits + trace
    scores = pipe.loglikelihood(batch, [" a cat</s>"], mode="interp")  # log p(continuation | prompt)
    texts = pipe.generate(batch, max_new_tokens=32, mode="zoom")      # attention-guided zoom (zoom.py)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from blink_jax import backbone
from blink_jax import families
from blink_jax import sharding as shd
from blink_jax.blink.config import BlinkConfig, defaults_for, from_mapping
from blink_jax.blink.prefill import BlinkOutput, blink_prefill, blink_prefill_fn
from blink_jax.checkpoint import load_token_sr
from blink_jax.data.image_preprocessing import ImageLike, load_image
from blink_jax.data.prompt_batch import PromptBatch, fit_slots, pad_prompts
from blink_jax.inference.generate import greedy_generate, vanilla_prefill
from blink_jax.inference.loglikelihood import Scores, pad_continuations, score_continuations
from blink_jax.inference import token_sr_teacher
from blink_jax.inference import zoom as zoom_lib
from blink_jax.models import token_sr as token_sr_lib
from blink_jax.models.layer_stack import resolve_layout
from blink_jax.data.tokenizer import Tokenizer

# Each example's target box [x0, y0, x1, y1] in its image's pixels (None: none), for the oracle ablations.
Targets = Sequence[Sequence[float] | None] | None
# What the pipeline runs: the plain model, Blink with interpolated or TokenSR tokens, attention-guided zoom.
MODES = ("vanilla", "interp", "tokensr", "zoom")

# 64-token steps up to 1024, where LLaVA-1.5 prompts live (576 visual + ~60-120 text tokens): padding
# stays small, and Blink's 64 SR slots (p=4, K=1) cost at most one step more than the plain prompt.
DEFAULT_BUCKETS = (64, 128, 192) + tuple(range(256, 1025, 64)) + (1280, 1536, 2048, 3072, 4096)


@dataclasses.dataclass
class Pipeline:
  cfg: Any                   # LlavaConfig | Qwen2_5_VLConfig: the family follows from it
  params: Any
  tokenizer: Tokenizer
  partitioner: shd.Partitioner
  preprocessing: str = "auto"   # the family's (families.py); "auto": its default
  buckets: Sequence[int] = DEFAULT_BUCKETS
  blink: BlinkConfig | None = None   # None: the spec's settings carried to this model (defaults_for)
  token_sr: Any = None   # trained TokenSR params; None: untrained (equal to interp)
  zoom: zoom_lib.ZoomConfig = zoom_lib.ZoomConfig()   # mode "zoom"'s settings

  def __post_init__(self):
    self.family = families.of_config(self.cfg)
    self.preprocessing = self.family.preprocessing(self.preprocessing)
    self.model = self.family.model(self.cfg)
    if self.blink is None:
      self.blink = defaults_for(self.family.fixed_grid(self.cfg), self.cfg.text.num_layers)
    self._logits = jax.jit(lambda p, ids, px, valid: self.model.apply(
        {"params": p}, ids, px, self.model.apply({"params": p}, ids, px, method="prompt_positions"), valid))
    self._generate_fns: dict[Any, Any] = {}
    self._score_fns: dict[Any, Any] = {}
    self._blink_fns: dict[Any, Any] = {}
    self._zoom_fns: dict[Any, Any] = {}

  def with_blink(self, blink: BlinkConfig, token_sr: Any = None) -> "Pipeline":
    """The same loaded model with other Blink settings / TokenSR weights (params are shared)."""
    blink.validate(self.family.fixed_grid(self.cfg), self.cfg.text.num_layers)
    return dataclasses.replace(self, blink=blink, token_sr=token_sr)

  def with_blink_for_checkpoint(self, token_sr: str | None = None, overrides: dict | None = None) -> "Pipeline":
    """Blink as a user of this checkpoint expects it: the spec's settings carried to its depth and
    grid (blink.config.defaults_for), or the settings a TokenSR export was trained with (its weights
    loaded from the directory `token_sr`), then `overrides` of any field."""
    trained, blink = None, defaults_for(self.family.fixed_grid(self.cfg), self.cfg.text.num_layers)
    if token_sr:
      trained, blink = load_token_sr(token_sr, width=self.cfg.text.hidden_size, partitioner=self.partitioner)
    return self.with_blink(from_mapping({**dataclasses.asdict(blink), **(overrides or {})}), trained)

  def with_zoom(self, zoom: zoom_lib.ZoomConfig) -> "Pipeline":
    """The same loaded model with other settings of mode "zoom" (params are shared)."""
    zoom.resolved(self.cfg.text.num_layers)
    return dataclasses.replace(self, zoom=zoom)

  def _blink_for(self, mode: str) -> BlinkConfig:
    # A grid that depends on the image (Qwen2.5-VL's buckets) is checked per batch, in the prefill.
    return dataclasses.replace(self.blink, mode=mode).validate(self.family.fixed_grid(self.cfg),
                                                               self.cfg.text.num_layers)

  def layout_for(self, batch: PromptBatch, mode: str) -> PromptBatch:
    """The batch padded for `mode`: Blink's prompts leave room in their bucket for the SR slots."""
    if mode == "vanilla":
      return batch
    return fit_slots(batch, self._blink_for(mode).num_slots, self.buckets, self.cfg.pad_token_id)

  def blink_forward(self, batch: PromptBatch, mode: str = "tokensr", trace: bool = False, *,
                    targets: Targets = None) -> BlinkOutput:
    """Blink's prefill with logits at every prompt position [B, T', V] (T' = layout_for(batch).ids
    length) and, if asked, its trace. `targets`: each example's target box [x0, y0, x1, y1] in its
    image's pixels (or None), which the oracle ablations take (Blink's region_choice="oracle": the
    region holding its centre, target_region; zoom's box_choice="oracle": the crop centred on it)."""
    blink = self._blink_for(mode)
    batch = self.layout_for(batch, mode)
    key = (blink, batch.image_start, trace)
    if key not in self._blink_fns:
      self._blink_fns[key] = jax.jit(lambda p, ids, px, ln, rg: blink_prefill(
          self.model, blink, p, ids, px, ln, image_start=batch.image_start, all_logits=True, trace=trace,
          regions=rg, teacher_fn=token_sr_teacher.oracle_tokens))
    n, (ids, pixels, lengths) = batch.ids.shape[0], self._device_batch(batch)
    params, oracle = self.mode_params(mode), self._oracle(mode, batch, targets)
    with self.partitioner.activated():
      out = self._blink_fns[key](params, ids, pixels, lengths, oracle)
    if ids.shape[0] == n:
      return out
    # The batch was padded to the mesh (_device); the cache stays padded (its layout is decoding's).
    return out._replace(logits=out.logits[:n], expansions=out.expansions[:n], key_valid=out.key_valid[:, :n],
                        trace=None if out.trace is None else jax.tree.map(lambda x: x[:n], out.trace))

  @classmethod
  def from_hf(cls, ckpt_dir: str | epath.PathLike, *, partitioner: shd.Partitioner | None = None,
              dtype: str = "float32", param_dtype: str | None = None, preprocessing: str = "auto",
              buckets: Sequence[int] = DEFAULT_BUCKETS, attention: str = "auto",
              layer_layout: str = "auto") -> "Pipeline":
    """An HF LLaVA or Qwen2.5-VL directory (local or gs://; the family from its config.json) loaded in
    `partitioner`'s shardings (default: all on the first device; e.g.
    shd.Partitioner(shd.make_mesh({"fsdp": -1})) shards over every device), its decoder's params in
    `layer_layout` (models/layer_stack.py: auto is per_layer on CPU, stacked elsewhere)."""
    partitioner = partitioner or shd.Partitioner.single_device()
    family = families.of_checkpoint(ckpt_dir)
    cfg, params = family.load(ckpt_dir, partitioner=partitioner, dtype=dtype, param_dtype=param_dtype or dtype,
                              attention=attention, layer_layout=resolve_layout(layer_layout, partitioner.platform))
    tokenizer = Tokenizer(ckpt_dir, image_placeholder=family.image_placeholder)
    return cls(cfg, params, tokenizer, partitioner, preprocessing, buckets)

  @classmethod
  def from_preset(cls, preset: str = "tiny", *, seed: int = 0, partitioner: shd.Partitioner | None = None,
                  dtype: str = "float32", param_dtype: str | None = None, preprocessing: str = "auto",
                  buckets: Sequence[int] = DEFAULT_BUCKETS, attention: str = "auto",
                  layer_layout: str = "auto") -> "Pipeline":
    """A random model of a named shape (models/presets.py) with a byte-level tokenizer: no checkpoint,
    no download, for trying the API (its answers are noise). With the defaults it is the model the
    embedded defaults of train.py and eval.py use, whose TokenSR train.py's default job exports to
    runs/tokensr/export (`with_blink_for_checkpoint("runs/tokensr/export")`)."""
    partitioner = partitioner or shd.Partitioner.single_device()
    model_cfg = backbone.random_model_config(preset, dtype=dtype, param_dtype=param_dtype, attention=attention,
                                             layer_layout=layer_layout)
    cfg, params = backbone.build(model_cfg, partitioner, seed, training=False)
    return cls(cfg, params, backbone.tokenizer(model_cfg, cfg), partitioner, preprocessing, buckets)

  def grid_of(self, image: ImageLike) -> tuple[int, int]:
    """The (H, W) pixels `prepare` resizes `image` to (one for every LLaVA image; Qwen2.5-VL's by
    the image's aspect ratio): the images of one batch must share it."""
    img = load_image(image)
    return self.family.resized_shape(img.height, img.width, self.cfg, self.preprocessing)

  def shape_batches(self, images: Sequence[ImageLike], batch_size: int) -> Iterator[list[int]]:
    """Indices into `images` in batches of one image shape (grid_of: one for LLaVA, Qwen2.5-VL's grid
    buckets) and exactly `batch_size` entries, in order, the last batch of a shape padded by repeating
    its last index: a stream of such batches compiles one program per (shape, prompt bucket)."""
    shapes = [self.grid_of(im) for im in images]
    for shape in dict.fromkeys(shapes):
      members = [i for i, s in enumerate(shapes) if s == shape]
      for start in range(0, len(members), batch_size):
        idx = members[start:start + batch_size]
        yield idx + [idx[-1]] * (batch_size - len(idx))

  def prepare(self, images: Sequence[ImageLike], questions: Sequence[str] | None = None, *,
              prompts: Sequence[str] | None = None) -> PromptBatch:
    """Images + questions (wrapped in the family's template: LLaVA's vicuna_v1, Qwen2.5-VL's chat
    template) or full prompts -> a PromptBatch. The images of one batch must share a shape: with
    Qwen2.5-VL's grid buckets, group them by `grid_of` first."""
    if (questions is None) == (prompts is None):
      raise ValueError("pass either questions (templated) or prompts (used as given)")
    texts = list(prompts) if prompts is not None else [self.family.prompt(q) for q in questions]
    if len(texts) != len(images):
      raise ValueError(f"{len(images)} images but {len(texts)} prompts")
    arrays = [self.family.preprocess(im, self.cfg, self.preprocessing) for im in images]
    shapes = sorted({a.shape[:2] for a in arrays})
    if len(shapes) > 1:
      raise ValueError(f"one batch holds images of one shape; these were resized to {shapes} (Qwen2.5-VL's "
                       "grid buckets: group the images by Pipeline.grid_of, or use one bucket)")
    pixels = np.stack(arrays)
    n = self.family.image_tokens(self.cfg, pixels.shape)
    ids = [self.tokenizer.encode_prompt(t, n) for t in texts]
    batch = pad_prompts(ids, pixels, self.buckets, self.cfg.pad_token_id, self.cfg.image_token_id)
    return dataclasses.replace(batch, texts=tuple(texts), images=tuple(images))

  def _zoom_grid(self, batch: PromptBatch) -> tuple[int, int]:
    if batch.images is None or batch.texts is None:
      raise ValueError("mode 'zoom' crops the batch's images and re-asks its prompts: make the batch with "
                       "prepare(), which keeps both")
    return self.model.visual_grid(batch.pixels.shape)

  def _zoom_pass_1(self, batch: PromptBatch) -> tuple[np.ndarray, Any]:
    """(zoom_saliency's map [B, rows, columns], the prompts' [prefix ; image] KV cache on the devices,
    for the batch padded to the mesh: what pass 2 continues after)."""
    self._zoom_grid(batch)
    n = batch.ids.shape[0]
    with self.partitioner.activated():
      saliency, prefix = self.zoom_program(batch.image_start)(self.params, *self._device_batch(batch))
    saliency = np.asarray(jax.device_get(saliency))[:n]
    if self.zoom.relative:   # the generic question's tokens after the same [prefix ; image] cache
      generic = self.prepare(batch.images, [zoom_lib.GENERIC_QUESTION] * n)
      self._check_shared_prefix(batch, generic, prefix.length)
      layer = self.zoom.resolved(self.cfg.text.num_layers).layer
      key = ("relative", layer, generic.image_start)
      if key not in self._zoom_fns:
        self._zoom_fns[key] = jax.jit(functools.partial(zoom_lib.saliency_on, self.model, layer, generic.image_start))
      with self.partitioner.activated():
        other = self._zoom_fns[key](self.params, prefix, *self._device_batch(generic))
      saliency = saliency / np.maximum(np.asarray(jax.device_get(other))[:n], 1e-12)
    return saliency, prefix

  def zoom_saliency(self, batch: PromptBatch) -> np.ndarray:
    """Zoom's pass 1: the last prompt token's attention to each visual token at zoom.layer [B, rows,
    columns] (with zoom.relative, divided by that of GENERIC_QUESTION's prompt on the same image)."""
    return self._zoom_pass_1(batch)[0]

  def zoom_program(self, image_start: int):
    """The jitted pass 1 of zoom (fn(params, ids, pixels, lengths) -> (attention [B, rows, columns],
    the [prefix ; image] KV cache)), one per image start; what zoom_saliency runs and aot.py compiles."""
    layer = self.zoom.resolved(self.cfg.text.num_layers).layer
    key = (layer, image_start)
    if key not in self._zoom_fns:
      self._zoom_fns[key] = jax.jit(functools.partial(zoom_lib.pass_1, self.model, layer, image_start))
    return self._zoom_fns[key]

  def zoom_boxes(self, batch: PromptBatch, targets: Targets = None, saliency: np.ndarray | None = None) -> np.ndarray:
    """Each example's crop, (row0, col0, row1, col1) in visual tokens [B, 4]: the zoom.box-sized window
    holding the most of zoom_saliency (`saliency` when already computed), or with box_choice="oracle"
    the one centred on the example's target box (`targets`, as blink_forward's; an example without
    one takes the attention's)."""
    grid = self._zoom_grid(batch)
    side = zoom_lib.box_side(self.zoom, grid)
    attention = lambda: zoom_lib.choose_boxes(self.zoom_saliency(batch) if saliency is None else saliency, side)  # noqa: E731
    if self.zoom.box_choice == "attention":
      return attention()

    def oracle(image, box):
      return zoom_lib.box_around(self.family, image, box, grid, side, self.cfg, self.preprocessing) if box else None

    boxes = self._per_example_targets(batch, targets, "zoom's box_choice='oracle'", oracle)
    if any(b is None for b in boxes):
      chosen = attention()
      boxes = [chosen[i] if b is None else b for i, b in enumerate(boxes)]
    return np.stack(boxes)

  def zoomed(self, batch: PromptBatch, boxes: np.ndarray | None = None, targets: Targets = None) -> PromptBatch:
    """The batch zoom answers from: each image's box (default: zoom_boxes, given `targets`) cropped from
    the image at its own resolution and encoded as a second image after it, in the same prompts
    (pixels [B, 2, H, W, 3])."""
    grid = self._zoom_grid(batch)
    boxes = self.zoom_boxes(batch, targets) if boxes is None else np.asarray(boxes)
    crops = zoom_lib.crop_views(self.family, batch.images, boxes, grid, self.preprocessing)
    pixels = np.stack([batch.pixels, np.stack([self.family.preprocess_crop(c, self.cfg, self.preprocessing,
                                                                           batch.pixels.shape) for c in crops])], axis=1)
    n = self.family.image_tokens(self.cfg, batch.pixels.shape)
    ids = [self.tokenizer.encode_prompt(self.family.two_images(t), n, images=2) for t in batch.texts]
    out = pad_prompts(ids, pixels, self.buckets, self.cfg.pad_token_id, self.cfg.image_token_id)
    return dataclasses.replace(out, texts=batch.texts, images=batch.images)

  @staticmethod
  def _check_shared_prefix(batch: PromptBatch, other: PromptBatch, split: int):
    if other.ids.shape[1] < split or not np.array_equal(other.ids[:, :split], batch.ids[:, :split]):
      raise ValueError(f"zoom shares the prompt's first {split} tokens ([prefix ; image]) between its passes, "
                       "but the prompt template puts other tokens there in the zoomed (or generic) prompt")

  def _prepared(self, batch: PromptBatch, mode: str, targets: Targets) -> tuple[PromptBatch, Any]:
    """(the batch `mode`'s prompt pass runs on, what else that pass takes: generate.PrefillFn's
    `extra`). Zoom: its zoomed batch (pass 1, boxes, crops) and pass 1's [prefix ; image] cache;
    Blink: the batch laid out for its slots and, for region_choice="oracle", the target regions."""
    if mode != "zoom":
      batch = self.layout_for(batch, mode)
      return batch, self._oracle(mode, batch, targets)
    saliency, prefix = self._zoom_pass_1(batch)
    zoomed = self.zoomed(batch, self.zoom_boxes(batch, targets, saliency))
    self._check_shared_prefix(batch, zoomed, prefix.length)
    return zoomed, prefix

  def _device(self, *arrays: np.ndarray) -> list[jax.Array]:
    """Host arrays with a leading batch axis, placed in the batch sharding; a batch that the mesh's
    batch-parallel devices (data x fsdp) do not divide is padded by repeating its last example (the
    public methods return the first B rows of what they compute)."""
    fill = -arrays[0].shape[0] % self.partitioner.batch_parallelism
    if fill:
      arrays = tuple(np.concatenate([x, np.repeat(x[-1:], fill, axis=0)]) for x in arrays)
    return [jax.device_put(x, self.partitioner.batch(x.ndim)) for x in arrays]

  def target_region(self, image: ImageLike, box: Sequence[float] | None) -> int:
    """The region (row-major, region_size x region_size tokens of the image's grid) that sees the
    centre of `box` = [x0, y0, x1, y1] in the image's pixels; -1 without a box or when preprocessing
    cuts its centre off."""
    if not box:
      return -1
    img = load_image(image)
    _, cols = self.model.visual_grid((1, *self.grid_of(img), 3))
    return self.family.region_at(box, img.height, img.width, self.cfg, self.preprocessing, cols,
                                 self.blink.region_size)

  def _oracle(self, mode: str, batch: PromptBatch, targets: Targets) -> jax.Array | None:
    """The target regions on the devices when `mode` takes them (region_choice="oracle"), else None."""
    if mode == "vanilla" or self.blink.region_choice != "oracle":
      return None
    return self._device(np.asarray(self._per_example_targets(batch, targets, "Blink's region_choice='oracle'",
                                                             self.target_region), np.int32))[0]

  def _per_example_targets(self, batch: PromptBatch, targets: Targets, who: str, convert) -> list:
    """convert(image, box) for each example of the batch (made by prepare(), which keeps its images)."""
    if targets is None:
      raise ValueError(f"{who} takes each example's target: pass targets= (a box [x0, y0, x1, y1] in the "
                       "image's pixels per example, or None)")
    if batch.images is None or len(targets) != len(batch.images):
      raise ValueError(f"{who}: {len(targets)} targets for a batch of "
                       f"{batch.ids.shape[0]} prompts made by prepare()")
    return [convert(image, box) for image, box in zip(batch.images, targets)]

  def _device_batch(self, batch: PromptBatch) -> list[jax.Array]:
    return self._device(batch.ids, batch.pixels, batch.lengths)

  def logits(self, batch: PromptBatch) -> jax.Array:
    """Logits [B, T, V] of every prompt position (positions past an example's length are padding)."""
    ids, pixels, lengths = self._device_batch(batch)
    valid = jnp.arange(ids.shape[1])[None, :] < lengths[:, None]
    with self.partitioner.activated():
      return self._logits(self.params, ids, pixels, valid)[:batch.ids.shape[0]]

  def prefill_fn(self, mode: str, image_start: int):
    """The prompt pass of `mode` in greedy_generate's shape (generate.PrefillFn), not jitted; zoom's is
    its second pass, on the zoomed batch after pass 1's cache (zoom.answer_prefill)."""
    if mode == "vanilla":
      return vanilla_prefill(self.model)
    if mode == "zoom":
      return zoom_lib.answer_prefill(self.model)
    return blink_prefill_fn(self.model, self._blink_for(mode), image_start, token_sr_teacher.oracle_tokens)

  def _program_key(self, mode: str, image_start: int) -> tuple:
    """What a mode's compiled programs depend on besides shapes: Blink's settings and image start."""
    return (mode, self._blink_for(mode), image_start) if mode in ("interp", "tokensr") else (mode,)

  def prefill_program(self, mode: str, image_start: int):
    """The jitted prompt pass of `mode` alone (fn(params, ids, pixels, lengths, extra=None) -> (next-token
    logits, KV cache, key validity, expansions)); what aot.py compiles to size the prompt pass."""
    prefill = self.prefill_fn(mode, image_start)
    return jax.jit(lambda p, ids, px, ln, extra=None: prefill(p, ids, px, ln, 0, extra))

  def generate_program(self, mode: str, max_new_tokens: int, image_start: int):
    """The jitted greedy generation of `mode` (fn(params, ids, pixels, lengths, extra=None) -> Generation),
    one per (mode, max_new_tokens, image start); what generate_tokens runs and aot.py compiles."""
    key = (max_new_tokens, *self._program_key(mode, image_start))
    if key not in self._generate_fns:
      prefill = self.prefill_fn(mode, image_start)
      self._generate_fns[key] = jax.jit(lambda p, ids, px, ln, extra=None: greedy_generate(
          self.model, prefill, p, ids, px, ln, max_new_tokens=max_new_tokens,
          eos_id=self.cfg.eos_token_ids, pad_id=self.cfg.pad_token_id, extra=extra))
    return self._generate_fns[key]

  def loglikelihood_program(self, mode: str, image_start: int):
    """The jitted continuation scoring of `mode` (fn(params, ids, pixels, lengths, tokens, counts,
    extra=None) -> loglikelihood.Scores), one per (mode, image start); what loglikelihood runs."""
    key = self._program_key(mode, image_start)
    if key not in self._score_fns:
      prefill = self.prefill_fn(mode, image_start)
      self._score_fns[key] = jax.jit(lambda p, ids, px, ln, tokens, counts, extra=None: score_continuations(
          self.model, prefill, p, ids, px, ln, tokens, counts, extra))
    return self._score_fns[key]

  def loglikelihood(self, batch: PromptBatch, continuations: Sequence[str | Sequence[int]],
                    mode: str = "vanilla", *, targets: Targets = None) -> Scores:
    """Per example, the summed log-probability of its continuation after its prompt and whether it
    is the greedy continuation (numpy arrays [B]; Blink modes decide from the prompt, as in generation,
    and score the continuation against that prefill's cache). A continuation is text, tokenized after
    its prompt's text (Tokenizer.encode_continuation; batches from prepare() carry it), or token ids."""
    if len(continuations) != batch.ids.shape[0]:
      raise ValueError(f"{len(continuations)} continuations for a batch of {batch.ids.shape[0]} prompts")
    batch, extra = self._prepared(batch, mode, targets)
    if any(isinstance(c, str) for c in continuations):
      if batch.texts is None:
        raise ValueError("text continuations are tokenized after their prompts' text, which this batch does "
                         "not carry (make it with prepare(), or pass token ids)")
      n = self.family.image_tokens(self.cfg, batch.pixels.shape)
      continuations = [self.tokenizer.encode_continuation(p, c, n)
                       if isinstance(c, str) else c for p, c in zip(batch.texts, continuations)]
    tokens, counts = pad_continuations(continuations, self.cfg.pad_token_id)
    program = self.loglikelihood_program(mode, batch.image_start)
    # Params and inputs are placed before the mesh is activated: under it, an untrained TokenSR's
    # first initialisation (mode_params) would meet the abstract mesh and fail.
    params, args = self.mode_params(mode), self._device_batch(batch) + self._device(tokens, counts)
    with self.partitioner.activated():
      out = program(params, *args, extra)
    return Scores(*(np.asarray(x)[:len(continuations)] for x in jax.device_get(out)))

  def mode_params(self, mode: str, abstract: bool = False) -> Any:
    """The params `mode` runs with: the LLaVA params, plus TokenSR for tokensr (untrained when none
    was given; with `abstract`, its shapes only)."""
    if mode != "tokensr":
      return self.params
    if self.token_sr is None:
      token_sr = token_sr_lib.init_for(self.blink, self.cfg, jax.random.key(0),
                                       partitioner=self.partitioner, abstract=abstract)
      if abstract:
        return {**self.params, "token_sr": token_sr}
      self.token_sr = token_sr
    return {**self.params, "token_sr": self.token_sr}

  def generate_tokens(self, batch: PromptBatch, max_new_tokens: int = 32, mode: str = "vanilla", *,
                      with_expansions: bool = False, targets: Targets = None):
    """Greedy tokens [B, max_new_tokens] (pad after EOS) with mode vanilla | interp | tokensr; with
    `with_expansions`, (tokens, regions Blink expanded per example [B]). `targets`: as blink_forward's.
    Mode zoom: attention-guided zoom (zoom.py), its settings the pipeline's `zoom`."""
    batch, extra = self._prepared(batch, mode, targets)
    program = self.generate_program(mode, max_new_tokens, batch.image_start)
    ids, pixels, lengths = self._device_batch(batch)
    params = self.mode_params(mode)
    with self.partitioner.activated():
      out = jax.device_get(program(params, ids, pixels, lengths, extra))
    n = batch.ids.shape[0]
    tokens = np.asarray(out.tokens)[:n]
    return (tokens, np.asarray(out.expansions)[:n]) if with_expansions else tokens

  def decode(self, tokens: np.ndarray) -> list[str]:
    texts = []
    for row in tokens:
      row = list(row)
      ends = [row.index(e) for e in self.cfg.eos_token_ids if e in row]
      if ends:
        row = row[:min(ends)]
      texts.append(self.tokenizer.decode(row).strip())
    return texts

  def generate(self, batch: PromptBatch, max_new_tokens: int = 32, mode: str = "vanilla", *,
               with_expansions: bool = False, targets: Targets = None):
    """Greedy answers; with `with_expansions`, (answers, regions Blink expanded per example).
    `targets`: as blink_forward's."""
    if with_expansions:
      tokens, expansions = self.generate_tokens(batch, max_new_tokens, mode, with_expansions=True, targets=targets)
      return self.decode(tokens), expansions
    return self.decode(self.generate_tokens(batch, max_new_tokens, mode, targets=targets))
