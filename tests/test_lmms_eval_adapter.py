"""The lmms-eval adapter (`--model blink_jax`): found by lmms-eval's registry, and on requests built as
lmms-eval's tasks build them, it answers what the pipeline answers (generation cut at `until`,
log-likelihoods), batched, in any mode."""

import numpy as np
import pytest
from lmms_eval.api.instance import Instance, unwrap_generation_output
from lmms_eval.models import get_model
from PIL import Image

import hf_fixtures
from blink_jax.data.prompt import vicuna_v1_prompt
from blink_jax.eval.lmms_eval_adapter import BlinkJax

QUESTIONS = ["what is in this image ?", "describe it", "how many cat are there ?"]
BLINK = "first_scan_layer:1;last_scan_layer:6;region_size:2;token_sr_channels:8;tau_exp:0.0;tau_drop:0.0"


def _docs():
  photos = list(hf_fixtures.sample_photos().values())
  return [{"image": Image.fromarray(photos[i]), "question": q} for i, q in enumerate(QUESTIONS)]


def _requests(kind, docs, args):
  """As lmms-eval's ConfigurableTask.construct_requests: (context, kwargs | target, doc_to_visual,
  doc_id, task, split)."""
  return [Instance(kind, (d["question"], args(d), lambda doc: [doc["image"]], i, "toy", "test"), idx=0,
                   metadata=_meta(i)) for i, d in enumerate(docs)]


def _meta(doc_id):
  return {"task": "toy", "doc_id": doc_id, "repeats": 1}


def _padded(pipe, docs):
  """The docs' prompts as a batch of the 8 the mesh splits, the last repeated (as the adapter pads)."""
  fill = 8 - len(docs)
  return pipe.prepare([d["image"] for d in docs] + [docs[-1]["image"]] * fill,
                      [d["question"] for d in docs] + [docs[-1]["question"]] * fill)


@pytest.fixture(scope="module")
def model(blink_ckpt):
  m = get_model("blink_jax").create_from_arg_string(f"checkpoint={blink_ckpt},mode=interp,blink={BLINK}",
                                                    {"batch_size": 2})
  m.task_dict = {"toy": {"test": _docs()}}
  return m


def test_registered_with_lmms_eval():
  assert get_model("blink_jax") is BlinkJax


def test_generate_until_equals_the_pipeline_cut_at_until(model):
  docs = _docs()
  assert model.batch_size == 8 and model.pipe.blink.first_scan_layer == 1  # 2 rounded up to the 8 devices
  reqs = _requests("generate_until", docs, lambda d: {"max_new_tokens": 6, "until": ["\n\n"], "temperature": 0})
  out = model.generate_until(reqs)
  pipe = model.pipe
  batch = _padded(pipe, docs)
  want = pipe.generate(batch, 6, mode="interp")[:3]
  assert out == [w.split("\n\n")[0] for w in want]
  assert batch.texts[0] == vicuna_v1_prompt(QUESTIONS[0])
  # `until` cuts what was generated: stop at the first generated character of each answer.
  cut = model.generate_until(_requests("generate_until", docs, lambda d: {"max_new_tokens": 6,
                                                                          "until": [w[1:2] or "x" for w in want]}))
  assert all(len(c) <= 1 for c in cut) and cut[0] == want[0][:1]
  with pytest.raises(ValueError, match="decodes greedily"):
    model.generate_until(_requests("generate_until", docs[:1], lambda d: {"temperature": 0.7}))


def test_loglikelihood_equals_the_pipeline_and_flags_greedy(model):
  """What lmms-eval's evaluator takes from the adapter (through its own unwrap_generation_output) is
  (loss, greedy), the loss the pipeline's negative log-probability: its multiple-choice argmin over
  the options' losses picks the option the pipeline finds most likely."""
  docs = _docs()
  pipe = model.pipe
  batch = _padded(pipe, docs)
  greedy = pipe.generate_tokens(batch, 3, mode="interp")[:3]
  # two options per question: the greedy reply, and the same with another last word
  sky, red = (pipe.tokenizer.encode(w, add_special_tokens=False)[0] for w in ("sky", "red"))
  options = [[pipe.tokenizer.decode(t) for t in greedy],
             [pipe.tokenizer.decode(list(t[:-1]) + [sky if t[-1] != sky else red]) for t in greedy]]
  got, logprob = [], []
  for option in options:
    raw = model.loglikelihood(_requests("loglikelihood", docs, lambda d, o=option: o[QUESTIONS.index(d["question"])]))
    got.append([unwrap_generation_output(r)[0] for r in raw])
    want = pipe.loglikelihood(batch, [" " + t.lstrip() for t in option + option[-1:] * 5], mode="interp")
    np.testing.assert_allclose([loss for loss, _ in got[-1]], -want.logprob[:3], atol=1e-4)
    assert [g for _, g in got[-1]] == want.greedy[:3].tolist()
    logprob.append(want.logprob[:3])
  for q in range(len(docs)):   # lmms-eval's choice (np.argmin over the options' first elements)
    assert abs(logprob[0][q] - logprob[1][q]) > 1e-3
    assert np.argmin([g[q][0] for g in got]) == np.argmax([lp[q] for lp in logprob])


def test_requests_it_cannot_answer_are_named(model):
  req = Instance("generate_until", ("q", {}, lambda doc: [doc["image"], doc["image"]], 0, "toy", "test"), idx=0,
                 metadata=_meta(0))
  with pytest.raises(ValueError, match="one image per request"):
    model.generate_until([req])
  with pytest.raises(ValueError, match="acc_mutual_info"):
    model.loglikelihood([Instance("loglikelihood", ("", " A"), idx=0, metadata=_meta(0))])
  with pytest.raises(ValueError, match="mode='fast'"):
    BlinkJax(checkpoint="unused", mode="fast")


@pytest.mark.slow   # a second model (the full tier)
def test_zoom_mode_takes_its_settings_and_answers_as_the_pipeline(blink_ckpt):
  m = get_model("blink_jax").create_from_arg_string(f"checkpoint={blink_ckpt},mode=zoom,zoom=layer:2;box:0.5",
                                                    {"batch_size": 2})
  m.task_dict = {"toy": {"test": _docs()}}
  assert (m.pipe.zoom.layer, m.pipe.zoom.box) == (2, 0.5)
  docs = _docs()
  out = m.generate_until(_requests("generate_until", docs, lambda d: {"max_new_tokens": 4, "until": ["\n\n"]}))
  assert out == [w.split("\n\n")[0] for w in m.pipe.generate(_padded(m.pipe, docs), 4, mode="zoom")[:3]]
  with pytest.raises(ValueError, match="unknown fields \\['boxx'\\]"):
    BlinkJax(checkpoint=str(blink_ckpt), mode="zoom", zoom="boxx:0.5")
