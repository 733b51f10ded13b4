"""The fine-detail experiment, one command: does Blink let a model see a detail it cannot see at its
base token resolution? Every stage runs here, from random init, with the project's own jobs:

1. the synthetic task (blink_jax/data/fine_detail.py): train / validation / test splits with each
   target's box;
2. the vision encoder pretrained on the details (experiments/detail_pretraining.py): every visual
   token says which detail it holds, on the image and on 2x and 4x views of it; its readout per detail
   size and view scale on validation is the learnability curve at the encoder;
3. supervised fine-tuning of the projector and LLM on the train split (train.py's `sft` objective,
   the pretrained encoder frozen, as LLaVA's instruction tuning has it; expansion-aware: a share of the
   examples with the target's region expanded in Blink's slots) until its answer accuracy on the
   validation split plateaus; TokenSR distilled for the fine-tuned model (train.py's default
   objective) on the train images;
4. evaluation on the test split (eval.py) of vanilla, Blink-interp and Blink, Blink's ablations
   (random region, oracle region, the oracle region at every scanning layer with the mode's SR tokens or
   the teacher's, fixed schedule, no drop) and the baseline, attention-guided zoom
   (and zoom on the target's box), each with the paired 95% interval against vanilla and the link
   diagnostics (saliency hit rate per layer, expansions, TokenSR against the
   teacher);
5. all of it for several seeds of the model; the results page (`<out>/results.md` and `.json`): the
   table mode x sub-task per seed and pooled over seeds (95% bootstrap intervals), and the diagnostics.

  python -m experiments.fine_detail --out runs/fine_detail [--seeds 0,1,2] [--tiny]

Settings are chosen on the validation split, never on test; `--tiny` runs every stage for a few
steps (the tests' version).
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from absl import app, flags
from etils import epath

from blink_jax import sharding as shd
from blink_jax.data import fine_detail
from blink_jax.data.image_preprocessing import load_image
from blink_jax.eval import fine_detail as fine_detail_score
from blink_jax.eval import benchmarks, runner
from blink_jax.inference.pipeline import MODES
from blink_jax.train.loop import train
from blink_jax.visualize_job import draw
from configs import eval as eval_configs
from configs import tokensr as train_configs
from experiments import detail_pretraining

# What one run of the experiment uses (the tiny version shrinks steps and questions). The encoder is
# pretrained and the model fine-tuned on details of every size in train_detail_px, 4 to 24 px (a visual
# token is 14 px), and tested at detail_px = 6: the size at which, in a probe on validation sets
# before the run (an earlier form of the pretraining, 2x views centred on the detail), the encoder read
# the dot's colour from the image for about 65% of the questions and from a 2x view for about 95%,
# so that seeing the detail larger is what the test measures.
# The learnability curves (the encoder's readout, and the fine-tuned model's answers against zoom on
# the target's box) are measured on validation splits of each size in curve_px.
# Fine-tuning validates every validate_every steps and stops once its validation answer accuracy has
# not improved for `patience` validations, or at sft_steps. It is expansion-aware (train.sft_expand):
# for a share sft_expand of its examples (drawn per step) the target's region is expanded at every
# scanning layer with the teacher's tokens, so the LLM learns to read tokens in Blink's slots (a model
# fine-tuned only on base tokens, given them, changed many answers but gained under a point);
# sft_expand = 0 is training-free Blink's condition (--sft_expand).
FULL = dict(image_size=112, detail_px=6, train_detail_px=(4, 6, 8, 12, 16, 24), curve_px=(4, 6, 8, 12),
            per_split=(4000, 200, 200), pretrain_steps=2500, pretrain_batch=32, pretrain_lr=1e-3,
            sft_steps=1000, validate_every=100, patience=3, sft_lr=1e-3, sft_expand=0.5, distill_steps=200,
            batch=16, max_text_tokens=320)
TINY = dict(image_size=112, detail_px=6, train_detail_px=(4, 24), curve_px=(6, 24), per_split=(16, 8, 8),
            pretrain_steps=4, pretrain_batch=8, pretrain_lr=1e-3, sft_steps=4, validate_every=2, patience=1,
            sft_lr=1e-3, sft_expand=0.5, distill_steps=4, batch=8, max_text_tokens=320)
# What fine-tuning trains: the projector and the LLM (the pretrained encoder stays as it is).
SFT_TRAINABLE = "(multi_modal_projector|language_model)/.*"
# Chosen per seed on the validation split, then used by every arm on test: Blink's expansion threshold
# (on tokensr's accuracy) and zoom's crop size (on zoom's).
CHOICES = [("tokensr", "blink.tau_exp", (0.05, 0.1, 0.15)), ("zoom", "zoom.box", (0.25, 0.5))]
# The comparisons: a name, the modes eval.py runs, and the settings it changes.
ARMS = [
    ("blink", "vanilla,interp,tokensr", {}),
    ("random_region", "vanilla,tokensr", {"blink.region_choice": "random"}),
    ("oracle_region", "vanilla,interp,tokensr", {"blink.region_choice": "oracle"}),
    # The links past the trigger: the target's region expanded at every scanning layer, whatever rho,
    # with the mode's SR tokens, then with the teacher's (its crop re-encoded: TokenSR's training target,
    # what a perfect TokenSR would write)
    ("oracle_always", "vanilla,interp,tokensr", {"blink.region_choice": "oracle", "blink.schedule": "fixed"}),
    ("oracle_teacher", "vanilla,tokensr", {"blink.region_choice": "oracle", "blink.schedule": "fixed",
                                           "blink.sr_source": "teacher"}),
    ("fixed_schedule", "vanilla,tokensr", {"blink.schedule": "fixed"}),
    ("no_drop", "vanilla,tokensr", {"blink.tau_drop": 0.0}),
    ("zoom", "vanilla,zoom", {}),                                   # the baseline: attention-guided zoom
    ("oracle_zoom", "vanilla,zoom", {"zoom.box_choice": "oracle"}),  # its upper bound: the crop on the target
]


def _source(data: epath.Path, split: str) -> dict[str, str]:
  return {"format": "llava", "questions": str(data / f"{split}.jsonl"), "image_folder": str(data / "images")}


def _evaluate(model: dict, output: epath.Path, split_source: dict, modes: str, settings: dict,
              token_sr: str, batch: int, diagnostics: bool = True) -> dict:
  c = eval_configs.get_config()
  c.update_from_flattened_dict({**model, "benchmarks": "fine_detail", "modes": modes, "token_sr": token_sr,
                                "output_dir": str(output), "batch_size": batch, "diagnostics": diagnostics,
                                **{f"sources.fine_detail.{k}": v for k, v in split_source.items()}, **settings})
  return runner.evaluate(c)["fine_detail"]


def _structure() -> dict:
  """Blink's structural settings eval.py uses (scanning layers, region size, TokenSR's width): what
  fine-tuning's expansions and distillation take."""
  return {k: v for k, v in eval_configs.get_config().blink.to_dict().items()
          if k in ("first_scan_layer", "last_scan_layer", "region_size", "token_sr_channels")}


def run_seed(out: epath.Path, data: epath.Path, seed: int, s: dict) -> dict[str, Any]:
  """Every stage for one seed of the model; returns its evaluations."""
  root = out / f"seed{seed}"
  model = {"model.preset": "tiny", "seed": seed}
  clock = Stopwatch()
  pretrained = detail_pretraining.run(root / "pretrain", data, s["curve_px"], model["model.preset"], seed,
                                      s["pretrain_steps"], s["pretrain_batch"], s["pretrain_lr"])
  sft = train_configs.get_config()
  sft.update_from_flattened_dict({
      **model, "model.params": str(root / "pretrain" / "export" / "model"), "workdir": str(root / "sft"),
      "train.objective": "sft", "train.trainable": SFT_TRAINABLE,
      "train.steps": s["sft_steps"], "train.batch_size": s["batch"], "train.learning_rate": s["sft_lr"],
      "train.log_every": max(1, s["sft_steps"] // 10), "checkpoint.every": max(1, s["sft_steps"] // 3),
      "train.validate_every": s["validate_every"], "train.patience": s["patience"], "train.sft_expand": s["sft_expand"],
      "data.max_text_tokens": s["max_text_tokens"], "data.sft.benchmark": "fine_detail",
      **{f"blink.{k}": v for k, v in _structure().items()},
      "data.sft_validation.benchmark": "fine_detail",
      **{f"data.sft.{k}": v for k, v in _source(data, "train").items()},
      **{f"data.sft_validation.{k}": v for k, v in _source(data, "validation").items()}})
  clock.lap("pretraining")
  train(sft)
  clock.lap("fine-tuning")
  fitting = sft_log(root / "sft")
  stopped = json.loads((root / "sft" / "summary_process0.json").read_text())
  tuned = {**model, "model.params": str(root / "sft" / "export" / "model")}
  validation = _evaluate(tuned, root / "validation", _source(data, "validation"), "vanilla", {}, "", s["batch"])
  curve = {}
  for px in s["curve_px"]:
    found = _evaluate(tuned, root / "curve" / f"{px}px", _source(data / "curve" / f"{px}px", "validation"),
                      "vanilla,zoom", {"zoom.box_choice": "oracle"}, "", s["batch"])
    curve[px] = {"vanilla": found["vanilla"]["scores"], "oracle_zoom": found["zoom"]["scores"]}
  clock.lap("validation and learnability curves")
  distill = train_configs.get_config()
  distill.update_from_flattened_dict({
      **tuned, "workdir": str(root / "distill"), "train.steps": s["distill_steps"], "train.batch_size": s["batch"],
      "train.log_every": max(1, s["distill_steps"] // 10), "checkpoint.every": max(1, s["distill_steps"] // 3),
      "data.image_folder": str(data / "images" / "train"),
      **{f"blink.{k}": v for k, v in _structure().items()}})
  train(distill)
  clock.lap("distillation")
  export = str(root / "distill" / "export")
  chosen, tried = choose_on_validation(root, data, tuned, export, s["batch"])
  clock.lap("choices on validation")
  arms = {}
  for name, modes, settings in ARMS:
    out = root / "test" / name
    if arms:   # vanilla's answers are every arm's: the first arm's, which eval.py resumes (not recomputes)
      (out / "fine_detail").mkdir(parents=True, exist_ok=True)
      for f in ("vanilla.jsonl", "vanilla.run.json"):
        (root / "test" / ARMS[0][0] / "fine_detail" / f).copy(out / "fine_detail" / f, overwrite=True)
    arms[name] = _evaluate(tuned, out, _source(data, "test"), modes, {**chosen, **settings}, export, s["batch"])
  clock.lap("test arms")
  pictures(root, data, tuned, export)
  clock.lap("pictures")
  return {"seconds": clock.laps, "pretraining": pretrained, "validation_vanilla": validation["vanilla"]["scores"],
          "sft_log": fitting,
          "curve": curve, "chosen": chosen, "sft_stopped_at": stopped["step"], "sft_validation": stopped["validation"],
          "validation_tried": tried,
          "arms": arms}


class Stopwatch:
  """Seconds each stage took ({stage: seconds}, in order): where a seed's time goes (a stage a rerun
  found finished counts the seconds it took to find that)."""

  def __init__(self):
    self.laps: dict[str, float] = {}
    self._last = time.monotonic()

  def lap(self, stage: str):
    now = time.monotonic()
    self.laps[stage] = round(now - self._last, 1)
    self._last = now


def sft_log(workdir: epath.Path) -> dict[int, dict[str, float]]:
  """The fine-tuning's logged training metrics {step: {loss, token_accuracy}} (its TensorBoard events):
  whether the loss had levelled off by the last step."""
  import tensorflow as tf
  found: dict[int, dict[str, float]] = {}
  for events in sorted(workdir.glob("events.out.tfevents.*")):
    for record in tf.data.TFRecordDataset(str(events)):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.tag in ("loss", "token_accuracy"):
          found.setdefault(int(event.step), {})[value.tag] = round(float(tf.make_ndarray(value.tensor)), 4)
  return dict(sorted(found.items()))


def choose_on_validation(root: epath.Path, data: epath.Path, model: dict, token_sr: str,
                         batch: int) -> tuple[dict, dict]:
  """Each setting of CHOICES at the value whose mode is most accurate on the validation split (the
  first on ties): (chosen {field: value}, every value's validation accuracy)."""
  chosen, tried = {}, {}
  for mode, field, values in CHOICES:
    tried[field] = {str(v): _evaluate(model, root / "choose" / f"{field}={v}", _source(data, "validation"), mode,
                                      {field: v}, token_sr, batch, diagnostics=False)[mode]["scores"]["accuracy"]
                    for v in values}
    chosen[field] = max(values, key=lambda v: tried[field][str(v)])
  return chosen, tried


def pictures(root: epath.Path, data: epath.Path, model: dict, token_sr: str):
  """One picture per sub-task of Blink's decisions on the first test question of it (visualize.py's
  drawing: each mode's answer, the saliency per scanning layer, the expanded regions), in root."""
  c = eval_configs.get_config()
  c.update_from_flattened_dict({**model, "token_sr": token_sr, "modes": ",".join(MODES)})
  pipe = runner.build_pipeline(c, shd.Partitioner.from_config(c)).pipe
  rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
  for category in fine_detail.CATEGORIES:
    row = next(r for r in rows if r["category"] == category)
    question = benchmarks.get("fine_detail").examples({**row, "question": row["text"]}, "test")[0].question
    draw(pipe, load_image(str(data / "images" / row["image"])), question, root / f"decisions_{category}.png",
         MODES, 8, caption=f"  [truth: {row['answer']}; target box {row['box']}]")


def _replies(output: epath.Path, mode: str) -> dict[str, str]:
  """question_id -> the normalised reply, from a predictions file."""
  rows = map(json.loads, (output / "fine_detail" / f"{mode}.jsonl").read_text().splitlines())
  return {row["question_id"]: fine_detail_score.normalise(row["text"]) for row in rows}


def _correct(output: epath.Path, mode: str, answers: dict[str, tuple[str, str]]) -> dict[str, bool]:
  """question_id -> right? from a predictions file (answers: qid -> (truth, category))."""
  return {qid: reply == answers[qid][0] for qid, reply in _replies(output, mode).items()}


def changed(out: epath.Path, seeds: list[int]) -> dict[str, dict[str, float]]:
  """Per arm and non-vanilla mode: the % of test questions (pooled over seeds) whose reply differs from
  vanilla's: 0 says the mode's tokens did not move the model at all."""
  found: dict[str, dict[str, float]] = {}
  for name, modes, _ in ARMS:
    for mode in modes.split(",")[1:]:
      differ = []
      for seed in seeds:
        arm = out / f"seed{seed}" / "test" / name
        base, other = _replies(arm, "vanilla"), _replies(arm, mode)
        differ += [base[q] != other[q] for q in sorted(set(base) & set(other))]
      found.setdefault(name, {})[mode] = 100 * float(np.mean(differ)) if differ else float("nan")
  return found


def pooled(out: epath.Path, data: epath.Path, seeds: list[int], samples: int = 2000) -> dict[str, Any]:
  """Accuracy per arm x mode x sub-task pooled over seeds, with a 95% bootstrap interval over the
  (seed, question) pairs; and each Blink mode minus vanilla on the same pairs."""
  answers = {r["question_id"]: (fine_detail_score.normalise(r["answer"]), r["category"])
             for r in map(json.loads, (data / "test.jsonl").read_text().splitlines())}
  rng = np.random.default_rng(0)
  table: dict[str, Any] = {}
  for name, modes, _ in ARMS:
    right = {m: [] for m in modes.split(",")}
    category = []
    for seed in seeds:
      per_mode = {m: _correct(out / f"seed{seed}" / "test" / name, m, answers) for m in right}
      qids = sorted(set.intersection(*(set(v) for v in per_mode.values())))
      for m in right:
        right[m] += [per_mode[m][q] for q in qids]
      category += [answers[q][1] for q in qids]
    category_arr = np.asarray(category)
    arm: dict[str, Any] = {}
    for group in ("all",) + fine_detail.CATEGORIES:
      pick = np.ones(len(category_arr), bool) if group == "all" else category_arr == group
      if not pick.any():
        continue
      draws = rng.integers(0, pick.sum(), (samples, pick.sum()))
      cell = {}
      for m, values in right.items():
        v = np.asarray(values, float)[pick]
        boot = v[draws].mean(1) * 100
        cell[m] = [100 * v.mean(), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
        if m != "vanilla":
          d = (v - np.asarray(right["vanilla"], float)[pick])
          dboot = d[draws].mean(1) * 100
          cell[f"{m} - vanilla"] = [100 * d.mean(), float(np.percentile(dboot, 2.5)),
                                    float(np.percentile(dboot, 97.5))]
      arm[group] = cell
    table[name] = arm
  return table


def _fmt(cell: list[float], signed: bool) -> str:
  number = "{:+.1f}" if signed else "{:.1f}"
  return f"{number.format(cell[0])} [{number.format(cell[1])}, {number.format(cell[2])}]"


def hit_rate_plot(out: epath.Path, per_seed: dict) -> str:
  """hit_rate.png: per seed, how often the arg-max saliency region held the target at each scanning
  layer (Blink's tokensr diagnostics), against chance; returns its file name."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  first = eval_configs.get_config().blink.first_scan_layer
  fig, ax = plt.subplots(figsize=(5, 3.5))
  chance = None
  for seed, result in per_seed.items():
    d = result["arms"]["blink"]["tokensr"].get("diagnostics", {})
    if d.get("questions"):
      rates = d["hit_rate_per_layer"]
      ax.plot(range(first, first + len(rates)), rates, marker="o", label=f"seed {seed}")
      chance = d["chance"]
  if chance is not None:
    ax.axhline(chance, linestyle="--", color="grey", label="chance")
  ax.set_xlabel("scanning layer")
  ax.set_ylabel("target in the arg-max region")
  ax.set_title("Saliency hit rate (test)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(out / "hit_rate.png", dpi=120)
  plt.close(fig)
  return "hit_rate.png"


def write_page(out: epath.Path, settings: dict, seeds: list[int], per_seed: dict, table: dict,
               moved: dict[str, dict[str, float]]):
  """results.json (everything), results.md (the tables) and hit_rate.png in `out`."""
  (out / "results.json").write_text(json.dumps({"settings": settings, "seeds": seeds, "per_seed": per_seed,
                                                "pooled": table, "changed": moved}, indent=2, default=str))
  lines = ["# The fine-detail experiment", "",
           f"Settings: {json.dumps(settings)}; seeds {seeds}. Accuracy (%) on the test split pooled over "
           "seeds, with its 95% bootstrap interval; `X - vanilla`: the paired difference.", ""]
  for name, arm in table.items():
    groups = list(arm)
    columns = list(arm[groups[0]])
    lines += [f"## {name}", "", "| sub-task | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for g in groups:
      lines.append(f"| {g} | " + " | ".join(_fmt(arm[g][c], "vanilla" in c and c != "vanilla") for c in columns)
                   + " |")
    lines.append("")
  lines += ["## Replies that differ from vanilla's", "",
            "% of the test questions, pooled over seeds (0: the mode's tokens did not change a single reply).", "",
            "| arm | " + " | ".join(f"{m}" for m in ("interp", "tokensr", "zoom")) + " |", "|---|---|---|---|"]
  lines += [f"| {name} | " + " | ".join(f"{modes[m]:.1f}" if m in modes else "" for m in ("interp", "tokensr", "zoom"))
            + " |" for name, modes in moved.items()]
  lines += ["", "## Diagnostics (per seed)", "", f"![saliency hit rate per scanning layer]({hit_rate_plot(out, per_seed)})",
            "", "One test question per sub-task, Blink's decisions drawn: " + ", ".join(
                f"[{c}](seed{seeds[0]}/decisions_{c}.png)" for c in fine_detail.CATEGORIES) + ".", "",
            "| seed | arm | mode | hit rate per scanning layer (chance) | target expanded | accuracy % target "
            "expanded / not | TokenSR KL / interp KL to the teacher |",
            "|---|---|---|---|---|---|---|"]
  for seed, result in per_seed.items():
    for arm in ("blink", "oracle_region", "oracle_always", "oracle_teacher"):
      for mode in ("interp", "tokensr"):
        d = result["arms"].get(arm, {}).get(mode, {}).get("diagnostics", {})
        if d.get("questions"):
          kl = (f"{d['token_sr_kl']:.4f} / {d['interp_kl']:.4f}" if "token_sr_kl" in d else "")
          split = " / ".join("-" if d[k] is None else f"{d[k]:.0f}"
                             for k in ("accuracy_target_expanded", "accuracy_target_not_expanded"))
          lines.append(f"| {seed} | {arm} | {mode} | {d['hit_rate_per_layer']} ({d['chance']:.3f}) | "
                       f"{d['target_expanded']:.2f} | {split} | {kl} |")
  zoom = [(seed, r["arms"]["zoom"]["zoom"].get("diagnostics", {})) for seed, r in per_seed.items()]
  lines += [""] + [f"Seed {seed}: zoom's crop held the target for {100 * d['crop_holds_target']:.0f}% of the "
                   f"questions (chance {100 * d['chance']:.0f}%)." for seed, d in zoom if d.get("questions")]
  lines += ["", "## Learnability: the encoder's readout vs detail size and view scale (validation)", "",
            "Each cell: % of the questions whose detail the pretrained encoder's head reads right at the "
            "detail's tokens, the image seen whole / at 2x / at 4x (the window of a half / a quarter of its side "
            "that holds the detail).", "",
            "| seed | detail px | " + " | ".join(detail_pretraining.ANSWERS) + " |",
            "|" + "---|" * (len(detail_pretraining.ANSWERS) + 2)]
  for seed, result in per_seed.items():
    for px, by_scale in result["pretraining"]["curve"].items():
      lines.append(f"| {seed} | {px} | " + " | ".join(
          " / ".join(f"{by_scale[str(k)].get(c, float('nan')):.0f}" for k in detail_pretraining.SCALES)
          for c in detail_pretraining.ANSWERS) + " |")
  lines += ["", "## Learnability: the fine-tuned model's accuracy vs detail size (validation)", "",
            "Each cell: vanilla / zoom on the target's box (the detail seen at 2x), accuracy %.", "",
            "| seed | detail px | " + " | ".join(("all",) + fine_detail.CATEGORIES) + " |",
            "|" + "---|" * (len(fine_detail.CATEGORIES) + 3)]
  for seed, result in per_seed.items():
    for px, cell in result["curve"].items():
      lines.append(f"| {seed} | {px} | " + " | ".join(
          f"{cell['vanilla'].get(k, float('nan')):.0f} / {cell['oracle_zoom'].get(k, float('nan')):.0f}"
          for k in ("accuracy",) + tuple(f"{c}/accuracy" for c in fine_detail.CATEGORIES)) + " |")
  lines += ["", "Chosen on validation, per seed (accuracy of each value tried): " + "; ".join(
      f"{seed}: " + ", ".join(f"{field}={r['chosen'][field]} {tried}" for field, tried in r["validation_tried"].items())
      for seed, r in per_seed.items())]
  lines += ["", "The encoder's pretraining loss at each logged step, per seed: " + "; ".join(
      f"{seed}: " + ", ".join(f"{step} {loss:.3f}" for step, loss in r["pretraining"]["loss"].items())
      for seed, r in per_seed.items())]
  lines += ["", "Fine-tuning's training loss (answer tokens) at each logged step, per seed: " + "; ".join(
      f"{seed}: " + ", ".join(f"{step} {m['loss']:.3f}" for step, m in r["sft_log"].items() if "loss" in m)
      for seed, r in per_seed.items())]
  lines += ["", "Fine-tuning's validation answer accuracy (%, answered word for word) at each validation, and "
            "the step it stopped at, per seed: " + "; ".join(
                f"{seed}: " + ", ".join(f"{step} {100 * accuracy:.0f}" for step, accuracy, _ in r["sft_validation"])
                + f" (stopped at {r['sft_stopped_at']})" for seed, r in per_seed.items())]
  lines += ["", "Minutes each stage took, per seed: " + "; ".join(
      f"{seed}: " + ", ".join(f"{stage} {seconds / 60:.1f}" for stage, seconds in r.get("seconds", {}).items())
      for seed, r in per_seed.items())]
  lines += ["", "Validation accuracy of vanilla after fine-tuning, per seed: " + ", ".join(
      f"{seed}: {r['validation_vanilla'].get('accuracy', float('nan')):.1f}" for seed, r in per_seed.items()), ""]
  (out / "results.md").write_text("\n".join(lines))


def run(out: str | epath.PathLike, seeds: list[int], tiny: bool, sft_expand: float | None = None) -> dict:
  """Every stage for each seed, then the results page; sft_expand: fine-tuning's share of expanded
  examples (None: the settings')."""
  out = epath.Path(out)
  s = dict(TINY if tiny else FULL)
  if sft_expand is not None:
    s["sft_expand"] = sft_expand
  data = out / "data"
  if not (data / "test.jsonl").exists():
    train_n, validation_n, test_n = s["per_split"]
    fine_detail.write(data, image_size=s["image_size"], detail_px=s["train_detail_px"], per_split=(train_n, 0, 0))
    fine_detail.write(data, image_size=s["image_size"], detail_px=s["detail_px"],
                      per_split=(0, validation_n, test_n))
    for px in s["curve_px"]:
      fine_detail.write(data / "curve" / f"{px}px", image_size=s["image_size"], detail_px=px,
                        per_split=(0, validation_n, 0))
  per_seed = {seed: run_seed(out, data, seed, s) for seed in seeds}
  table = pooled(out, data, seeds)
  write_page(out, s, seeds, per_seed, table, changed(out, seeds))
  print(f"wrote {out / 'results.md'}")
  return table


FLAGS = flags.FLAGS


def main(_):
  run(FLAGS.out, [int(x) for x in FLAGS.seeds], FLAGS.tiny, FLAGS.sft_expand)


if __name__ == "__main__":
  flags.DEFINE_string("out", "runs/fine_detail", "Output folder (data, runs, results page).")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Model seeds; each runs every stage.")
  flags.DEFINE_bool("tiny", False, "A few steps and questions per stage (the tests' version).")
  flags.DEFINE_float("sft_expand", None, "Fine-tuning's share of examples expanded with the teacher's tokens "
                     "(default: the settings'; 0: training-free Blink's plain fine-tuning).")
  app.run(main)
