"""lmms-eval's own evaluator (`simple_evaluate`, what its CLI runs) with `--model blink_jax` on two
tasks defined here (local parquet, offline): a multiple-choice task whose accuracy must follow the
pipeline's own likelihoods (the option it finds most likely is the one lmms-eval picks; the targets
are set so that the inverted pick would score differently) and a generation task whose answers must
be the pipeline's greedy answers."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import hf_fixtures
from blink_jax.data.prompt import vicuna_v1_prompt
from blink_jax.inference.pipeline import Pipeline

OPTIONS = ("yes", "no")
UTILS = '''
import io
from PIL import Image

def doc_to_visual(doc):
  return [Image.open(io.BytesIO(doc["image"]["bytes"])).convert("RGB")]

def doc_to_choice(doc):
  return ["yes", "no"]

def doc_to_target(doc):
  return ["yes", "no"].index(doc["answer"])

def process_results(doc, results):
  return {"exact": float(results[0].strip() == doc["answer"])}
'''
TASK = '''dataset_path: parquet
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
doc_to_visual: !function utils.doc_to_visual
doc_to_text: "question"
'''
MULTIPLE_CHOICE = '''task: toy_mc
output_type: multiple_choice
doc_to_choice: !function utils.doc_to_choice
doc_to_target: !function utils.doc_to_target
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
'''
GENERATE = '''task: toy_gen
output_type: generate_until
doc_to_target: "answer"
generation_kwargs:
  max_new_tokens: 4
  temperature: 0
  do_sample: false
process_results: !function utils.process_results
metric_list:
  - metric: exact
    aggregation: mean
    higher_is_better: true
'''


def _png(array: np.ndarray) -> bytes:
  out = io.BytesIO()
  Image.fromarray(array).save(out, format="PNG")
  return out.getvalue()


@pytest.mark.slow   # lmms-eval's whole evaluator (the fast tier drives the adapter directly)
def test_lmms_eval_scores_what_the_pipeline_answers(mha_ckpt, tmp_path, monkeypatch):
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  from lmms_eval import evaluator
  from lmms_eval.tasks import TaskManager

  photos = list(hf_fixtures.sample_photos().values())
  images = [photos[i % len(photos)] for i in range(6)]
  questions = [f"is there a cat number {i} ?" for i in range(6)]
  pipe = Pipeline.from_hf(mha_ckpt)
  batch = pipe.prepare(images, prompts=[vicuna_v1_prompt(q) for q in questions])
  logprob = np.stack([pipe.loglikelihood(batch, [pipe.family.reply_prefix + o] * 6).logprob for o in OPTIONS], 1)
  likeliest = logprob.argmax(1)
  assert not np.allclose(logprob[:, 0], logprob[:, 1])
  # The model's likeliest option is the target of 4 questions: 4/6 right, 2/6 if lmms-eval took the least likely.
  target = np.where(np.arange(6) < 4, likeliest, 1 - likeliest)
  answers = pipe.generate(batch, max_new_tokens=4)

  rows = [{"image": {"bytes": _png(im), "path": f"{i}.png"}, "question": q, "answer": OPTIONS[t]}
          for i, (im, q, t) in enumerate(zip(images, questions, target))]
  pq.write_table(pa.Table.from_pylist(rows), tmp_path / "toy.parquet")
  tasks = tmp_path / "tasks"
  tasks.mkdir()
  (tasks / "utils.py").write_text(UTILS)
  for name, spec in (("toy_mc", MULTIPLE_CHOICE), ("toy_gen", GENERATE)):
    (tasks / f"{name}.yaml").write_text(TASK.format(data=tmp_path / "toy.parquet") + spec)

  out = evaluator.simple_evaluate(model="blink_jax", model_args=f"checkpoint={mha_ckpt},mode=vanilla",
                                  tasks=["toy_mc", "toy_gen"], batch_size=2, log_samples=True,
                                  task_manager=TaskManager(include_path=str(tasks)))
  assert out["results"]["toy_mc"]["acc,none"] == pytest.approx(4 / 6)
  losses = {s["doc_id"]: [r[0] for r in s["filtered_resps"]] for s in out["samples"]["toy_mc"]}
  np.testing.assert_allclose([losses[i] for i in range(6)], -logprob, rtol=1e-4, atol=1e-4)
  generated = {s["doc_id"]: s["filtered_resps"][0] for s in out["samples"]["toy_gen"]}
  assert [generated[i] for i in range(6)] == answers
  assert out["results"]["toy_gen"]["exact,none"] == pytest.approx(np.mean([a == OPTIONS[t] for a, t in
                                                                           zip(answers, target)]))
