"""Tiny random Hugging Face Qwen2.5-VL checkpoints (transformers + torch, CPU) and transformers'
processor for them, for parity tests."""

from __future__ import annotations

import pathlib

import numpy as np

import hf_fixtures

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]
# The hub's chat_template.json of Qwen2-VL / Qwen2.5-VL (Instruct).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}")


def build_tokenizer():
  """A WordLevel tokenizer with Qwen2.5-VL's special tokens and no BOS (as Qwen's)."""
  from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
  words = sorted(set(hf_fixtures.WORDS) | set(":.,?'\n!") | {"system", "user", "assistant", "You", "helpful",
                                                             "assistant."})
  vocab = {t: i for i, t in enumerate(["<unk>"] + SPECIALS)}
  for w in words:
    vocab.setdefault(w, len(vocab))
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.decoder = decoders.WordPiece(prefix="##")
  tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
  return tok


def build_checkpoint(path: pathlib.Path, *, text_layers: int = 3, kv_heads: int = 2, vision_depth: int = 4,
                     tied: bool = False, seed: int = 0, max_shard_size: str | None = "300KB"):
  """Saves a tiny random Qwen2_5_VLForConditionalGeneration + tokenizer.json under `path`; returns it."""
  from blink_jax import testing
  tok = build_tokenizer()
  ids = {t: tok.token_to_id(t) for t in SPECIALS}
  cfg = testing.qwen_hf_config(vocab=160, text_layers=text_layers, kv_heads=kv_heads, vision_depth=vision_depth,
                               tied=tied, token_ids=dict(bos=ids["<|endoftext|>"], eos=ids["<|im_end|>"],
                                                         pad=ids["<|endoftext|>"], image=ids["<|image_pad|>"],
                                                         video=ids["<|video_pad|>"],
                                                         vision_start=ids["<|vision_start|>"],
                                                         vision_end=ids["<|vision_end|>"]))
  assert tok.get_vocab_size() <= 160
  return testing.save_random_model(path, "Qwen2_5_VLForConditionalGeneration", cfg, tok, seed=seed,
                                   lm_head_scale=8.0, max_shard_size=max_shard_size)


class HFProcessor:
  """What transformers' Qwen2_5_VLProcessor does for one image and one question, from its parts (the
  processor class itself needs torchvision for its video processor): the hub's chat template through
  the tokenizer's apply_chat_template, Qwen2VLImageProcessorPil, and the processor's expansion of
  `<|image_pad|>` into grid_thw.prod() / merge_size^2 copies before tokenizing."""

  def __init__(self, tok, **image_kwargs):
    from transformers import PreTrainedTokenizerFast, Qwen2VLImageProcessorPil
    self.tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                             unk_token="<unk>")
    self.tokenizer.chat_template = CHAT_TEMPLATE
    self.image_processor = Qwen2VLImageProcessorPil(**image_kwargs)

  def prompt(self, question: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

  def __call__(self, image, question: str) -> dict[str, np.ndarray]:
    enc = self.image_processor(images=[image], return_tensors="np")
    n = int(enc["image_grid_thw"][0].prod()) // self.image_processor.merge_size ** 2
    text = self.prompt(question).replace("<|image_pad|>", "<|image_pad|>" * n)
    ids = np.asarray(self.tokenizer(text)["input_ids"])[None]
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "pixel_values": enc["pixel_values"],
            "image_grid_thw": enc["image_grid_thw"]}
