"""Renders what Blink did for one image and question: the answer of each mode, the saliency heat map
of every scanning layer over the image, and the regions expanded at that layer boxed."""

from __future__ import annotations

from typing import Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFont


BLOCK_COLOURS = [(255, 40, 40), (40, 220, 40), (60, 120, 255), (255, 200, 0), (255, 0, 255), (0, 230, 230)]


def _heat(values: np.ndarray) -> np.ndarray:
  """[h, w] in any range -> [h, w, 3] uint8, a blue-green-yellow-red ramp."""
  v = (values - values.min()) / max(float(values.max() - values.min()), 1e-12)
  stops = np.array([[0, 0, 130], [0, 160, 255], [40, 220, 120], [255, 230, 0], [230, 20, 20]], float)
  x = v * (len(stops) - 1)
  lo = np.clip(np.floor(x).astype(int), 0, len(stops) - 2)
  frac = (x - lo)[..., None]
  return (stops[lo] * (1 - frac) + stops[lo + 1] * frac).astype(np.uint8)


def render(view: Image.Image, trace: Mapping[str, np.ndarray], answers: Mapping[str, str], *,
           question: str, first_scan_layer: int, region_size: int, panel: int = 224) -> Image.Image:
  """One example's trace (arrays without the batch axis) -> a PNG-ready image. Panels are `panel`
  pixels wide and as tall as the visual grid's aspect ratio makes them."""
  saliency = np.asarray(trace["saliency"])            # [n, grid rows, grid columns]
  region, live = np.asarray(trace["region"]), np.asarray(trace["live"])
  expanded = np.asarray(trace["expanded"])
  n, grid_rows, grid_cols = saliency.shape
  panel_h = round(panel * grid_rows / grid_cols)
  cols = min(n, 4)
  rows = -(-n // cols)
  font = ImageFont.load_default()
  text_h = 18 * (len(answers) + 3)
  canvas = Image.new("RGB", (panel * (cols + 1) + 10 * (cols + 2), text_h + (panel_h + 24) * rows + 10), "white")
  draw = ImageDraw.Draw(canvas)
  draw.text((10, 6), "Q: " + " ".join(question.split())[:160], fill="black", font=font)   # one line
  for i, (mode, answer) in enumerate(answers.items()):
    draw.text((10, 24 + 18 * i), f"{mode}: {answer}"[:160], fill="black", font=font)
  # Legend: one colour per capacity block; a thick box is expanded at that layer, a thin one still live.
  y_legend, x_legend = 24 + 18 * len(answers), 10
  draw.text((x_legend, y_legend), "heat: saliency of the last prompt token;  boxes:", fill="black", font=font)
  x_legend += int(draw.textlength("heat: saliency of the last prompt token;  boxes:", font=font)) + 8
  for k in range(region.shape[1]):
    colour = BLOCK_COLOURS[k % len(BLOCK_COLOURS)]
    draw.rectangle([x_legend, y_legend + 1, x_legend + 10, y_legend + 11], outline=colour, width=3)
    draw.text((x_legend + 14, y_legend), f"block {k + 1}", fill="black", font=font)
    x_legend += 70
  draw.text((x_legend, y_legend), "(thick: expanded at this layer; thin: kept from before)", fill="black",
            font=font)
  base = view.resize((panel, panel_h))
  canvas.paste(base, (10, text_h))
  draw.text((10, text_h + panel_h + 4), "input (model view)", fill="black", font=font)
  cell_w, cell_h = panel / grid_cols, panel_h / grid_rows
  per_row = grid_cols // region_size

  def box(d, origin, r, colour, width):
    r0, c0 = (r // per_row) * region_size, (r % per_row) * region_size
    x0, y0 = origin[0] + c0 * cell_w, origin[1] + r0 * cell_h
    d.rectangle([x0, y0, x0 + region_size * cell_w - 1, y0 + region_size * cell_h - 1], outline=colour, width=width)

  for j in range(n):
    x = 10 + (panel + 10) * (1 + j % cols)
    y = text_h + (panel_h + 24) * (j // cols)
    heat = Image.fromarray(_heat(saliency[j])).resize((panel, panel_h), Image.Resampling.NEAREST)
    canvas.paste(Image.blend(base, heat, 0.55), (x, y))
    for k in range(region.shape[1]):
      if live[j, k]:
        box(draw, (x, y), int(region[j, k]), BLOCK_COLOURS[k % len(BLOCK_COLOURS)], 3 if expanded[j, k] else 1)
    rho = float(np.asarray(trace["rho"])[j])
    draw.text((x, y + panel_h + 4), f"layer {first_scan_layer + j}  rho={rho:.3f}", fill="black", font=font)
  return canvas
