"""The checkpoint's tokenizer (`tokenizer.json`, read with the `tokenizers` library) and the expansion
of the image placeholder (LLaVA's `<image>`, Qwen2.5-VL's `<|image_pad|>`) into one token per visual
token."""

from __future__ import annotations

import os
from typing import Sequence

import fsspec
import numpy as np
import tokenizers

from blink_jax.data.prompt import IMAGE_PLACEHOLDER


class Tokenizer:

  def __init__(self, tokenizer_json: str | os.PathLike | None = None, *,
               backend: tokenizers.Tokenizer | None = None, image_placeholder: str = IMAGE_PLACEHOLDER):
    self.image_placeholder = image_placeholder
    if backend is not None:
      self._tok, self.path = backend, "<in-memory>"
      self.image_token_id = backend.token_to_id(image_placeholder)
      return
    path = str(tokenizer_json).rstrip("/")  # a file or a checkpoint directory, local or fsspec URL
    fs, fs_path = fsspec.core.url_to_fs(path)
    if fs.isdir(fs_path):
      path, fs_path = f"{path}/tokenizer.json", f"{fs_path}/tokenizer.json"
    if not fs.exists(fs_path):
      raise FileNotFoundError(f"{path}: no tokenizer.json (the checkpoint's fast-tokenizer file)")
    try:
      self._tok = tokenizers.Tokenizer.from_str(fs.cat_file(fs_path).decode("utf-8"))
    except Exception as e:  # the tokenizers library raises a bare Exception on bad JSON
      raise ValueError(f"{path}: not a valid tokenizer.json ({e})") from e
    self.path = path
    self.image_token_id = self._tok.token_to_id(image_placeholder)

  def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
    return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

  def decode(self, ids: Sequence[int]) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

  def encode_prompt(self, prompt: str, num_image_tokens: int, images: int = 1) -> np.ndarray:
    """Token ids of a prompt with its `images` image placeholders each expanded to num_image_tokens
    copies.

    As LLaVA's `tokenizer_image_token`: the text before and after `<image>` is encoded separately
    (each with the tokenizer's special tokens) and the second part's leading BOS dropped. Encoding
    the whole prompt instead would depend on how the tokenizer.json was saved: a Metaspace
    pre-tokenizer with prepend_scheme="first" (transformers 5.x) drops the "▁" that LLaVA-1.5 saw
    after the image. Qwen2.5-VL's `<|image_pad|>` is a special token that splits the text anyway
    and its tokenizer adds no BOS, so the same encoding equals its processor's (one pass over the
    prompt with the placeholder repeated).
    """
    placeholder = self.image_placeholder
    if self.image_token_id is None:
      raise ValueError(f"{self.path}: the tokenizer has no {placeholder!r} token")
    chunks = prompt.split(placeholder)
    if len(chunks) != images + 1:
      raise ValueError(f"prompt has {len(chunks) - 1} {placeholder!r} placeholders; expected exactly {images}: "
                       f"{prompt[:80]!r}")
    first, *later = (self.encode(c) for c in chunks)
    # LLaVA strips the first token of every later chunk when the first chunk starts with BOS.
    offset = 1 if first and first[:1] != self.encode(chunks[0], add_special_tokens=False)[:1] else 0
    ids = first
    for chunk in later:
      ids = ids + [self.image_token_id] * num_image_tokens + chunk[offset:]
    return np.asarray(ids, np.int32)


  def encode_continuation(self, prompt: str, continuation: str, num_image_tokens: int) -> np.ndarray:
    """The ids `continuation` adds after `prompt`: those of prompt + continuation past the prompt's
    own, as LLaVA-style scorers take them (V* Bench's vstar_bench_eval.py, lmms-eval's llava), so a
    token that the boundary merges is scored as the whole prompt would tokenize it."""
    whole = self.encode_prompt(prompt + continuation, num_image_tokens)
    return whole[len(self.encode_prompt(prompt, num_image_tokens)):]


def byte_level_tokenizer(image_token_id: int, bos_id: int = 1, eos_id: int = 2, pad_id: int = 0,
                         image_placeholder: str = IMAGE_PLACEHOLDER) -> Tokenizer:
  """A tokenizer over UTF-8 bytes (any text, no file), for the random models of the embedded
  defaults and the benches: specials at the model's ids, the 256 bytes on the ids left between 0
  and 259+."""
  from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors
  specials = {"<pad>": pad_id, "<s>": bos_id, "</s>": eos_id, image_placeholder: image_token_id}
  free = (i for i in range(1 << 20) if i not in specials.values())
  # alphabet() comes in hash order, which changes between processes: sort it for stable ids.
  vocab = {ch: next(free) for ch in sorted(pre_tokenizers.ByteLevel.alphabet())}
  vocab.update(specials)
  tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
  tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos_id)])
  return Tokenizer(backend=tok, image_placeholder=image_placeholder)
