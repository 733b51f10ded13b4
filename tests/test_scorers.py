"""The official scorers on hand-checked vectors, edge cases included."""

import pytest

from blink_jax.eval import gqa, mmbench, mme, pope, scienceqa, seed, vqa_accuracy
from blink_jax.eval.example import EvalExample
from blink_jax.eval.option_letters import extract_letter


def test_mme_parse_and_scores():
  assert [mme.parse(t) for t in ["Yes", "yes.", "No, it is not", "Not sure", "Nope", "Maybe", "", "The answer is yes"]] \
      == ["yes", "yes", "no", "no", "no", "other", "other", "other"]
  items = [EvalExample(f"{img}#{k}", None, "", ans, {"category": cat, "image_id": img})
           for cat, img, k, ans in [("count", "a", 0, "yes"), ("count", "a", 1, "no"),
                                    ("count", "b", 2, "yes"), ("count", "b", 3, "no"),
                                    ("code_reasoning", "c", 4, "yes"), ("code_reasoning", "c", 5, "no")]]
  preds = {"a#0": "Yes", "a#1": "No.", "b#2": "yes", "b#3": "Yes", "c#4": "I think so"}  # c#5 missing
  out = mme.score(preds, items)
  assert out["count/acc"] == 75.0 and out["count/acc_plus"] == 50.0 and out["count/score"] == 125.0
  assert out["code_reasoning/acc"] == 0.0 and out["code_reasoning/score"] == 0.0
  assert out["perception"] == 125.0 and out["cognition"] == 0.0


def test_mme_prompt_replaces_the_yes_no_instruction():
  (e,) = mme.examples({"question_id": "scene/1.jpg", "question": "Is this a beach? Please answer yes or no.",
                       "answer": "Yes", "category": "scene", "image": {"bytes": b"x"}, "_row": 7}, "t")
  assert e.question == "Is this a beach?\nAnswer the question using a single word or phrase."
  assert (e.question_id, e.answer, e.image) == ("scene/1.jpg#7", "yes", b"x")


def test_pope_parse_metrics_and_join_by_question_id():
  # The official rule is word-based: "Yes, no doubt." contains "no", so it reads as no.
  assert [pope.parse(t) for t in ["Yes.", "No, there is not.", "There is no dog", "I don't know",
                                  "Yes, no doubt.", "not.", "No", "Yes. No."]] == \
      ["yes", "no", "no", "yes", "no", "no", "no", "yes"]
  labels = {"q1": "yes", "q2": "yes", "q3": "no", "q4": "no", "q5": "yes"}
  items = [EvalExample(q, None, "", a, {"category": "random"}) for q, a in labels.items()]
  # Predictions arrive in another order; q5 has none (counted as "yes" text "" -> parse gives "yes").
  preds = {"q4": "No.", "q3": "Yes", "q2": "No", "q1": "Yes, there is."}
  out = pope.score(preds, items)
  # pred: q1 yes, q2 no, q3 yes, q4 no, q5 yes -> TP=2 (q1,q5) FP=1 (q3) TN=1 (q4) FN=1 (q2)
  assert out["random/accuracy"] == pytest.approx(60.0)
  assert out["random/precision"] == pytest.approx(200 / 3)
  assert out["random/recall"] == pytest.approx(200 / 3)
  assert out["random/f1"] == pytest.approx(200 / 3)
  assert out["random/yes_ratio"] == pytest.approx(60.0)
  assert out["f1"] == out["random/f1"]


def test_gqa_exact_match_after_llava_conversion_and_breakdown():
  items = [EvalExample("1", None, "", "yes", {"structural": "verify"}),
           EvalExample("2", None, "", "cat", {"structural": "query"}),
           EvalExample("3", None, "", "left", {"structural": "query"})]
  out = gqa.score({"1": "Yes.", "2": "The cat", "3": "left"}, items)
  assert out["accuracy"] == pytest.approx(200 / 3)  # "The cat" != "cat": no article stripping in GQA
  assert out["binary/accuracy"] == 100.0 and out["open/accuracy"] == 50.0


@pytest.mark.parametrize("text,letter", [
    ("B", "B"), ("B.", "B"), ("(C)", "C"), ("C) blue", "C"), ("Answer: D", "D"),
    ("The answer is (A).", "A"), ("A. dog", "A"), ("It is a cat.", "B"), ("cat or dog", None),
    ("E", None), ("", None), ("b", None)])
def test_option_letter_extraction(text, letter):
  assert extract_letter(text, {"A": "dog", "B": "cat", "C": "blue", "D": "red"}) == letter


def _mmbench(rows, lang="en"):
  make = mmbench.examples if lang == "en" else mmbench.examples_cn
  return mmbench.circular([e for row in rows for e in make(row, "t")])


def test_mmbench_rotations_circular_eval_and_categories():
  """A source without circular copies: every rotation of each row's options is asked."""
  row = {"index": 5, "question": "Which?", "hint": "nan", "A": "dog", "B": "cat", "C": "cow", "D": float("nan"),
         "answer": "B", "category": "animals", "l2-category": "perception", "image": {"bytes": b"i"}}
  items = _mmbench([row])
  assert [e.question_id for e in items] == ["5/r0", "5/r1", "5/r2"]
  assert items[0].question == ("Which?\nA. dog\nB. cat\nC. cow\n"
                               "Answer with the option's letter from the given choices directly.")
  assert items[1].question.startswith("Which?\nA. cat\nB. cow\nC. dog")
  assert [e.answer for e in items] == ["B", "A", "C"]
  assert _mmbench([row], "cn")[0].question.endswith("请直接回答选项字母。")
  other = _mmbench([{**row, "index": 6, "category": "things"}])
  preds = {"5/r0": "B", "5/r1": "A. cat", "5/r2": "cat", "6/r0": "B", "6/r1": "A", "6/r2": "B"}
  out = mmbench.score(preds, items + other)
  assert out["circular_accuracy"] == 50.0  # question 6 fails its last rotation
  assert out["category/animals"] == 100.0 and out["category/things"] == 0.0
  assert out["l2_category/perception"] == 50.0


def test_mmbench_official_circular_copies_are_asked_once_and_grouped_by_index_mod_a_million():
  """The official TSVs hold each question's copies at index + k * 1_000_000 with rotated options: each
  row is asked once as given (no option order that is in no official copy) and CircularEval groups
  by index % 1_000_000, so a right 2-option question and a wrong 4-option one score 50, not 33.33."""
  base = {"question": "Which?", "hint": "nan", "category": "c", "l2-category": "l", "image": b"i"}
  four = ["dog", "cat", "cow", "pig"]
  rows = [{**base, "index": 7 + k * 1_000_000, **dict(zip("ABCD", four[k:] + four[:k])),
           "answer": "ABCD"[(1 - k) % 4]} for k in range(4)]
  rows += [{**base, "index": 8 + k * 1_000_000, "A": ["yes", "no"][k], "B": ["no", "yes"][k],
            "answer": "AB"[k]} for k in range(2)]
  items = _mmbench(rows)
  assert [e.question_id for e in items] == ["7", "1000007", "2000007", "3000007", "8", "1000008"]
  assert items[1].question.startswith("Which?\nA. cat\nB. cow\nC. pig\nD. dog") and items[1].answer == "A"
  right = {e.question_id: e.answer for e in items}
  assert mmbench.score(right, items)["circular_accuracy"] == 100.0
  one_wrong = {**right, "3000007": "A" if right["3000007"] != "A" else "B"}
  assert mmbench.score(one_wrong, items)["circular_accuracy"] == 50.0


def test_mmbench_row_without_options_is_a_clear_error():
  with pytest.raises(ValueError, match="row 9 has 0 options"):
    mmbench.examples({"index": 9, "question": "Q", "answer": "A", "image": b""}, "mmbench.tsv")


def test_scienceqa_parse_as_llava():
  assert [scienceqa.parse(t) for t in ["A", "B. cat", "The answer is C.", "The answer is C. The answer is D.",
                                       "C", "cat", "A."]] == ["A", "B", "C", "FAILED", "C", "FAILED", "FAILED"]
  items = [EvalExample("1", None, "", "B"), EvalExample("2", None, "", "A")]
  assert scienceqa.score({"1": "B", "2": "B. x"}, items)["accuracy"] == 50.0


def test_seed_exact_letter_per_type():
  items = [EvalExample("1", None, "", "A", {"type": "1"}), EvalExample("2", None, "", "C", {"type": "2"})]
  out = seed.score({"1": "A", "2": "C."}, items)  # "C." is not "C": the official script compares exactly
  assert out["accuracy"] == 50.0 and out["type_1/accuracy"] == 100.0 and out["type_2/accuracy"] == 0.0


@pytest.mark.parametrize("raw,norm", [
    ("Two", "2"), ("the cat", "cat"), ("A dog.", "dog"), ("dont", "don't"), ("yes!", "yes"),
    ("3.5", "3.5"), ("1,000", "1000"), ("red, white", "red white"), ("it's", "it 's"),
    ("New York?", "new york"), ("t-shirt", "t shirt"), ("10 %", "10 %")])
def test_vqa_answer_normalisation(raw, norm):
  assert vqa_accuracy.normalize_answer(raw) == norm


def test_vqa_soft_score_leave_one_out():
  ten = ["2"] * 3 + ["3"] * 7
  assert vqa_accuracy.soft_score("two", ten) == pytest.approx(0.9)   # 3 humans: the published 90%
  assert vqa_accuracy.soft_score("3", ten) == pytest.approx(1.0)
  assert vqa_accuracy.soft_score("2", ["2", "2"] + ["x"] * 8) == pytest.approx(0.6)
  assert vqa_accuracy.soft_score("4", ten) == 0.0
  items = [EvalExample("a", None, "", ten), EvalExample("b", None, "", ["no"] * 10)]
  assert vqa_accuracy.score({"a": "3", "b": "No."}, items)["accuracy"] == 100.0
  assert vqa_accuracy.score({"a": "3"}, items)["accuracy"] == 50.0  # missing prediction scores 0


@pytest.mark.parametrize("ocr,line", [(["dakota", "digital"], "\nReference OCR token: dakota, digital\n"),
                                      ([], "\nReference OCR token: \n"), (None, None)])
def test_textvqa_prompt_keeps_the_ocr_line_as_llava_does(ocr, line):
  """LLaVA-1.5's llava_textvqa_val_v051_ocr.jsonl keeps "Reference OCR token: " with nothing after it
  for a question without OCR tokens (115 of 5000); VQAv2 rows (no ocr_tokens) have no such line."""
  row = {"question_id": 1, "question": "what brand is this?", "answers": ["x"] * 10, "image": b"",
         **({} if ocr is None else {"ocr_tokens": ocr})}
  (example,) = vqa_accuracy.examples(row, "textvqa row 0")
  assert example.question.startswith("what brand is this?")
  assert example.question.endswith("Answer the question using a single word or phrase.")
  assert (line in example.question) if line else ("Reference OCR token" not in example.question)
