"""Architecture hyper-parameters of Qwen2.5-VL (its window-attention ViT with the 2x2 patch merger, and
the Qwen2 decoder with multimodal RoPE), read from a Hugging Face `config.json`: the hub's flat layout
(`Qwen/Qwen2.5-VL-7B-Instruct`: text fields at the top level, `rope_scaling`) and transformers 5's
(`text_config`, `rope_parameters`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from blink_jax.models.model_config import ModelConfig, TextConfig, end_token_fields, pick

MIN_PIXELS = 56 * 56            # transformers' Qwen2VLImageProcessor defaults (preprocessor_config.json)
MAX_PIXELS = 28 * 28 * 1280


@dataclasses.dataclass(frozen=True)
class QwenVisionConfig:
  depth: int = 32
  hidden_size: int = 1280
  intermediate_size: int = 3420
  num_heads: int = 16
  num_channels: int = 3
  patch_size: int = 14
  temporal_patch_size: int = 2
  spatial_merge_size: int = 2
  window_size: int = 112            # pixels: windows of window_size / patch_size patches a side
  out_hidden_size: int = 3584       # the merger's output: the decoder's width
  fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
  hidden_act: str = "silu"
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-6

  def __post_init__(self):
    bad = [i for i in self.fullatt_block_indexes if not 0 <= i < self.depth]
    if bad:
      raise ValueError(f"fullatt_block_indexes {bad} outside the {self.depth} vision blocks")
    if self.window_size % (self.patch_size * self.spatial_merge_size):
      raise ValueError(f"window_size={self.window_size} must be a multiple of patch_size x spatial_merge_size "
                       f"= {self.patch_size * self.spatial_merge_size} pixels")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def unit(self) -> int:
    """Pixels a side of one merged visual token (28): image sides must be multiples of it."""
    return self.patch_size * self.spatial_merge_size

  @property
  def window(self) -> int:
    """Merged tokens a side of one attention window (4 at the default 112 px)."""
    return self.window_size // self.unit


QWEN2_5_VL_7B_TEXT = TextConfig(
    vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28, num_kv_heads=4,
    head_dim=128, rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=128000, attention_bias=True,
    mrope_section=(16, 24, 24))


@dataclasses.dataclass(frozen=True)
class Qwen2_5_VLConfig(ModelConfig):
  """The whole model (with what ModelConfig adds); defaults are Qwen2.5-VL-7B's."""
  vision: QwenVisionConfig = QwenVisionConfig()
  text: TextConfig = QWEN2_5_VL_7B_TEXT
  image_token_id: int = 151655
  video_token_id: int = 151656
  vision_start_token_id: int = 151652
  vision_end_token_id: int = 151653
  bos_token_id: int = 151643
  eos_token_id: int = 151645
  pad_token_id: int = 151643
  # The image processor's pixel bounds for preprocessing "native" (smart_resize): the checkpoint's
  # preprocessor_config.json (pixel_bounds), else transformers' Qwen2VLImageProcessor defaults.
  min_pixels: int = MIN_PIXELS
  max_pixels: int = MAX_PIXELS

  def __post_init__(self):
    super().__post_init__()
    if not 0 < self.min_pixels <= self.max_pixels:
      raise ValueError(f"min_pixels={self.min_pixels}, max_pixels={self.max_pixels}: expected 0 < min <= max")
    if self.vision.out_hidden_size != self.text.hidden_size:
      raise ValueError(f"vision out_hidden_size={self.vision.out_hidden_size} must equal the decoder's "
                       f"hidden_size={self.text.hidden_size}")
    if not self.text.mrope_section:
      raise ValueError("Qwen2.5-VL's decoder needs mrope_section (multimodal RoPE)")


def pixel_bounds(processor: Mapping[str, Any]) -> dict[str, int]:
  """{min_pixels, max_pixels} of a preprocessor_config.json (its top-level fields, or transformers 5's
  size.shortest_edge / longest_edge, which hold pixel counts for this processor); {} without them."""
  size = processor.get("size") or {}
  out = {"min_pixels": processor.get("min_pixels", size.get("shortest_edge")),
         "max_pixels": processor.get("max_pixels", size.get("longest_edge"))}
  return {k: int(v) for k, v in out.items() if v is not None}


def from_hf_config(hf: Mapping[str, Any], where: str = "config.json", generation: Mapping[str, Any] | None = None,
                   **runtime: Any) -> Qwen2_5_VLConfig:
  """Maps a `Qwen2_5_VLForConditionalGeneration` config.json (and its generation_config.json's end ids)
  onto Qwen2_5_VLConfig; `runtime` sets the fields config.json does not have (dtype, param_dtype,
  remat, attention; min_pixels, max_pixels)."""
  if hf.get("model_type") != "qwen2_5_vl":
    raise ValueError(f"{where}: model_type={hf.get('model_type')!r}; expected a Qwen2.5-VL checkpoint "
                     "(model_type 'qwen2_5_vl')")
  t = hf.get("text_config") or hf        # transformers 5 nests the decoder; the hub's files are flat
  v = hf.get("vision_config") or {}
  if pick(t, "use_sliding_window", default=False):
    raise ValueError(f"{where}: use_sliding_window=True is not supported (Qwen2.5-VL's released "
                     "checkpoints attend to the whole sequence)")
  rope = t.get("rope_parameters") or t.get("rope_scaling") or {}
  if rope.get("rope_type", rope.get("type", "default")) not in ("default", "mrope"):
    raise ValueError(f"{where}: rope type {rope.get('rope_type', rope.get('type'))!r} is not supported "
                     "(only Qwen2.5-VL's multimodal RoPE)")
  n_heads = pick(t, "num_attention_heads", default=28)
  hidden = pick(t, "hidden_size", default=3584)
  text = TextConfig(
      vocab_size=pick(t, "vocab_size", default=152064),
      hidden_size=hidden,
      intermediate_size=pick(t, "intermediate_size", default=18944),
      num_layers=pick(t, "num_hidden_layers", default=28),
      num_heads=n_heads,
      num_kv_heads=pick(t, "num_key_value_heads", default=n_heads),
      head_dim=hidden // n_heads,
      rope_theta=float(pick(rope, "rope_theta", default=pick(t, "rope_theta", default=1e6))),
      rms_norm_eps=float(pick(t, "rms_norm_eps", default=1e-6)),
      max_position_embeddings=pick(t, "max_position_embeddings", default=128000),
      tie_word_embeddings=bool(pick(hf, "tie_word_embeddings", default=pick(t, "tie_word_embeddings",
                                                                             default=False))),
      attention_bias=True,
      mrope_section=tuple(pick(rope, "mrope_section", default=(16, 24, 24))),
  )
  v_rope = v.get("rope_parameters") or {}
  vision = QwenVisionConfig(
      depth=pick(v, "depth", "num_hidden_layers", default=32),
      hidden_size=pick(v, "hidden_size", default=1280),
      intermediate_size=pick(v, "intermediate_size", default=3420),
      num_heads=pick(v, "num_heads", "num_attention_heads", default=16),
      num_channels=pick(v, "in_channels", "in_chans", default=3),
      patch_size=pick(v, "patch_size", "spatial_patch_size", default=14),
      temporal_patch_size=pick(v, "temporal_patch_size", default=2),
      spatial_merge_size=pick(v, "spatial_merge_size", default=2),
      window_size=pick(v, "window_size", default=112),
      out_hidden_size=pick(v, "out_hidden_size", default=hidden),
      fullatt_block_indexes=tuple(pick(v, "fullatt_block_indexes", default=(7, 15, 23, 31))),
      hidden_act=pick(v, "hidden_act", default="silu"),
      rope_theta=float(pick(v_rope, "rope_theta", default=10000.0)),
  )
  bos = pick(t, "bos_token_id", default=pick(hf, "bos_token_id", default=151643))
  return Qwen2_5_VLConfig(
      vision=vision, text=text,
      image_token_id=pick(hf, "image_token_id", default=151655),
      video_token_id=pick(hf, "video_token_id", default=151656),
      vision_start_token_id=pick(hf, "vision_start_token_id", default=151652),
      vision_end_token_id=pick(hf, "vision_end_token_id", default=151653),
      bos_token_id=bos,
      **end_token_fields(t, hf, generation, default=151645),
      pad_token_id=pick(hf, "pad_token_id", default=pick(t, "pad_token_id", default=bos)),
      **runtime,
  )
