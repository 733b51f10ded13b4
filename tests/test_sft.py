"""Supervised fine-tuning (train.objective="sft"): only the answer tokens are scored; a model fine-tuned
on examples whose answer is always the same word then generates that word (the objective is aligned
with generation, through the export eval.py loads); it trains from the sources eval.py reads."""

import json

import numpy as np
import pytest
from PIL import Image

import hf_fixtures
import train_fixtures
from blink_jax import sharding as shd
from blink_jax.data import fine_detail
from blink_jax.eval import benchmarks, runner
from blink_jax.train import sft
from blink_jax.train.loop import train
from blink_jax.train.step import train_program
from configs import tokensr as train_configs
from test_eval import _config as eval_config


def _examples(folder, answer="green", n=8):
  """A LLaVA-layout source of n photographs, each asked the same question with the same answer."""
  (folder / "images").mkdir(parents=True)
  photos = list(hf_fixtures.sample_photos().values())
  rows = []
  for i in range(n):
    Image.fromarray(photos[i % len(photos)]).save(folder / "images" / f"{i}.png")
    rows.append({"question_id": str(i), "image": f"{i}.png", "text": "What colour is it?", "answer": answer})
  (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return {"data.sft.format": "llava", "data.sft.questions": str(folder / "train.jsonl"),
          "data.sft.image_folder": str(folder / "images")}


def test_only_answer_tokens_are_targets(tmp_path):
  config = train_fixtures.tiny_config(tmp_path / "run", **{"train.objective": "sft", "train.trainable": ".*",
                                                          "data.max_text_tokens": 256, **_examples(tmp_path / "data")})
  program = train_program(config, shd.Partitioner.from_config(config), abstract=True)
  rows, _ = sft.source_rows(config.data)
  make = sft.TokenizeExample(program.family, program.cfg, program.preprocessing, program.tokenizer,
                             program.batch["ids"].shape[1], None, program.prefix)
  out = make.map((0, rows[0]))
  targets, ids, n = out["targets"], out["ids"], int(out["lengths"])
  answer = program.tokenizer.encode(program.family.answer("green"), add_special_tokens=False)
  scored = targets[targets >= 0]
  np.testing.assert_array_equal(scored, ids[n - len(scored):n])      # the last tokens: the reply
  assert len(scored) == len(answer) and (targets[:n - len(scored) - 1] == -1).all()
  assert program.tokenizer.decode(scored.tolist()).strip().startswith("green")
  # The step runs the prompts' shared first tokens once: a prompt that does not begin with them is refused.
  other = sft.TokenizeExample(program.family, program.cfg, program.preprocessing, program.tokenizer,
                              program.batch["ids"].shape[1], None, program.prefix[::-1])
  with pytest.raises(ValueError, match="example 0: its prompt does not begin with the family's template"):
    other.map((0, rows[0]))


def test_a_benchmarks_rows_are_asked_as_eval_asks_them(tmp_path):
  fine_detail.write(tmp_path, image_size=56, detail_px=4, per_split=(2, 0, 0))
  config = train_configs.get_config()
  config.update_from_flattened_dict({"data.sft.format": "llava", "data.sft.questions": str(tmp_path / "train.jsonl"),
                                     "data.sft.image_folder": str(tmp_path / "images")})
  plain, _ = sft.source_rows(config.data)
  config.data.sft.benchmark = "fine_detail"
  asked, _ = sft.source_rows(config.data)
  row = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])
  eval_asks = benchmarks.get("fine_detail").examples({**row, "question": row["text"]}, "test")[0]
  assert asked[0]["question"] == eval_asks.question != plain[0]["question"] == row["text"]
  assert asked[0]["answer"] == eval_asks.answer


class _Numbered:
  """A stand-in TokenizeExample: example i is {'i': i}."""

  def map(self, element):
    return {"i": np.int64(element[0]), "index": np.int64(element[0])}


def test_validation_reads_every_example_once_across_processes(tmp_path):
  fine_detail.write(tmp_path, image_size=56, detail_px=4, per_split=(0, 5, 0))
  config = train_configs.get_config()
  config.update_from_flattened_dict({"data.sft_validation.format": "llava",
                                     "data.sft_validation.questions": str(tmp_path / "validation.jsonl"),
                                     "data.sft_validation.image_folder": str(tmp_path / "images")})
  real = []
  for process in (0, 1):   # 5 examples, global batch 4, 2 processes: 2 batches of 2 per process
    v = sft.Validation(config.data, _Numbered(), 4, process, 2)
    examples = [v._example(i) for i in v.order]
    assert len(examples) == 4
    real += [int(e["i"]) for e in examples if e["weight"] == 1]
    assert all(e["i"] == 0 for e in examples if e["weight"] == 0)     # padding: copies of the first
  assert sorted(real) == [0, 1, 2, 3, 4]
  assert sft.plateaued([[1, 0.2, 0], [2, 0.5, 0], [3, 0.5, 0], [4, 0.4, 0]], 2)
  assert not sft.plateaued([[1, 0.2, 0], [2, 0.5, 0], [3, 0.5, 0], [4, 0.6, 0]], 2)
  assert not sft.plateaued([[1, 0.5, 0], [2, 0.4, 0]], 0) and not sft.plateaued([[1, 0.5, 0], [2, 0.4, 0]], 2)


def _held_out(folder, answers: list[str]) -> tuple[dict, list[dict]]:
  """Held-out examples (config.data.sft_validation): the sample photographs, asked as _examples asks,
  with these answers; (their settings, their rows)."""
  settings = {k.replace("data.sft.", "data.sft_validation."): v for k, v in _examples(folder, n=len(answers)).items()}
  rows = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
  for row, answer in zip(rows, answers):
    row["answer"] = answer
  (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return settings, rows


SFT_JOB = {"train.objective": "sft", "train.trainable": ".*", "train.batch_size": 8, "train.learning_rate": 3e-3,
           "checkpoint.every": 100, "data.max_text_tokens": 256}


@pytest.mark.slow   # a whole job (the full tier)
def test_a_fine_tuned_model_answers_what_it_was_taught(tmp_path):
  held_out, rows = _held_out(tmp_path / "held_out", ["green"] * 3 + ["red"] * 3)   # half not as taught
  settings = {**SFT_JOB, "train.steps": 30, "train.log_every": 10, "train.validate_every": 10,
              **_examples(tmp_path / "data"), **held_out}
  metrics = train(train_fixtures.tiny_config(tmp_path / "run", **settings))
  assert metrics["token_accuracy"] > 0.9, metrics
  history = json.loads((tmp_path / "run" / "summary_process0.json").read_text())["validation"]
  assert [h[0] for h in history] == [10, 20, 30]
  export = tmp_path / "run" / "export" / "model"
  pipe = runner.build_pipeline(eval_config(tmp_path, **{"model.params": str(export), "modes": "vanilla"}),
                               shd.Partitioner.single_device()).pipe
  photo = hf_fixtures.sample_photos()["rocket"]
  assert pipe.generate(pipe.prepare([photo], ["What colour is it?"]), max_new_tokens=8) == ["green"]
  # Answer accuracy is the share of held-out examples greedy decoding answers word for word.
  photos = list(hf_fixtures.sample_photos().values())
  replies = pipe.generate(pipe.prepare([photos[i % len(photos)] for i in range(6)], ["What colour is it?"] * 6),
                          max_new_tokens=8)
  assert history[-1][1] == np.mean([reply == row["answer"] for reply, row in zip(replies, rows)])


@pytest.mark.slow   # a whole job (the full tier)
def test_a_run_stops_on_its_validation_plateau_and_a_rerun_is_finished(tmp_path):
  held_out, _ = _held_out(tmp_path / "held_out", ["red", "red"])    # never the taught answer: accuracy stays 0
  settings = {**SFT_JOB, "train.steps": 6, "train.log_every": 6, "train.validate_every": 1, "train.patience": 1,
              **_examples(tmp_path / "data"), **held_out}
  config = train_fixtures.tiny_config(tmp_path / "run", **settings)
  metrics = train(config)
  summary = json.loads((tmp_path / "run" / "summary_process0.json").read_text())
  assert summary["step"] == 2 and [h[:2] for h in summary["validation"]] == [[1, 0.0], [2, 0.0]]
  assert (tmp_path / "run" / "export" / "model").exists()
  assert train(config) == metrics            # a rerun: finished, nothing trains
  config.train.patience = 2                  # a larger patience resumes it, to its next plateau
  train(config)
  summary = json.loads((tmp_path / "run" / "summary_process0.json").read_text())
  assert summary["step"] == 3 and [h[0] for h in summary["validation"]] == [1, 2, 3]


def test_expansion_aware_fine_tuning_trains_through_blinks_slots(tmp_path):
  """train.sft_expand: each example's region is the one eval's oracle expands; an example drawn out
  (region -1) is scored by the plain model, one drawn in by Blink's prefill with the teacher's tokens
  in its target's slots (the tiny experiment chain trains with it)."""
  import jax
  import jax.numpy as jnp
  from blink_jax.inference.pipeline import Pipeline
  from blink_jax.train.state import unflatten
  fine_detail.write(tmp_path / "data", image_size=112, detail_px=6, per_split=(8, 0, 0))
  config = train_fixtures.tiny_config(tmp_path / "run", **{
      **SFT_JOB, "data.max_text_tokens": 320, "train.sft_expand": 1.0,
      "data.sft.benchmark": "fine_detail", "data.sft.format": "llava",
      "data.sft.questions": str(tmp_path / "data" / "train.jsonl"),
      "data.sft.image_folder": str(tmp_path / "data" / "images")})
  program = train_program(config, shd.Partitioner.single_device())
  rows, _ = sft.source_rows(config.data)
  make = sft.TokenizeExample(program.family, program.cfg, program.preprocessing, program.tokenizer,
                             program.batch["ids"].shape[1], None, program.prefix, program.expansion)
  examples = [make.map((i, row)) for i, row in enumerate(rows)]
  pipe = Pipeline.from_preset("tiny").with_blink(program.expansion.blink)
  assert [int(e["region"]) for e in examples] == [pipe.target_region(r["image"].read(), r["box"]) for r in rows]
  batch = {k: jnp.asarray(np.stack([e[k] for e in examples])) for k in program.batch}
  params = unflatten({**program.frozen, **program.state.params})
  model = program.family.model(program.cfg)
  p = len(program.prefix)
  loss = jax.jit(lambda regions: sft.sft_loss(model, params, batch, p, program.expansion, regions)[0])
  plain, _ = sft.sft_loss(model, params, batch, p)
  np.testing.assert_allclose(loss(jnp.full((8,), -1, jnp.int32)), plain, rtol=1e-5)
  assert abs(float(loss(batch["region"])) - float(plain)) > 1e-4
