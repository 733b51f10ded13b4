"""Broken checkpoints and non-images fail with errors that name the problem."""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from blink_jax.convert.hf_llava import load_hf_llava
from blink_jax.data.image_preprocessing import preprocess_image
from blink_jax.data.tokenizer import Tokenizer


def _copy_with(src, dst, edit):
  shutil.copytree(src, dst)
  tensors = load_file(str(dst / "model.safetensors"))
  edit(tensors)
  save_file(tensors, str(dst / "model.safetensors"))
  return dst


def test_missing_tensor(gqa_ckpt, tmp_path):
  name = "language_model.model.layers.1.mlp.up_proj.weight"
  d = _copy_with(gqa_ckpt, tmp_path / "c", lambda t: t.pop(name))
  with pytest.raises(ValueError, match=r"(?s)missing tensors \(1\).*layers\.1\.mlp\.up_proj") as info:
    load_hf_llava(d)
  # the other layers' up_proj are part of the same (unbuildable) leaf, not unused tensors
  assert "unused" not in str(info.value)


def test_missing_tensor_allowed_by_dont_load(gqa_ckpt, tmp_path):
  d = _copy_with(gqa_ckpt, tmp_path / "c", lambda t: t.pop("language_model.lm_head.weight"))
  _, params = load_hf_llava(d, dont_load=[r"language_model/lm_head/.*"])
  assert "lm_head" not in params["language_model"] and "norm" in params["language_model"]


def test_extra_tensor(gqa_ckpt, tmp_path):
  d = _copy_with(gqa_ckpt, tmp_path / "c",
                 lambda t: t.__setitem__("language_model.model.layers.9.extra.weight", np.ones(3, np.float32)))
  with pytest.raises(ValueError, match=r"(?s)unused tensors \(1\).*layers\.9\.extra"):
    load_hf_llava(d)


def test_wrong_shape(gqa_ckpt, tmp_path):
  name = "multi_modal_projector.linear_2.weight"
  d = _copy_with(gqa_ckpt, tmp_path / "c", lambda t: t.__setitem__(name, t[name][:, :-1].copy()))
  with pytest.raises(ValueError, match=r"(?s)shape mismatches.*linear_2\.weight: checkpoint \(64, 63\)"):
    load_hf_llava(d)


def test_truncated_safetensors(gqa_ckpt, tmp_path):
  d = tmp_path / "c"
  shutil.copytree(gqa_ckpt, d)
  f = d / "model.safetensors"
  f.write_bytes(f.read_bytes()[:-1000])
  with pytest.raises(ValueError, match=r"model\.safetensors: corrupt safetensors.*truncated"):
    load_hf_llava(d)


def test_garbage_safetensors_header(gqa_ckpt, tmp_path):
  d = tmp_path / "c"
  shutil.copytree(gqa_ckpt, d)
  (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!rest")
  with pytest.raises(ValueError, match="header is not JSON"):
    load_hf_llava(d)


def test_not_a_llava_config(gqa_ckpt, tmp_path):
  d = tmp_path / "c"
  shutil.copytree(gqa_ckpt, d)
  cfg = json.loads((d / "config.json").read_text())
  cfg["model_type"], cfg["architectures"] = "llama", ["LlamaForCausalLM"]
  (d / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match="expected a LLaVA checkpoint"):
    load_hf_llava(d)


def test_missing_directory_and_tokenizer(tmp_path):
  with pytest.raises(FileNotFoundError, match="no config.json"):
    load_hf_llava(tmp_path)
  with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
    Tokenizer(tmp_path)


def test_non_image_inputs(tmp_path):
  text = tmp_path / "notes.txt"
  text.write_text("this is not an image")
  with pytest.raises(ValueError, match=r"notes\.txt: not a readable image"):
    preprocess_image(str(text))
  with pytest.raises(ValueError, match="file not found"):
    preprocess_image(str(tmp_path / "absent.jpg"))
  with pytest.raises(ValueError, match=r"expected uint8 or uint16 HW \(grey\) or HWC"):
    preprocess_image(np.zeros((8, 8), np.float32))
  with pytest.raises(ValueError, match="preprocessing mode"):
    preprocess_image(np.zeros((8, 8, 3), np.uint8), mode="stretch")
