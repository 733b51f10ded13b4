"""Our Flax LLaVA equals transformers' LlavaForConditionalGeneration on the same checkpoint."""

import numpy as np
import pytest
import torch
from transformers import LlavaForConditionalGeneration

import hf_fixtures
from blink_jax.data.image_preprocessing import preprocess_image
from blink_jax.data.prompt import vicuna_v1_prompt
from blink_jax.models.llava import Llava
from blink_jax.inference.pipeline import Pipeline

BUCKETS = (64, 128, 256, 512)


def _hf(ckpt):
  return LlavaForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32).eval()


@pytest.mark.parametrize("ckpt_name,attention", [("mha_ckpt", "blocked"), ("gqa_ckpt", "blocked"),
                                                ("gqa_ckpt", "xla"), ("gqa_ckpt", "splash")])
def test_logits_and_greedy_generation_match_transformers(ckpt_name, attention, request):
  ckpt = request.getfixturevalue(ckpt_name)
  hf, pipe = _hf(ckpt), Pipeline.from_hf(ckpt, buckets=BUCKETS, attention=attention)
  size = pipe.cfg.vision.image_size
  processor = hf_fixtures.hf_processor(hf_fixtures.build_tokenizer(), size, "pad")
  photos = hf_fixtures.sample_photos()
  questions = ["what is in this image ?", "describe it", hf_fixtures.long_question(300)]
  images = [photos["chelsea"], photos["coffee"], photos["rocket"]]
  batch = pipe.prepare(images, questions)
  assert batch.lengths.max() > 300 and len(set(batch.lengths)) == 3
  logits = np.asarray(pipe.logits(batch))
  tokens = pipe.generate_tokens(batch, max_new_tokens=8)
  for i, (image, question) in enumerate(zip(images, questions)):
    enc = processor(images=[image], text=[vicuna_v1_prompt(question)], return_tensors="pt")
    n = int(batch.lengths[i])
    np.testing.assert_array_equal(enc["input_ids"][0].numpy(), batch.ids[i, :n])
    with torch.no_grad():
      ref = hf(**enc).logits[0].numpy()
      gen = hf.generate(**enc, do_sample=False, max_new_tokens=8, min_new_tokens=8)[0, n:].numpy()
    assert np.abs(ref - logits[i, :n]).max() <= 1e-4, f"example {i}"
    np.testing.assert_array_equal(gen, tokens[i], err_msg=f"example {i}")


@pytest.mark.parametrize("attention", ["blocked", "xla", "splash"])
def test_vision_features_match_transformers(gqa_ckpt, attention):
  hf, pipe = _hf(gqa_ckpt), Pipeline.from_hf(gqa_ckpt, attention=attention)
  size = pipe.cfg.vision.image_size
  pixels = np.stack([preprocess_image(p, size) for p in hf_fixtures.sample_photos().values()])
  with torch.no_grad():
    px = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    vision = hf.model.vision_tower(px, output_hidden_states=True).hidden_states[-2][:, 1:].numpy()
    projected = hf.model.get_image_features(pixel_values=px)
    projected = (projected.pooler_output if hasattr(projected, "pooler_output") else projected)
    projected = torch.stack(list(projected)).numpy() if isinstance(projected, (list, tuple)) \
        else projected.numpy()
  params = {"params": pipe.params}
  ours_vision = pipe.model.apply(params, pixels, method=lambda m, x: m.vision_tower(x))
  ours = pipe.model.apply(params, pixels, method=Llava.encode_images)
  np.testing.assert_allclose(np.asarray(ours_vision), vision, atol=1e-5)
  np.testing.assert_allclose(np.asarray(ours), projected.reshape(ours.shape), atol=1e-5)


@pytest.mark.parametrize("mode", ["pad", "crop"])
def test_pixels_match_transformers_processor(mode):
  processor = hf_fixtures.hf_processor(hf_fixtures.build_tokenizer(), 336, mode)
  for name, photo in hf_fixtures.sample_photos().items():
    ref = processor.image_processor(images=[photo], return_tensors="np")["pixel_values"][0]
    ours = preprocess_image(photo, 336, mode)
    assert ours.shape == (336, 336, 3)
    np.testing.assert_allclose(ours, ref.transpose(1, 2, 0), atol=1e-5, err_msg=name)


def test_pad_and_crop_differ_on_non_square_photos():
  photo = hf_fixtures.sample_photos()["rocket"]
  assert np.abs(preprocess_image(photo, 336, "pad") - preprocess_image(photo, 336, "crop")).max() > 0.5
