"""The tokenizer wrapper: byte-level ids stable across processes, round trips, placeholder errors."""

import os
import subprocess
import sys

import pytest

from blink_jax.data.prompt import vicuna_v1_prompt
from blink_jax.data.tokenizer import Tokenizer, byte_level_tokenizer

PROBE = ("from blink_jax.data.tokenizer import byte_level_tokenizer;"
         "print(byte_level_tokenizer(511).encode('USER: <image>\\n这是什么? ASSISTANT:'))")


def test_byte_level_ids_do_not_depend_on_the_process_hash_seed():
  outs = {subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")}
  assert len(outs) == 1


def test_byte_level_round_trip_and_image_expansion():
  tok = byte_level_tokenizer(511)
  ids = tok.encode_prompt("USER: <image>\n这是什么? ASSISTANT:", 4)
  assert ids[0] == 1 and list(ids).count(511) == 4
  assert tok.decode(ids) == "USER: \n这是什么? ASSISTANT:"
  with pytest.raises(ValueError, match="2 '<image>' placeholders; expected exactly 1"):
    tok.encode_prompt("<image> and <image>", 4)
  with pytest.raises(ValueError, match="0 '<image>' placeholders"):
    tok.encode_prompt("no image here", 4)


def _llama_like_tokenizer(resaved_by_transformers_5: bool):
  """A SentencePiece-style BPE tokenizer.json (byte fallback, "▁" for spaces), as the llava-hf hub
  file has it (normalizer prepends "▁" to every text piece) or as transformers 5.x re-saves it
  (Metaspace pre-tokenizer, prepend_scheme="first")."""
  from tokenizers import AddedToken, Tokenizer as Backend, decoders, models, normalizers, pre_tokenizers
  from tokenizers import processors
  vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
  vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
  for ch in "▁" + "".join(chr(c) for c in range(33, 127)):
    vocab.setdefault(ch, len(vocab))
  tok = Backend(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True, fuse_unk=True))
  if resaved_by_transformers_5:
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
  else:
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
  tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                   decoders.Strip(" ", 1, 0)])
  tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
  tok.add_special_tokens([AddedToken("<image>", special=True, normalized=False)])
  return Tokenizer(backend=tok)


def _tokenizer_image_token(tok, prompt, n):
  """LLaVA-1.5's llava.mm_utils.tokenizer_image_token, transcribed (image index expanded to n)."""
  chunks = [tok.encode(c) for c in prompt.split("<image>")]
  offset = 1 if chunks[0] and chunks[0][0] == 1 else 0
  ids = chunks[0][:]
  for c in chunks[1:]:
    ids += [tok.image_token_id] * n + c[offset:]
  return ids


def test_prompt_ids_do_not_depend_on_how_the_tokenizer_json_was_saved():
  hub, resaved = _llama_like_tokenizer(False), _llama_like_tokenizer(True)
  for question in ("What is in the image?", "Describe it.\nBe brief.", "数字是多少?"):
    prompt = vicuna_v1_prompt(question)
    reference = _tokenizer_image_token(hub, prompt, 4)
    after_image = reference[reference.index(hub.image_token_id) + 4]
    assert after_image == hub._tok.token_to_id("▁")          # what LLaVA-1.5 saw after the image
    for tok in (hub, resaved):
      assert tok.encode_prompt(prompt, 4).tolist() == reference
    # what encoding the whole prompt gives with the re-saved file: the "▁" is gone
    whole = resaved.encode(prompt)
    i = whole.index(resaved.image_token_id)
    assert whole[i + 1] != after_image
