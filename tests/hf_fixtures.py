"""Tiny random Hugging Face LLaVA checkpoints (transformers + torch, CPU) for parity tests."""

from __future__ import annotations

import pathlib
import re

import numpy as np

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
IMAGE_TOKEN = "<image>"
WORDS = (
    "a chat between curious user and an artificial intelligence assistant the gives helpful detailed "
    "polite answers to user's questions USER ASSISTANT what is in this image describe it color of "
    "cat dog sky red blue green how many are there yes no one two three left right up down picture "
    "photo object shows on under near far big small"
).split()


def build_tokenizer(vocab_extra: int = 0):
  """A WordLevel tokenizer with Llama-like special tokens, BOS added by its post-processor."""
  from tokenizers import Tokenizer, models, pre_tokenizers, processors, decoders, AddedToken
  words = sorted(set(WORDS) | set(":.,?'\n!") | {f"w{i}" for i in range(vocab_extra)})
  vocab = {t: i for i, t in enumerate(SPECIALS)}
  for w in words:
    vocab.setdefault(w, len(vocab))
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.decoder = decoders.WordPiece(prefix="##")
  tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIALS])
  tok.add_special_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)])
  tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
  return tok


def hf_processor(tok, image_size: int, mode: str):
  from transformers import LlavaImageProcessorPil, LlavaProcessor, PreTrainedTokenizerFast
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                 unk_token="<unk>", pad_token="<pad>")
  fast.image_token = IMAGE_TOKEN
  fast.image_token_id = tok.token_to_id(IMAGE_TOKEN)
  image_processor = LlavaImageProcessorPil(
      size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
      do_pad=(mode == "pad"))
  return LlavaProcessor(image_processor=image_processor, tokenizer=fast, patch_size=14,
                        vision_feature_select_strategy="default", num_additional_image_tokens=1)


def build_checkpoint(path: pathlib.Path, *, image_size: int = 56, kv_heads: int = 4,
                     text_layers: int = 3, vision_layers: int = 3, seed: int = 0,
                     max_shard_size: str | None = "200KB", lm_head_scale: float = 8.0):
  """Saves a tiny random LlavaForConditionalGeneration + tokenizer.json under `path`; returns the model."""
  from blink_jax import testing
  tok = build_tokenizer()
  assert tok.get_vocab_size() <= 128
  cfg = testing.llava_hf_config(
      image_token_id=tok.token_to_id(IMAGE_TOKEN), pad_token_id=3,
      text=dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=text_layers,
                num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=2048,
                rms_norm_eps=1e-5, initializer_range=0.1, rope_theta=10000.0),
      vision=dict(image_size=image_size, hidden_size=32, intermediate_size=48, num_hidden_layers=vision_layers,
                  num_attention_heads=4, projection_dim=32))
  return testing.save_random_model(path, "LlavaForConditionalGeneration", cfg, tok, seed=seed,
                                   lm_head_scale=lm_head_scale, max_shard_size=max_shard_size)


def long_question(n_words: int, seed: int = 0) -> str:
  rng = np.random.default_rng(seed)
  return " ".join(rng.choice(WORDS[20:], n_words)) + " ?"


def sample_photos() -> dict[str, np.ndarray]:
  """Real photographs that scikit-image ships (odd aspect ratios included)."""
  from skimage import data
  return {"chelsea": data.chelsea(), "coffee": data.coffee(), "rocket": data.rocket(),
          "astronaut": data.astronaut()}


def safetensor_keys(path: pathlib.Path) -> list[str]:
  from safetensors import safe_open
  keys = []
  for f in sorted(path.glob("*.safetensors")):
    with safe_open(str(f), "pt") as h:
      keys += list(h.keys())
  return sorted(keys)


__all__ = [n for n in dir() if not re.match("_", n)]
