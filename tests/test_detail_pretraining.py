"""The fine-detail experiment's encoder pretraining: each view (the image, and the windows of it that
hold the detail, at 2x and 4x) holds the detail's box where its labels say, and the labels mark exactly
the visual tokens the box overlaps, with the detail's own class."""

import numpy as np

from blink_jax.data import fine_detail
from experiments import detail_pretraining as dp


def test_every_view_holds_the_detail_where_its_token_labels_are():
  rng = np.random.default_rng(0)
  image, row = fine_detail.example(rng, "dot_colour", 112, 6)
  colour = np.array(fine_detail.COLOURS[row["answer"]])
  label = dp.CLASS[("dot_colour", row["answer"])]
  marked = {}
  for scale in dp.SCALES:
    seen, box = dp.view(image, row["box"], scale)
    x0, y0, x1, y1 = box
    assert seen.size == (112, 112) and 0 <= (x0 + x1) / 2 < 112 and 0 <= (y0 + y1) / 2 < 112
    assert x1 - x0 == 6 * scale and y1 - y0 == 6 * scale     # the box scaled with the view
    centre = np.asarray(seen, int)[int((y0 + y1) / 2), int((x0 + x1) / 2)]
    assert np.abs(centre - colour).max() <= 16, scale         # the dot is where the box says
    labels = dp.token_labels(box, label, 112, 8).reshape(8, 8)
    rows, columns = np.nonzero(labels)
    assert set(labels.flat) == {0, label}
    assert rows.min() == max(0, int(y0 // 14)) and rows.max() == min(8, int(np.ceil(y1 / 14))) - 1
    assert columns.min() == max(0, int(x0 // 14)) and columns.max() == min(8, int(np.ceil(x1 / 14))) - 1
    assert len(rows) == (rows.max() - rows.min() + 1) * (columns.max() - columns.min() + 1)
    marked[scale] = len(rows)
  assert marked[1] <= 4 and marked[4] >= 4                    # 6 px: one or two tokens a side; 24 px: two or more
  control, row = fine_detail.example(rng, "control", 112, 6)
  assert dp._label({**row, "category": "control"}) == 0        # the control's images hold no detail
