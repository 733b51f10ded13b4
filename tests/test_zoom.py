"""Attention-guided zoom (mode "zoom") equals a literal reference written here as ViCrop's code runs it:
transformers' LLaVA and Qwen2.5-VL one example at a time with eager attention (`output_attentions=True`),
the box searched by loops over the attention map, the crop cut with PIL and given as a second image.
Same boxes, same logits, same greedy tokens; the batched pipeline equals itself one example at a time."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LlavaForConditionalGeneration, Qwen2_5_VLForConditionalGeneration

import hf_fixtures
from blink_jax.data.image_preprocessing import CLIP_MEAN
from blink_jax.data.qwen_preprocessing import preprocess_qwen_image
from blink_jax.data.prompt import vicuna_v1_prompt
from blink_jax.eval import runner
from blink_jax.inference import zoom as zoom_lib
from blink_jax.inference.pipeline import Pipeline
from blink_jax.testing import hf_patches
from test_eval import _config as eval_config

BUCKETS = (64, 128, 256)
LAYER, BOX = 1, 0.5
QUESTIONS = ["what is in this image ?", "what color is the cat ?", "how many are there on the left ?"]


def _reference_box(attention: np.ndarray, side: int | tuple[int, int]) -> tuple[int, int, int, int]:
  """The window of side (rows, columns) of the map with the largest sum, the first on ties."""
  h, w = (side, side) if isinstance(side, int) else side
  best, where = -1.0, None
  for r in range(attention.shape[0] - h + 1):
    for c in range(attention.shape[1] - w + 1):
      total = float(attention[r:r + h, c:c + w].sum())
      if total > best + 1e-12:
        best, where = total, (r, c, r + h, c + w)
  return where


def _reference_crop(image: np.ndarray, box, grid: int) -> Image.Image:
  """LLaVA's expand2square, then the box's share of the square, at the photo's own resolution."""
  img = Image.fromarray(image)
  side = max(img.size)
  square = Image.new("RGB", (side, side), tuple(int(m * 255) for m in CLIP_MEAN))
  square.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
  r0, c0, r1, c1 = box
  return square.crop((round(c0 * side / grid), round(r0 * side / grid), round(c1 * side / grid),
                      round(r1 * side / grid)))


def _attention(hf, enc, layer: int, image_token_id: int) -> np.ndarray:
  """The last token's attention at `layer` to the image tokens, heads averaged (ViCrop's map)."""
  with torch.no_grad():
    att = hf(**enc, output_attentions=True).attentions[layer][0, :, -1].mean(0).numpy()
  return att[(enc["input_ids"][0] == image_token_id).numpy()]


@pytest.fixture(scope="module")
def pipe(gqa_ckpt):
  return Pipeline.from_hf(gqa_ckpt, buckets=BUCKETS).with_zoom(zoom_lib.ZoomConfig(layer=LAYER, box=BOX))


def test_zoom_equals_vicrop_style_reference_one_example_at_a_time(gqa_ckpt, pipe):
  hf = LlavaForConditionalGeneration.from_pretrained(gqa_ckpt, dtype=torch.float32,
                                                     attn_implementation="eager").eval()
  processor = hf_fixtures.hf_processor(hf_fixtures.build_tokenizer(), pipe.cfg.vision.image_size, "pad")
  grid, image_token = pipe.cfg.vision.grid, pipe.cfg.image_token_id
  side = round(BOX * grid)
  photos = hf_fixtures.sample_photos()
  images = [photos["chelsea"], photos["rocket"], photos["coffee"]]
  batch = pipe.prepare(images, QUESTIONS)
  boxes = pipe.zoom_boxes(batch)
  relative = pipe.with_zoom(zoom_lib.ZoomConfig(layer=LAYER, box=BOX, relative=True)).zoom_boxes(batch)
  zoomed = pipe.zoomed(batch, boxes)
  logits = np.asarray(pipe.logits(zoomed))
  tokens = pipe.generate_tokens(batch, max_new_tokens=6, mode="zoom")
  for i, (image, question) in enumerate(zip(images, QUESTIONS)):
    enc = processor(images=[image], text=[vicuna_v1_prompt(question)], return_tensors="pt")
    attention = _attention(hf, enc, LAYER, image_token).reshape(grid, grid)
    box = _reference_box(attention, side)
    assert tuple(boxes[i]) == box, f"example {i}"
    generic = processor(images=[image], text=[vicuna_v1_prompt(zoom_lib.GENERIC_QUESTION)], return_tensors="pt")
    ratio = attention / _attention(hf, generic, LAYER, image_token).reshape(grid, grid)
    assert tuple(relative[i]) == _reference_box(ratio, side), f"example {i} (relative)"
    two = processor(images=[image, _reference_crop(image, box, grid)],
                    text=[vicuna_v1_prompt(question).replace("<image>", "<image><image>")], return_tensors="pt")
    n = int(zoomed.lengths[i])
    np.testing.assert_array_equal(two["input_ids"][0].numpy(), zoomed.ids[i, :n])
    with torch.no_grad():
      ref = hf(**two).logits[0].numpy()
      gen = hf.generate(**two, do_sample=False, max_new_tokens=6, min_new_tokens=6)[0, n:].numpy()
    assert np.abs(ref - logits[i, :n]).max() <= 1e-4, f"example {i}"
    np.testing.assert_array_equal(gen, tokens[i], err_msg=f"example {i}")


def test_zoom_on_qwen_equals_transformers_eager_one_example_at_a_time(qwen_ckpt):
  """The crop of a Qwen2.5-VL batch is a second image of the batch's grid bucket, in its own
  <|vision_start|> block: transformers places its multimodal RoPE positions from the ids."""
  hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen_ckpt, dtype=torch.float32,
                                                          attn_implementation="eager").eval()
  # The stacked layer layout (TPUs'; CPU's default is per_layer, as in the LLaVA test).
  pipe = Pipeline.from_hf(qwen_ckpt, preprocessing="8x12", buckets=(256, 512), layer_layout="stacked").with_zoom(
      zoom_lib.ZoomConfig(layer=LAYER, box=BOX))
  photos = hf_fixtures.sample_photos()
  images = [photos["chelsea"], photos["rocket"]]          # resized to the one bucket named, 8 x 12
  batch = pipe.prepare(images, QUESTIONS[:2])
  boxes = pipe.zoom_boxes(batch)
  zoomed = pipe.zoomed(batch, boxes)
  logits = np.asarray(pipe.logits(zoomed))
  # The mode's own pass 2 ([crop ; question] after pass 1's cache), scoring the next token.
  nxt = [[int(logits[i, zoomed.lengths[i] - 1].argmax())] for i in range(2)]
  scores = pipe.loglikelihood(batch, nxt, mode="zoom")
  image_token, thw = pipe.cfg.image_token_id, [1, 16, 24]

  def inputs(ids, pixels):
    ids = torch.from_numpy(ids)[None].long()
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), image_grid_thw=torch.tensor([thw] * len(pixels)),
                pixel_values=torch.from_numpy(np.concatenate([hf_patches(p) for p in pixels])),
                mm_token_type_ids=(ids == image_token).int())

  for i, image in enumerate(images):
    attention = _attention(hf, inputs(batch.ids[i, :batch.lengths[i]], [batch.pixels[i]]), LAYER, image_token)
    box = _reference_box(attention.reshape(8, 12), (4, 6))
    assert tuple(boxes[i]) == box, f"example {i}"
    h, w = image.shape[:2]
    r0, c0, r1, c1 = box
    crop = Image.fromarray(image).crop((round(c0 * w / 12), round(r0 * h / 8), round(c1 * w / 12), round(r1 * h / 8)))
    n = int(zoomed.lengths[i])
    assert (zoomed.ids[i, :n] == pipe.cfg.vision_start_token_id).sum() == 2
    with torch.no_grad():
      ref = hf(**inputs(zoomed.ids[i, :n], [batch.pixels[i], preprocess_qwen_image(crop, ((8, 12),))])).logits[0]
    assert np.abs(ref.numpy() - logits[i, :n]).max() <= 1e-4 * max(1.0, float(ref.abs().max())), f"example {i}"
    assert scores.greedy[i]
    np.testing.assert_allclose(scores.logprob[i], torch.log_softmax(ref[-1], -1)[nxt[i][0]].item(), atol=1e-4)


def test_batched_zoom_equals_one_example_at_a_time(pipe):
  photos = list(hf_fixtures.sample_photos().values())[:3]
  batch = pipe.prepare(photos, QUESTIONS)
  together = pipe.loglikelihood(batch, [" yes</s>"] * 3, mode="zoom")
  boxes = pipe.zoom_boxes(batch)
  for i in range(3):
    one = pipe.prepare(photos[i:i + 1], QUESTIONS[i:i + 1])
    np.testing.assert_array_equal(pipe.zoom_boxes(one)[0], boxes[i])
    alone = pipe.loglikelihood(one, [" yes</s>"], mode="zoom")
    np.testing.assert_allclose(alone.logprob[0], together.logprob[i], atol=1e-4)


def test_boxes_follow_the_attention_and_stay_inside_the_image():
  attention = np.zeros((2, 6, 6))
  attention[0, 5, 5] = 1.0          # a corner: the window is clipped inside the grid
  attention[1, 2:4, 1:3] = 1.0
  np.testing.assert_array_equal(zoom_lib.choose_boxes(attention, (3, 3)), [[3, 3, 6, 6], [1, 0, 4, 3]])
  assert zoom_lib.box_side(zoom_lib.ZoomConfig(box=0.01), (6, 6)) == (1, 1)
  with pytest.raises(ValueError, match="zoom.layer=9"):
    zoom_lib.ZoomConfig(layer=9).resolved(4)


@pytest.mark.slow   # two evaluations (the full tier)
def test_eval_runs_zoom_beside_vanilla_and_records_its_settings(tmp_path):
  config = eval_config(tmp_path, benchmarks="fine_detail", modes="vanilla,zoom", diagnostics=True,
                       **{"zoom.box": 0.25})
  results = runner.evaluate(config)["fine_detail"]
  assert results["zoom"]["answered"] == results["vanilla"]["answered"] > 0
  assert set(results["paired"]) == {"zoom"}
  record = json.loads((tmp_path / "out" / "fine_detail" / "zoom.run.json").read_text())
  assert record["zoom"]["box"] == 0.25 and "blink" not in record
  found = results["zoom"]["diagnostics"]                     # 2 x 2 crops of the 8 x 8 grid
  assert found["questions"] == 8 and found["chance"] == 4 / 64 and 0 <= found["crop_holds_target"] <= 1
  oracle = runner.evaluate(eval_config(tmp_path / "oracle", benchmarks="fine_detail", modes="zoom", diagnostics=True,
                                       **{"zoom.box": 0.25, "zoom.box_choice": "oracle"}))
  assert oracle["fine_detail"]["zoom"]["diagnostics"]["crop_holds_target"] == 1.0
  with pytest.raises(ValueError, match="config.zoom: unknown fields \\['boxx'\\]"):
    runner.evaluate(eval_config(tmp_path / "typo", benchmarks="fine_detail", modes="zoom", **{"zoom.boxx": 1}))


def test_oracle_zoom_centres_the_crop_on_the_target(pipe):
  photos = list(hf_fixtures.sample_photos().values())[:2]
  batch = pipe.prepare(photos, QUESTIONS[:2])
  oracle = pipe.with_zoom(zoom_lib.ZoomConfig(layer=LAYER, box=BOX, box_choice="oracle"))
  h, w = photos[0].shape[:2]
  boxes = oracle.zoom_boxes(batch, targets=[[w - 4, h - 4, w, h], None])
  np.testing.assert_array_equal(boxes[0], [3, 3, 6, 6])        # the bottom-right corner, kept inside
  np.testing.assert_array_equal(boxes[1], pipe.zoom_boxes(batch)[1])   # no target: the attention's
  with pytest.raises(ValueError, match="targets="):
    oracle.generate(batch, 2, mode="zoom")
