"""Our Flax Qwen2.5-VL equals transformers' Qwen2_5_VLForConditionalGeneration on the same checkpoint:
its config.json reader and strict loader (both key layouts), the vision encoder over several grids,
logits and multimodal RoPE positions of a padded batch, greedy generation, and the processor's
preprocessing, chat template and tokenization."""

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import Qwen2_5_VLForConditionalGeneration

import hf_fixtures
import qwen_fixtures
from blink_jax.testing import hf_patches
from blink_jax.convert.hf_qwen2_5_vl import load_hf_qwen2_5_vl
from blink_jax.data.prompt import QWEN_IMAGE_PLACEHOLDER, qwen_chat_prompt
from blink_jax.data.qwen_preprocessing import (DEFAULT_GRID_BUCKETS, choose_bucket, preprocess_qwen_image,
                                               smart_resize)
from blink_jax.inference.generate import first_positions, greedy_generate, vanilla_prefill
from blink_jax.models import presets
from blink_jax.models.qwen2_5_vl import Qwen2_5_VL, mrope_positions
from blink_jax.models.qwen2_5_vl_config import from_hf_config
from blink_jax.inference.pipeline import Pipeline
from blink_jax.data.tokenizer import Tokenizer

# The hub's Qwen/Qwen2.5-VL-7B-Instruct config.json (flat: text fields at the top level, rope_scaling).
HUB_7B_CONFIG = presets.HF_CONFIGS["qwen2.5-vl-7b"]


def _hf(ckpt):
  return Qwen2_5_VLForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32).eval()


def test_config_of_the_hub_7b_and_of_transformers_5(qwen_ckpt):
  cfg = from_hf_config(HUB_7B_CONFIG)
  t, v = cfg.text, cfg.vision
  assert (t.hidden_size, t.num_layers, t.num_heads, t.num_kv_heads, t.head_dim) == (3584, 28, 28, 4, 128)
  assert (t.mrope_section, t.rope_theta, t.attention_bias, t.tie_word_embeddings) == ((16, 24, 24), 1e6, True, False)
  assert (v.depth, v.hidden_size, v.num_heads, v.out_hidden_size, v.window) == (32, 1280, 16, 3584, 4)
  assert v.fullatt_block_indexes == (7, 15, 23, 31)
  assert (cfg.image_token_id, cfg.eos_token_id, cfg.bos_token_id) == (151655, 151645, 151643)
  nested = from_hf_config(json.loads((qwen_ckpt / "config.json").read_text()))
  assert (nested.text.num_layers, nested.text.num_kv_heads, nested.text.mrope_section) == (3, 2, (2, 3, 3))
  assert nested.vision.fullatt_block_indexes == (1, 3)
  with pytest.raises(ValueError, match="expected a Qwen2.5-VL checkpoint"):
    from_hf_config({"model_type": "llava"})
  with pytest.raises(ValueError, match="use_sliding_window"):
    from_hf_config({**HUB_7B_CONFIG, "use_sliding_window": True})


def _prompts(tok, grid, question_words, seed=0):
  """Chat prompts with one image of `grid` merged tokens, questions of the given word counts."""
  rng = np.random.default_rng(seed)
  words = [w for w in hf_fixtures.WORDS if w.isalpha()]
  n = grid[0] * grid[1]
  return [tok.encode_prompt(qwen_chat_prompt(" ".join(rng.choice(words, k))), n) for k in question_words]


# The full tier: the model's own parity with each kernel (the other kernels equal xla on LLaVA in the
# fast tier: test_attention_kernels, test_llava_parity). The fast tier checks Qwen2.5-VL's parity
# through the whole pipeline (test_pipeline_logits_generation_and_scores_equal_transformers).
@pytest.mark.slow
@pytest.mark.parametrize("attention", ["xla", "blocked", "splash"])
def test_logits_positions_and_generation_match_transformers(qwen_ckpt, attention):
  hf = _hf(qwen_ckpt)
  hf.generation_config.eos_token_id = None   # both generate 6 tokens, EOS (here <|im_end|>) included
  cfg, params = load_hf_qwen2_5_vl(qwen_ckpt, attention=attention)
  model = Qwen2_5_VL(cfg)
  tok = Tokenizer(qwen_ckpt, image_placeholder=QWEN_IMAGE_PLACEHOLDER)
  photos = list(hf_fixtures.sample_photos().values())
  # grids: square over 2 x 2 windows, non-square with partial windows (11 x 16 merged), less than a window.
  for grid in [(8, 8), (11, 16), (2, 3)]:
    pixels = np.stack([preprocess_qwen_image(p, [grid]) for p in photos[:3]])
    rows = _prompts(tok, grid, [3, 12, 30])
    t = max(len(r) for r in rows) + 5
    ids = np.full((3, t), cfg.pad_token_id, np.int32)
    for i, r in enumerate(rows):
      ids[i, :len(r)] = r
    lengths = np.array([len(r) for r in rows], np.int32)
    positions = mrope_positions(jnp.asarray(ids), cfg.image_token_id, grid)
    valid = jnp.arange(t)[None] < lengths[:, None]
    logits = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(ids), jnp.asarray(pixels), positions,
                                             valid))
    first = np.asarray(first_positions(model, params, jnp.asarray(ids), jnp.asarray(pixels), jnp.asarray(lengths)))
    generated = np.asarray(jax.jit(lambda p, i, x, ln: greedy_generate(
        model, vanilla_prefill(model), p, i, x, ln, max_new_tokens=6, eos_id=-1, pad_id=cfg.pad_token_id).tokens)(
            params, jnp.asarray(ids), jnp.asarray(pixels), jnp.asarray(lengths)))
    thw = torch.tensor([[1, 2 * grid[0], 2 * grid[1]]])
    for i in range(3):
      n = int(lengths[i])
      inp = torch.from_numpy(ids[i:i + 1, :n]).long()
      kw = dict(input_ids=inp, attention_mask=torch.ones_like(inp), image_grid_thw=thw,
                pixel_values=torch.from_numpy(hf_patches(pixels[i])),
                mm_token_type_ids=(inp == cfg.image_token_id).int())
      with torch.no_grad():
        ref = hf(**kw).logits[0].numpy()
        gen = hf.generate(**kw, do_sample=False, max_new_tokens=6)[0, n:].numpy()
      hf_positions, deltas = hf.model.get_rope_index(inp, kw["mm_token_type_ids"], image_grid_thw=thw)
      np.testing.assert_array_equal(np.asarray(positions[i, :n]), hf_positions[:, 0].numpy().T)
      assert first[i] == n + int(deltas[0, 0]), (grid, i)   # where generated tokens' positions start
      assert np.abs(ref - logits[i, :n]).max() <= 1e-4 * max(1.0, np.abs(ref).max()), (grid, i)
      np.testing.assert_array_equal(gen, generated[i], err_msg=f"grid {grid}, example {i}")


def test_transformers_4_layout_and_tied_head_load_to_the_same_params(qwen_ckpt, tmp_path):
  """transformers 4.5x exported `model.visual.*` / `model.language_model.*`; the hub and transformers 5
  write `visual.*` / `model.*`. Both load to identical params; a missing tensor is named."""
  _, params = load_hf_qwen2_5_vl(qwen_ckpt)
  old = tmp_path / "v4"
  old.mkdir()
  for f in ["config.json", "tokenizer.json"]:
    shutil.copy(qwen_ckpt / f, old / f)
  tensors = {}
  for f in qwen_ckpt.glob("*.safetensors"):
    tensors.update(load_file(f))
  renamed = {("model." + k if k.startswith("visual.") else
              k.replace("model.", "model.language_model.", 1) if k.startswith("model.") else k): v
             for k, v in tensors.items()}
  save_file(renamed, old / "model.safetensors")
  _, again = load_hf_qwen2_5_vl(old)
  jax.tree.map(np.testing.assert_array_equal, params, again)
  del renamed["model.visual.merger.ln_q.weight"]
  save_file(renamed, old / "model.safetensors")
  with pytest.raises(ValueError, match=r"missing tensors \(1\).*merger\.ln_q\.weight"):
    load_hf_qwen2_5_vl(old)
  tied = tmp_path / "tied"
  qwen_fixtures.build_checkpoint(tied, tied=True, seed=1)
  cfg, tied_params = load_hf_qwen2_5_vl(tied)
  assert cfg.text.tie_word_embeddings and "lm_head" not in tied_params["language_model"]


def test_preprocessing_prompt_and_tokens_equal_the_processor(qwen_ckpt):
  tok = Tokenizer(qwen_ckpt, image_placeholder=QWEN_IMAGE_PLACEHOLDER)
  photos = hf_fixtures.sample_photos()
  for kwargs in [{}, {"min_pixels": 128 * 28 * 28, "max_pixels": 256 * 28 * 28}]:
    proc = qwen_fixtures.HFProcessor(qwen_fixtures.build_tokenizer(), **kwargs)
    for name, photo in photos.items():
      question = "what is in this image ?"
      ref = proc(photo, question)
      ours = preprocess_qwen_image(photo, "native", **{{"min_pixels": "min_resize_pixels",
                                                        "max_pixels": "max_resize_pixels"}[k]: v
                                                       for k, v in kwargs.items()})
      _, gh, gw = ref["image_grid_thw"][0]
      assert ours.shape == (gh * 14, gw * 14, 3), name
      np.testing.assert_allclose(hf_patches(ours), ref["pixel_values"], atol=1e-6, err_msg=name)
      assert qwen_chat_prompt(question) == proc.prompt(question)
      ids = tok.encode_prompt(qwen_chat_prompt(question), gh * gw // 4)
      np.testing.assert_array_equal(ids, ref["input_ids"][0], err_msg=name)


def test_native_preprocessing_takes_the_checkpoints_pixel_bounds(qwen_ckpt, tmp_path):
  """A checkpoint's preprocessor_config.json min/max pixels (the hub's files set their own) bound
  `native` resizing as transformers' processor loaded from that directory bounds it."""
  from transformers import Qwen2VLImageProcessorPil
  ckpt = tmp_path / "ckpt"
  shutil.copytree(qwen_ckpt, ckpt)
  (ckpt / "preprocessor_config.json").write_text(json.dumps({
      "image_processor_type": "Qwen2VLImageProcessor", "min_pixels": 64 * 28 * 28, "max_pixels": 100 * 28 * 28,
      "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2}))
  pipe = Pipeline.from_hf(ckpt, preprocessing="native", buckets=(256,))
  assert (pipe.cfg.min_pixels, pipe.cfg.max_pixels) == (64 * 28 * 28, 100 * 28 * 28)
  reference = Qwen2VLImageProcessorPil.from_pretrained(ckpt)
  for name, photo in hf_fixtures.sample_photos().items():
    ref = reference(images=photo, return_tensors="np")
    batch = pipe.prepare([photo], ["what is in this image ?"])
    _, gh, gw = ref["image_grid_thw"][0]
    assert batch.pixels.shape[1:3] == (gh * 14, gw * 14) and gh * gw <= 4 * 100, name
    np.testing.assert_allclose(hf_patches(batch.pixels[0]), ref["pixel_values"], atol=1e-6, err_msg=name)
  assert (Pipeline.from_hf(qwen_ckpt).cfg.max_pixels, ) == (28 * 28 * 1280, )   # none: transformers' defaults


def test_generation_stops_at_every_end_id_generate_stops_at(qwen_ckpt, tmp_path):
  """generation_config.json's end ids (Qwen2.5-VL-Instruct's: <|im_end|> and <|endoftext|>) end an
  example wherever transformers' generate, reading the same file, ends it."""
  ckpt = tmp_path / "ckpt"
  shutil.copytree(qwen_ckpt, ckpt)
  photos = hf_fixtures.sample_photos()
  questions = ["what is in this image ?", "describe it", "how many cat are there ?"]
  pipe = Pipeline.from_hf(qwen_ckpt, preprocessing="8x8", buckets=(256,))
  batch = pipe.prepare([photos["chelsea"], photos["coffee"], photos["rocket"]], questions)
  free = pipe.generate_tokens(batch, max_new_tokens=6)
  other = next(int(t) for t in free[0, 1:] if t != pipe.cfg.eos_token_id)   # a token example 0 generates
  generation = json.loads((ckpt / "generation_config.json").read_text())
  (ckpt / "generation_config.json").write_text(json.dumps({**generation, "eos_token_id": [pipe.cfg.eos_token_id, other]}))
  stopping = Pipeline.from_hf(ckpt, preprocessing="8x8", buckets=(256,))
  assert stopping.cfg.eos_token_ids == (pipe.cfg.eos_token_id, other)
  out = stopping.generate_tokens(batch, max_new_tokens=6)
  hf = _hf(ckpt)
  for i in range(3):
    n = int(batch.lengths[i])
    inp = torch.from_numpy(batch.ids[i:i + 1, :n]).long()
    with torch.no_grad():
      gen = hf.generate(input_ids=inp, attention_mask=torch.ones_like(inp), image_grid_thw=torch.tensor([[1, 16, 16]]),
                        pixel_values=torch.from_numpy(hf_patches(batch.pixels[i])),
                        mm_token_type_ids=(inp == pipe.cfg.image_token_id).int(), do_sample=False,
                        max_new_tokens=6)[0, n:].numpy()
    ref = np.full(6, pipe.cfg.pad_token_id)
    ref[:len(gen)] = gen    # generate stops the batch of one at an end id
    stop = min([list(ref).index(e) for e in stopping.cfg.eos_token_ids if e in ref] + [5])
    ref[stop + 1:] = pipe.cfg.pad_token_id
    np.testing.assert_array_equal(out[i], ref, err_msg=f"example {i}")
  assert other in out[0] and not (out[0] == free[0]).all()
  assert stopping.decode(out[:1])[0] == stopping.tokenizer.decode(out[0, :list(out[0]).index(other)]).strip()


def test_grid_buckets_keep_the_aspect_ratio_within_the_budget():
  assert smart_resize(300, 400) == (308, 392) and smart_resize(20, 20) == (56, 56)
  for rows, cols in DEFAULT_GRID_BUCKETS:
    assert rows % 4 == 0 and cols % 4 == 0 and 768 <= rows * cols <= 1024
  assert choose_bucket(480, 640) == (28, 36)        # 4:3
  assert choose_bucket(1080, 1920) == (24, 40)      # 16:9
  assert choose_bucket(1920, 1080) == (40, 24)
  assert choose_bucket(500, 500) == (32, 32)
  assert choose_bucket(100, 1000) == (20, 40)       # wider than any bucket: the widest
  photo = hf_fixtures.sample_photos()["chelsea"]     # 300 x 451
  assert preprocess_qwen_image(photo).shape == (24 * 28, 36 * 28, 3)
  with pytest.raises(ValueError, match="expected 'native'"):
    preprocess_qwen_image(photo, "dynamic")


def test_pipeline_logits_generation_and_scores_equal_transformers(qwen_ckpt):
  """From the checkpoint directory through Pipeline (family from config.json, grid buckets, chat
  template): logits, greedy tokens and continuation log-probabilities equal transformers' on the
  same pixels; images of different buckets are refused in one batch."""
  hf = _hf(qwen_ckpt)
  hf.generation_config.eos_token_id = None
  pipe = Pipeline.from_hf(qwen_ckpt, buckets=(256, 512, 1024))
  assert pipe.family.name == "qwen2_5_vl" and pipe.preprocessing == "buckets"
  photos = hf_fixtures.sample_photos()
  images = [photos["chelsea"], photos["coffee"], photos["rocket"]]   # all 3:2: one bucket, 24 x 36
  assert {pipe.grid_of(im) for im in images} == {(24 * 28, 36 * 28)}
  questions = ["what is in this image ?", "describe it", "how many cat are there ?"]
  batch = pipe.prepare(images, questions)
  logits = np.asarray(pipe.logits(batch))
  tokens = pipe.generate_tokens(batch, max_new_tokens=5)
  scores = pipe.loglikelihood(batch, [" a cat<|im_end|>", " red<|im_end|>", " two<|im_end|>"])
  thw = torch.tensor([[1, 48, 72]])
  for i in range(3):
    n = int(batch.lengths[i])
    inp = torch.from_numpy(batch.ids[i:i + 1, :n]).long()
    kw = dict(input_ids=inp, attention_mask=torch.ones_like(inp), image_grid_thw=thw,
              pixel_values=torch.from_numpy(hf_patches(batch.pixels[i])),
              mm_token_type_ids=(inp == pipe.cfg.image_token_id).int())
    with torch.no_grad():
      ref = hf(**kw).logits[0].numpy()
      gen = hf.generate(**kw, do_sample=False, max_new_tokens=5)[0, n:].numpy()
    assert np.abs(ref - logits[i, :n]).max() <= 1e-4 * max(1.0, np.abs(ref).max()), i
    eos = list(gen).index(pipe.cfg.eos_token_id) + 1 if pipe.cfg.eos_token_id in gen else len(gen)
    gen[eos:] = pipe.cfg.pad_token_id   # ours stops each example at its EOS (<|im_end|>) and pads
    np.testing.assert_array_equal(gen, tokens[i], err_msg=f"example {i}")
    cont = pipe.tokenizer.encode_continuation(batch.texts[i], [" a cat<|im_end|>", " red<|im_end|>",
                                                               " two<|im_end|>"][i], 864)
    whole = torch.cat([inp, torch.from_numpy(np.asarray(cont))[None].long()], dim=1)
    with torch.no_grad():
      out = hf(**{**kw, "input_ids": whole, "attention_mask": torch.ones_like(whole),
                  "mm_token_type_ids": (whole == pipe.cfg.image_token_id).int()}).logits[0]
    logp = torch.log_softmax(out[n - 1:-1].double(), -1).numpy()
    np.testing.assert_allclose(scores.logprob[i], logp[np.arange(len(cont)), cont].sum(), rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="one batch holds images of one shape"):
    pipe.prepare([photos["chelsea"], photos["astronaut"]], questions[:2])


@pytest.mark.slow   # a whole job (the full tier)
def test_eval_runs_the_benchmarks_on_qwen(qwen_ckpt, tmp_path):
  """eval.py's job on a Qwen2.5-VL checkpoint: generated and multiple-choice benchmarks whose images
  fall in several grid buckets, every question answered and scored, in vanilla and Blink-interp."""
  from blink_jax.eval import runner
  from configs import eval as eval_config
  from train_fixtures import set_fields
  c = set_fields(eval_config.get_config(), {
      "model.hf_checkpoint": str(qwen_ckpt), "modes": "vanilla,interp", "benchmarks": "pope,vstar",
      "blink.first_scan_layer": 1, "blink.last_scan_layer": 2, "blink.tau_exp": 0.02, "blink.tau_drop": 0.0,
      "model.preprocessing": "8x8,8x12,12x8",   # small buckets: a quick run, still several of them
      "batch_size": 8, "max_new_tokens": 3, "token_sr": "", "output_dir": str(tmp_path / "out"),
      "prompt_buckets": "256"})
  results = runner.evaluate(c)
  for name in ("pope", "vstar"):
    for mode in ("vanilla", "interp"):
      assert results[name][mode]["answered"] == results[name]["questions"] > 0, (name, mode)
      assert results[name][mode]["scores"], (name, mode)
  assert results["pope"]["interp"]["questions_expanded"] > 0


@pytest.mark.parametrize("scheme", ["parent", pytest.param("fractional", marks=pytest.mark.slow)])
def test_blink_on_qwen_reduces_to_vanilla_and_interp_and_batches_exactly(qwen_ckpt, scheme):
  """Blink over Qwen2.5-VL's non-square merged grid with multimodal-RoPE SR positions (the default
  `parent` scheme; `fractional` in the full tier): with no expansion it is vanilla; untrained TokenSR is
  interp; expansions change the answer's logits; each example's result is the same batched as alone; a
  grid that p does not divide is named."""
  from blink_jax.blink.config import defaults_for
  pipe = Pipeline.from_hf(qwen_ckpt, preprocessing="8x12,12x8,8x8", buckets=(128, 256, 384))
  blink = dataclasses.replace(defaults_for(None, pipe.cfg.text.num_layers), tau_exp=0.01, tau_drop=0.0,
                              max_regions=2, position_ids=scheme)
  assert (blink.first_scan_layer, blink.last_scan_layer, blink.region_size) == (1, 2, 4)
  photos = hf_fixtures.sample_photos()
  images, questions = [photos["chelsea"], photos["coffee"]], ["what is in this image ?", "describe it"]
  p = pipe.with_blink(blink)
  batch = p.prepare(images, questions)
  assert batch.pixels.shape[1:3] == (8 * 28, 12 * 28)
  vanilla = np.asarray(p.logits(batch))
  interp = p.blink_forward(batch, mode="interp", trace=True)
  assert (np.asarray(interp.expansions) > 0).all()
  assert np.asarray(interp.trace.saliency).shape[2:] == (8, 12)
  tokensr = p.blink_forward(batch, mode="tokensr")
  np.testing.assert_array_equal(np.asarray(tokensr.logits), np.asarray(interp.logits))
  none = p.with_blink(dataclasses.replace(p.blink, tau_exp=1.0)).blink_forward(batch, mode="interp")
  for i, n in enumerate(batch.lengths):
    np.testing.assert_allclose(np.asarray(none.logits)[i, :n], vanilla[i, :n], atol=2e-5, rtol=1e-5)
    assert np.abs(np.asarray(interp.logits)[i, n - 1] - vanilla[i, n - 1]).max() > 1e-3
  together = p.generate_tokens(batch, 4, mode="interp")
  for i in range(2):
    alone = p.generate_tokens(p.prepare(images[i:i + 1], questions[i:i + 1]), 4, mode="interp")
    np.testing.assert_array_equal(alone[0], together[i])
  odd = Pipeline.from_hf(qwen_ckpt, preprocessing="6x9", buckets=(128, 256)).with_blink(blink)
  with pytest.raises(ValueError, match=r"region_size=4 must divide both sides of the 6x9 visual grid"):
    odd.generate_tokens(odd.prepare(images[:1], questions[:1]), 2, mode="interp")


@pytest.mark.slow   # the adapter's checks (test_lmms_eval_adapter.py) on the second family
def test_lmms_eval_adapter_on_qwen_groups_by_bucket_and_equals_the_pipeline(qwen_ckpt):
  from lmms_eval.api.instance import Instance, unwrap_generation_output
  from lmms_eval.models import get_model
  from PIL import Image
  photos = hf_fixtures.sample_photos()
  docs = [{"image": Image.fromarray(photos[k]), "question": q} for k, q in
          [("chelsea", "what is in this image ?"), ("astronaut", "describe it"), ("coffee", "how many cat are there ?")]]
  m = get_model("blink_jax").create_from_arg_string(f"checkpoint={qwen_ckpt},mode=vanilla,preprocessing=8x12;8x8",
                                                    {"batch_size": 8})
  m.task_dict = {"toy": {"test": docs}}
  pipe = m.pipe
  assert len({pipe.grid_of(d["image"]) for d in docs}) == 2   # 3:2 and 1:1: two buckets, two batches
  reqs = [Instance("generate_until", (d["question"], {"max_new_tokens": 3, "until": []}, lambda doc: [doc["image"]],
                                      i, "toy", "test"), idx=0, metadata={"task": "toy", "doc_id": i, "repeats": 1})
          for i, d in enumerate(docs)]
  out = m.generate_until(reqs)
  alone = [pipe.prepare([d["image"]] * 8, [d["question"]] * 8) for d in docs]
  for batch, text in zip(alone, out):
    assert text == pipe.generate(batch, 3)[0]
  reqs = [Instance("loglikelihood", (d["question"], "a cat", lambda doc: [doc["image"]], i, "toy", "test"), idx=0,
                   metadata={"task": "toy", "doc_id": i, "repeats": 1}) for i, d in enumerate(docs)]
  scores = [unwrap_generation_output(r)[0] for r in m.loglikelihood(reqs)]   # as lmms-eval reads them
  for batch, (loss, _) in zip(alone, scores):
    np.testing.assert_allclose(-loss, pipe.loglikelihood(batch, ["a cat"] * 8).logprob[0], rtol=1e-5, atol=1e-5)


@pytest.mark.slow   # a whole job (the full tier)
def test_visualize_on_qwen_draws_the_bucket_grid(qwen_ckpt, tmp_path):
  from PIL import Image
  from blink_jax.visualize_job import run
  photo = tmp_path / "rocket.png"
  Image.fromarray(hf_fixtures.sample_photos()["rocket"]).save(photo)   # 427 x 640: the 24 x 36 bucket
  out = tmp_path / "blink.png"
  answers = run(checkpoint=str(qwen_ckpt), image=str(photo), question="what is in this image ?", out=str(out),
                token_sr=None, modes=["vanilla", "interp"], max_new_tokens=3, dtype="float32",
                blink_overrides=["tau_exp=0.02", "tau_drop=0.0"])
  assert set(answers) == {"vanilla", "interp"}
  img = Image.open(out)
  assert img.size[0] > 3 * 224 and np.asarray(img).std() > 10
