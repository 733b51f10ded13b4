"""TokenSR distillation: a real step, learning, frozen backbone, the teacher, skipping bad images,
and equal results sharded over 8 devices."""

import json

import jax
import jax.numpy as jnp
import numpy as np

import train_fixtures
import functools

import pytest

from blink_jax import backbone, families
from blink_jax import sharding as shd
from blink_jax.blink.config import from_mapping
from blink_jax.data.train_pipeline import DecodeAndPreprocess, data_source, skipped_count, train_dataset
from blink_jax.models.llava import Llava
from blink_jax.inference.token_sr_teacher import crop_region, pool_grid
from blink_jax.train.distill import distillation_loss, distillation_targets
from blink_jax.train.loop import train
from blink_jax.train.state import init_train_state, optimizer, unflatten
from blink_jax.train.step import distill_micro, jit_train_step, make_train_step


def _setup(config, devices):
  partitioner = shd.Partitioner.from_config(config, devices)
  cfg, params = backbone.build(config.model, partitioner, config.seed, training=True)
  blink = from_mapping(config.blink.to_dict())
  tx = optimizer(config.train)
  state, frozen = init_train_state(cfg, blink, config.train, partitioner, config.seed, tx, params)
  model = families.of_config(cfg).model(cfg)
  prefix = jnp.asarray(backbone.prompt_prefix(config.model, cfg))
  step = make_train_step(distill_micro(model, blink, config.train, prefix), config.train, tx, config.seed)
  step = jit_train_step(step, state, frozen, {"pixels": partitioner.batch(4)})
  return partitioner, cfg, blink, model, prefix, state, frozen, step


def _fixed_batch(cfg, n, tmp_path, preprocessing="auto"):
  """n sample images as the training job preprocesses them for model config cfg."""
  family = families.of_config(cfg)
  name, data_dir = train_fixtures.tiny_tfds(tmp_path, count=n)
  preprocess = functools.partial(family.preprocess, cfg=cfg, preprocessing=family.training_preprocessing(preprocessing))
  it = iter(train_dataset(data_source(name, data_dir, "train"), train_fixtures.data_config(), global_batch=n,
                          transform=DecodeAndPreprocess("image", preprocess), seed=0))
  return next(it)["pixels"]


@pytest.mark.slow   # a whole job (the full tier)
def test_default_job_runs_checkpoints_and_exports(tmp_path):
  metrics = train(train_fixtures.tiny_config(tmp_path / "run"))
  assert np.isfinite(metrics["loss"]) and metrics["examples_per_sec"] > 0
  assert (tmp_path / "run" / "export" / "blink.json").exists()
  assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()) == ["3", "6"]
  assert list((tmp_path / "run").glob("events.out.tfevents.*"))
  assert json.loads((tmp_path / "run" / "summary_process0.json").read_text())["step"] == 6
  # Run again, complete: the export and summary stay as they were, the same metrics come back.
  before = {p: p.stat().st_mtime_ns for p in (tmp_path / "run" / "export").rglob("*")}
  assert train(train_fixtures.tiny_config(tmp_path / "run")) == metrics
  assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run" / "export").rglob("*")} == before




@pytest.mark.parametrize("preset", ["tiny", "qwen2.5-vl-tiny"])
def test_distillation_prefix_is_the_one_eval_prompts_have(preset):
  """TokenSR learns on the visual states eval meets: the prompt tokens before the image that the
  distillation step (and the diagnostics' teacher) take are those of the prompts Pipeline makes."""
  from blink_jax.inference.pipeline import Pipeline
  pipe = Pipeline.from_preset(preset)
  image = np.zeros((112, 112, 3), np.uint8)
  batch = pipe.prepare([image], ["What colour is the dot?"])
  model_cfg = backbone.random_model_config(preset)
  prefix = backbone.prompt_prefix(model_cfg, backbone.model_config(model_cfg))
  assert len(prefix) == batch.image_start > 8
  np.testing.assert_array_equal(prefix, np.asarray(batch.ids)[0, :batch.image_start])
@pytest.mark.parametrize("preset,preprocessing", [
    ("tiny", "auto"), pytest.param("qwen2.5-vl-tiny", "8x12", marks=pytest.mark.slow)])
def test_loss_falls_on_a_fixed_batch_and_backbone_stays_frozen(tmp_path, preset, preprocessing):
  config = train_fixtures.tiny_config(tmp_path, **{"train.learning_rate": 3e-3, "train.warmup_steps": 2,
                                                   "train.steps": 80, "model.preset": preset,
                                                   "model.preprocessing": preprocessing})
  partitioner, cfg, blink, model, prefix, state, frozen, step = _setup(config, jax.devices()[:1])
  assert all(k.startswith("token_sr/") for k in state.params)
  frozen_before = jax.tree.map(np.array, frozen)
  pixels = jnp.asarray(_fixed_batch(cfg, 8, tmp_path, preprocessing))
  rows, cols = model.visual_grid(pixels.shape)
  n_regions = (rows // blink.region_size) * (cols // blink.region_size)

  @jax.jit
  def loss_over_every_region(trainable):
    """The objective on the fixed batch, averaged over every region of every image."""
    backbone = unflatten(frozen)
    def one(r):
      states, teacher = distillation_targets(model, backbone, prefix, pixels, jnp.full((8,), r), blink)
      return distillation_loss(model, blink, unflatten(trainable)["token_sr"], states, teacher,
                               temperature=1.0, cosine_weight=config.train.cosine_weight)[0]
    return jax.lax.map(one, jnp.arange(n_regions)).mean()

  before = float(loss_over_every_region(state.params))
  with partitioner.activated():
    for _ in range(config.train.steps):
      state, _ = step(state, frozen, {"pixels": pixels})
  after = float(loss_over_every_region(state.params))
  assert after < 0.7 * before, (before, after)
  jax.tree.map(np.testing.assert_array_equal, frozen_before, jax.tree.map(np.asarray, frozen))


def test_teacher_equals_the_model_run_on_the_crop_outside_the_step(blink_ckpt, tmp_path):
  """The in-step teacher equals transformers' model on the crop, pooled (an independent reference)."""
  import torch
  from transformers import LlavaForConditionalGeneration
  config = train_fixtures.tiny_config(tmp_path, **{
      "model.hf_checkpoint": str(blink_ckpt), "blink.first_scan_layer": 2, "blink.last_scan_layer": 5,
      "blink.region_size": 3})
  cfg, params = backbone.build(config.model, shd.Partitioner.single_device(), 0, training=True)
  blink = from_mapping(config.blink.to_dict())
  model = Llava(cfg)
  prefix = backbone.prompt_prefix(config.model, cfg)
  pixels = _fixed_batch(cfg, 2, tmp_path)
  region = jnp.asarray([1, 2])
  _, teacher = jax.jit(lambda p, x, r: distillation_targets(model, p, jnp.asarray(prefix), x, r, blink))(
      params, pixels, region)

  hf = LlavaForConditionalGeneration.from_pretrained(blink_ckpt, dtype=torch.float32).eval()
  g, patch, p = cfg.vision.grid, cfg.vision.patch_size, blink.region_size
  for i, r in enumerate([1, 2]):
    y, x = (r // (g // p)) * p * patch, (r % (g // p)) * p * patch
    crop = np.asarray(jax.image.resize(pixels[i, y:y + p * patch, x:x + p * patch],
                                       pixels.shape[1:], "bicubic"))
    np.testing.assert_allclose(crop, np.asarray(crop_region(pixels[i:i + 1], region[i:i + 1], (g, g), p))[0],
                               atol=1e-6)
    ids = np.concatenate([prefix, np.full(g * g, cfg.image_token_id)])[None]
    with torch.no_grad():
      out = hf(input_ids=torch.from_numpy(ids).long(),
               pixel_values=torch.from_numpy(crop[None]).permute(0, 3, 1, 2), output_hidden_states=True)
    for j, layer in enumerate(range(blink.first_scan_layer, blink.last_scan_layer + 1)):
      visual = out.hidden_states[layer + 1][:, len(prefix):].numpy()
      ref = np.asarray(pool_grid(jnp.asarray(visual), g, 2 * p))[0]
      np.testing.assert_allclose(np.asarray(teacher[j, i]), ref, atol=2e-5, err_msg=f"layer {layer}")


@pytest.mark.slow   # a whole job (the full tier)
def test_qwen_job_trains_and_its_export_runs_blink_at_another_bucket(qwen_ckpt, tmp_path):
  """The training job on a Qwen2.5-VL checkpoint (one 8x8 bucket) exports a TokenSR that Blink's tokensr
  mode loads and runs at another bucket (8x12), where it changes the logits interp gives."""
  from blink_jax.inference.pipeline import Pipeline
  import hf_fixtures
  run = tmp_path / "run"
  metrics = train(train_fixtures.tiny_config(run, **{
      "model.hf_checkpoint": str(qwen_ckpt), "model.preprocessing": "8x8", "blink.first_scan_layer": 0,
      "blink.last_scan_layer": 1, "blink.token_sr_channels": 8, "train.learning_rate": 3e-2}))
  assert np.isfinite(metrics["loss"])
  pipe = Pipeline.from_hf(qwen_ckpt, preprocessing="8x12", buckets=(192,)).with_blink_for_checkpoint(
      str(run / "export"), overrides={"tau_exp": 0.0, "tau_drop": 0.0})
  assert (pipe.blink.first_scan_layer, pipe.blink.last_scan_layer, pipe.blink.token_sr_channels) == (0, 1, 8)
  batch = pipe.prepare([hf_fixtures.sample_photos()["chelsea"]], ["what is in this image ?"])
  tokensr, interp = (pipe.blink_forward(batch, mode=m) for m in ("tokensr", "interp"))
  assert int(tokensr.expansions[0]) > 0
  assert np.abs(np.asarray(tokensr.logits) - np.asarray(interp.logits)).max() > 1e-4


def test_qwen_teacher_is_transformers_on_the_crop_at_its_own_grid(qwen_ckpt, tmp_path):
  """On Qwen2.5-VL (a non-square 8x12 grid) the student's input is transformers' layer states of the
  full image at the region, and the teacher transformers' states of the region's crop re-encoded as a
  2p x 2p-token image."""
  import torch
  from transformers import Qwen2_5_VLForConditionalGeneration
  from blink_jax.testing import hf_patches
  config = train_fixtures.tiny_config(tmp_path, **{
      "model.hf_checkpoint": str(qwen_ckpt), "model.preprocessing": "8x12", "blink.first_scan_layer": 0,
      "blink.last_scan_layer": 1, "blink.region_size": 2})   # (transformers' last hidden state is normed)
  cfg, params = backbone.build(config.model, shd.Partitioner.single_device(), 0, training=True)
  blink = from_mapping(config.blink.to_dict())
  model = families.of_config(cfg).model(cfg)
  prefix = backbone.prompt_prefix(config.model, cfg)
  pixels = _fixed_batch(cfg, 2, tmp_path, "8x12")
  assert pixels.shape[1:3] == (8 * 28, 12 * 28)
  regions = [1, 17]       # (row 0, column 1) and (row 2, column 5) of the 4 x 6 regions
  student, teacher = jax.jit(lambda p, x, r: distillation_targets(model, p, jnp.asarray(prefix), x, r, blink))(
      params, pixels, jnp.asarray(regions))
  assert student.shape[1:] == (2, 2, 2, cfg.text.hidden_size) and teacher.shape[1:] == (2, 4, 4, cfg.text.hidden_size)

  hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen_ckpt, dtype=torch.float32).eval()

  def hf_visual_states(image, rows, cols):
    ids = torch.from_numpy(np.concatenate([prefix, np.full(rows * cols, cfg.image_token_id)])[None]).long()
    with torch.no_grad():
      out = hf(input_ids=ids, attention_mask=torch.ones_like(ids), image_grid_thw=torch.tensor([[1, 2 * rows, 2 * cols]]),
               pixel_values=torch.from_numpy(hf_patches(np.asarray(image))),
               mm_token_type_ids=(ids == cfg.image_token_id).int(), output_hidden_states=True)
    return [out.hidden_states[layer + 1][0, len(prefix):].numpy().reshape(rows, cols, -1)
            for layer in range(blink.first_scan_layer, blink.last_scan_layer + 1)]

  for i, r in enumerate(regions):
    y, x = (r // 6) * 2, (r % 6) * 2
    box = pixels[i, y * 28:(y + 2) * 28, x * 28:(x + 2) * 28]
    crop = np.asarray(jax.image.resize(box, (4 * 28, 4 * 28, 3), "bicubic"))
    for j, (full, crop_states) in enumerate(zip(hf_visual_states(pixels[i], 8, 12), hf_visual_states(crop, 4, 4))):
      np.testing.assert_allclose(np.asarray(student[j, i]), full[y:y + 2, x:x + 2], atol=2e-5, rtol=1e-4)
      np.testing.assert_allclose(np.asarray(teacher[j, i]), crop_states, atol=2e-5, rtol=1e-4)


def test_unreadable_images_are_skipped_and_counted(tmp_path):
  name, data_dir = train_fixtures.tiny_tfds(tmp_path, count=6, corrupt=2)
  source = data_source(name, data_dir, "train")
  good = [i for i in range(len(source)) if not source[i]["id"].startswith(b"broken")]
  it = iter(train_dataset(source, train_fixtures.data_config(), global_batch=4,
                          transform=DecodeAndPreprocess("image", train_fixtures.pad_to(56)), seed=0))
  seen = np.concatenate([next(it)["index"] for _ in range(6)])  # 24 good examples, 4 epochs of 8 files
  # index = epoch * 8 + source position. Every (epoch, good file) of 4 epochs is seen once; epochs
  # 0-2 were read whole (6 broken reads), epoch 3 up to its last good example.
  assert sorted(seen.tolist()) == sorted(e * 8 + f for e in range(4) for f in good)
  assert skipped_count(it) == 2   # files, not reads


@pytest.mark.slow   # a whole job (the full tier)
def test_sharded_fsdp_data_run_matches_one_device(tmp_path):
  one = train_fixtures.tiny_config(tmp_path / "a", **{"mesh.data": 1})
  eight = train_fixtures.tiny_config(tmp_path / "b", **{"mesh.data": 4, "mesh.fsdp": 2})
  eight.train.batch_size = one.train.batch_size = 8
  runs = []
  for config, devices in [(one, jax.devices()[:1]), (eight, jax.devices())]:
    partitioner, cfg, _, _, _, state, frozen, step = _setup(config, devices)
    pixels = _fixed_batch(cfg, 8, tmp_path / config.workdir.split("/")[-1])
    losses = []
    with partitioner.activated():
      for _ in range(5):
        state, metrics = step(state, frozen, {"pixels": jax.device_put(pixels, partitioner.batch(4))})
        losses.append(float(metrics["loss"]))
    runs.append((losses, jax.tree.map(np.asarray, state.params)))
  np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), runs[0][1], runs[1][1])


@pytest.mark.parametrize("ckpt,preprocessing,layers", [("blink_ckpt", "auto", (1, 6)), ("qwen_ckpt", "8x12", (0, 2))])
def test_saliency_guided_regions_follow_blinks_own_scanning(request, ckpt, preprocessing, layers):
  """With a question, the step's region shares equal Blink's SGS trace on the same prompt (no
  expansion), and the chosen region is their mean's arg-max; without one the region is random. On
  LLaVA-1.5 and on Qwen2.5-VL (its chat template, multimodal RoPE, a non-square grid)."""
  from blink_jax.blink.config import BlinkConfig
  from blink_jax.data.train_pipeline import QuestionSuffix
  from blink_jax.inference.pipeline import Pipeline
  from blink_jax.inference.token_sr_teacher import scan_layer_visual_states
  from blink_jax.train.distill import choose_regions
  import hf_fixtures
  pipe = Pipeline.from_hf(request.getfixturevalue(ckpt), preprocessing=preprocessing, buckets=(96, 128, 192),
                          layer_layout="stacked")   # training's layout (its step scans the layers)
  blink = BlinkConfig(mode="interp", first_scan_layer=layers[0], last_scan_layer=layers[1], region_size=2,
                      tau_exp=1.0, tau_drop=0.0, token_sr_channels=8)
  photos = list(hf_fixtures.sample_photos().values())[:3]
  questions = ["what is in this image ?", "how many cat are there ?", ""]
  batch = pipe.prepare(photos[:2], questions[:2])
  suffix = QuestionSuffix(pipe.tokenizer, pipe.family.image_tokens(pipe.cfg, batch.pixels.shape), 24,
                          pipe.cfg.pad_token_id, pipe.family.prompt)
  q_ids, q_len = zip(*(suffix(q) for q in questions))
  q_ids, q_len = jnp.asarray(np.stack(q_ids)), jnp.asarray(np.stack(q_len))
  assert list(np.asarray(q_len) > 0) == [True, True, False]
  prefix = jnp.asarray(batch.ids[0, :batch.image_start])
  pixels = jnp.asarray(np.concatenate([batch.pixels, batch.pixels[:1]]))
  _, shares = jax.jit(lambda p, x, i, n: scan_layer_visual_states(pipe.model, p, prefix, x, blink, i, n))(
      pipe.params, pixels, q_ids, q_len)
  trace = pipe.with_blink(blink).blink_forward(batch, mode="interp", trace=True).trace
  np.testing.assert_allclose(np.asarray(shares[:, :2]).transpose(1, 0, 2), np.asarray(trace.shares), atol=1e-5)
  fallback = jnp.asarray([7, 7, 7])
  region = np.asarray(choose_regions(shares, q_len, fallback))
  expected = np.asarray(trace.shares).mean(axis=1).argmax(axis=-1)
  np.testing.assert_array_equal(region[:2], expected)
  assert region[2] == 7


@pytest.mark.slow   # another kernel (splash equals XLA's forward in test_attention_kernels)
def test_splash_attention_gives_xlas_loss_and_gradients(tmp_path):
  """The training forwards on the TPU kernel (Pallas interpret mode here) and on XLA's agree."""
  results = {}
  for attention in ("xla", "splash"):
    config = train_fixtures.tiny_config(tmp_path / attention, **{"model.attention": attention})
    _, cfg, blink, model, prefix, state, frozen, _ = _setup(config, jax.devices()[:1])
    pixels = jnp.asarray(_fixed_batch(cfg, 4, tmp_path / attention))

    def loss(trainable):
      states, teacher = distillation_targets(model, unflatten(frozen), prefix, pixels, jnp.arange(4), blink)
      return distillation_loss(model, blink, unflatten(trainable)["token_sr"], states, teacher,
                               temperature=1.0, cosine_weight=config.train.cosine_weight)[0]
    results[attention] = jax.jit(jax.value_and_grad(loss))(state.params)
  (xla_loss, xla_grads), (splash_loss, splash_grads) = results["xla"], results["splash"]
  assert np.isfinite(float(xla_loss)) and abs(float(splash_loss) - float(xla_loss)) <= 1e-5 * abs(float(xla_loss))
  assert any(np.abs(np.asarray(g)).max() > 0 for g in jax.tree.leaves(xla_grads))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6, rtol=1e-4),
               xla_grads, splash_grads)
