"""Blink's settings (BLINK_SPEC §2-5): every choice the paper leaves open is a field here."""

from __future__ import annotations

import ast
import dataclasses
from typing import Any, Mapping, Sequence

MODES = ("vanilla", "interp", "tokensr")
POSITION_SCHEMES = ("parent", "fractional")
AFTER_SCAN = ("keep", "drop")
SALIENCY_NORMS = ("row", "visual")
REGION_CHOICES = ("saliency", "random", "oracle")
SCHEDULES = ("dynamic", "fixed")
SR_SOURCES = ("mode", "teacher")
TOKEN_SR_ARCHS = ("conv", "mlp")
# A random model's saliency is nearly uniform (rho ~ 1/16 over the tiny preset's 16 regions): the
# spec's tau_exp = 3/36 would never expand. With these thresholds Blink acts on every question of the
# embedded defaults (eval.py's config, visualize.py and Pipeline.from_preset's demo).
RANDOM_MODEL_THRESHOLDS = dict(tau_exp=0.05, tau_drop=0.025)


@dataclasses.dataclass(frozen=True)
class BlinkConfig:
  mode: str = "tokensr"
  first_scan_layer: int = 12        # 0-based decoder layer index, inclusive
  last_scan_layer: int = 18         # inclusive
  region_size: int = 4              # p: regions are p x p visual tokens
  tau_exp: float = 3 / 36           # expand when rho = max region share exceeds this
  tau_drop: float = 1.5 / 36        # drop an expanded region whose share falls below this
  max_regions: int = 1              # K capacity blocks of 4p^2 SR slots
  position_ids: str = "parent"      # SR token RoPE positions: parent's, or fractional within it
  after_scan: str = "keep"          # SR tokens live after the last scanning layer: keep | drop
  saliency_norm: str = "row"        # softmax over the whole causal row, or over visual keys only
  token_sr_channels: int = 512      # C of TokenSR
  token_sr_arch: str = "conv"       # conv: the 3x3 expansion (spec); mlp: per token (1x1), the paper's future work
  # Ablations (the paper's, section "Ablations"): which region a decision takes, and when decisions happen.
  region_choice: str = "saliency"   # saliency: the most salient; random: a random region; oracle: the
                                    # target's (given per example: the upper bound); the same trigger
  schedule: str = "dynamic"         # dynamic: DTR (tau_exp / tau_drop); fixed: re-expand the top regions at
                                    # every scanning layer, whatever rho
  sr_source: str = "mode"           # mode: the SR tokens of the mode (interpolation, TokenSR); teacher: the
                                    # region's crop re-encoded, TokenSR's distillation target (the upper bound
                                    # of any TokenSR; needs region_choice="oracle" and max_regions=1)

  @property
  def num_scan_layers(self) -> int:
    return self.last_scan_layer - self.first_scan_layer + 1

  @property
  def block_size(self) -> int:
    return 4 * self.region_size ** 2

  @property
  def num_slots(self) -> int:
    return self.max_regions * self.block_size

  def validate(self, grid: int | tuple[int, int] | None, num_layers: int) -> "BlinkConfig":
    """Checks the settings against the model: its visual grid (a side, or (rows, columns); None when
    it depends on the image, as Qwen2.5-VL's buckets: checked per batch) and decoder depth."""
    def need(ok, what):
      if not ok:
        raise ValueError(f"blink config: {what}")
    need(self.mode in MODES, f"mode={self.mode!r}; expected one of {MODES}")
    need(self.position_ids in POSITION_SCHEMES,
         f"position_ids={self.position_ids!r}; expected one of {POSITION_SCHEMES}")
    need(self.after_scan in AFTER_SCAN, f"after_scan={self.after_scan!r}; expected one of {AFTER_SCAN}")
    need(self.saliency_norm in SALIENCY_NORMS,
         f"saliency_norm={self.saliency_norm!r}; expected one of {SALIENCY_NORMS}")
    need(0 <= self.first_scan_layer <= self.last_scan_layer < num_layers,
         f"scan layers {self.first_scan_layer}..{self.last_scan_layer} must lie in 0..{num_layers - 1}")
    need(self.region_size >= 1, f"region_size={self.region_size} must be >= 1")
    if grid is not None:
      rows, cols = as_grid(grid)
      need(rows % self.region_size == 0 and cols % self.region_size == 0,
           f"region_size={self.region_size} must divide both sides of the {rows}x{cols} visual grid")
    need(self.max_regions >= 1, f"max_regions={self.max_regions} must be >= 1")
    need(0.0 <= self.tau_drop <= self.tau_exp <= 1.0,
         f"thresholds need 0 <= tau_drop ({self.tau_drop}) <= tau_exp ({self.tau_exp}) <= 1")
    need(self.token_sr_channels >= 1, "token_sr_channels must be >= 1")
    for field, known in (("token_sr_arch", TOKEN_SR_ARCHS), ("region_choice", REGION_CHOICES),
                         ("schedule", SCHEDULES), ("sr_source", SR_SOURCES)):
      need(getattr(self, field) in known, f"{field}={getattr(self, field)!r}; expected one of {known}")
    need(self.sr_source != "teacher" or (self.region_choice == "oracle" and self.max_regions == 1),
         f"sr_source='teacher' re-encodes the target's region: it needs region_choice='oracle' (not "
         f"{self.region_choice!r}) and max_regions=1 (not {self.max_regions})")
    return self


def as_grid(grid: int | tuple[int, int]) -> tuple[int, int]:
  """(rows, columns) of a visual grid given as its side (LLaVA's square grid) or as the pair."""
  return (grid, grid) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))


def defaults_for(grid: int | tuple[int, int] | None, num_layers: int) -> BlinkConfig:
  """The spec's defaults carried to another model: scanning layers at the same relative depth as
  12..18 of 32 (15..22 of LLaVA-1.5-13B's 40; 10..16 of Qwen2.5-VL-7B's 28), and p = 4, or the
  largest size <= 4 dividing both sides of the grid (None: a grid per image, as Qwen2.5-VL's
  buckets, whose sides are multiples of 4). For LLaVA-1.5-7B (32 layers, 24x24) this is
  BlinkConfig() exactly."""
  spec = BlinkConfig()
  first = round(spec.first_scan_layer * num_layers / 32)
  last = max(first, min(num_layers - 1, round(spec.last_scan_layer * num_layers / 32)))
  rows, cols = as_grid(grid) if grid is not None else (spec.region_size, spec.region_size)
  p = max(s for s in range(1, spec.region_size + 1) if rows % s == 0 and cols % s == 0)
  return dataclasses.replace(spec, first_scan_layer=first, last_scan_layer=last, region_size=p)


def from_mapping(d: Mapping[str, Any]) -> BlinkConfig:
  known = {f.name for f in dataclasses.fields(BlinkConfig)}
  unknown = sorted(set(d) - known)
  if unknown:
    raise ValueError(f"blink config: unknown fields {unknown}; known: {sorted(known)}")
  return BlinkConfig(**dict(d))


def parse_overrides(items: Sequence[str], sep: str = "=") -> dict[str, Any]:
  """["tau_exp=0.1", "max_regions=2"] -> {"tau_exp": 0.1, "max_regions": 2} (values read as Python
  literals where they parse, else kept as text); `sep` separates key and value."""
  out = {}
  for item in items:
    if sep not in item:
      raise ValueError(f"blink override {item!r}: expected key{sep}value")
    key, value = item.split(sep, 1)
    try:
      out[key.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      out[key.strip()] = value.strip()
  return out
