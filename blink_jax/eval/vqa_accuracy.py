"""TextVQA / VQAv2 accuracy exactly as the official EvalAI evaluator (via LLaVA's m4c_evaluator):
answer normalisation, then the soft score min(1, #matching other humans / 3) averaged over the 10
leave-one-out subsets. Two quirks of the reference are kept on purpose so scores match it: its
period-stripping look-behind is written `(?!<=\\d)` and `re.UNICODE` is passed as the count (32)."""

from __future__ import annotations

import re

from blink_jax.eval.example import SHORT_ANSWER, EvalExample, image_bytes, require

_CONTRACTIONS = dict(x.split("=") for x in (
    "aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've "
    "couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've "
    "hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's "
    "howd=how'd howll=how'll hows=how's Id've=I'd've I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd "
    "itd've=it'd've it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't "
    "mightnt've=mightn't've mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've "
    "neednt=needn't notve=not've oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at "
    "'ow'sat='ow's'at shant=shan't shed've=she'd've she'dve=she'd've she's=she's shouldve=should've "
    "shouldnt=shouldn't shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd "
    "somebodyd've=somebody'd've somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's "
    "someoned=someone'd someoned've=someone'd've someone'dve=someone'd've someonell=someone'll "
    "someones=someone's somethingd=something'd somethingd've=something'd've "
    "something'dve=something'd've somethingll=something'll thats=that's thered=there'd "
    "thered've=there'd've there'dve=there'd've therere=there're theres=there's theyd=they'd "
    "theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've twas='twas "
    "wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't whatll=what'll "
    "whatre=what're whats=what's whatve=what've whens=when's whered=where'd wheres=where's "
    "whereve=where've whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll whos=who's whove=who've "
    "whyll=why'll whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't "
    "wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll "
    "yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've "
    "you'dve=you'd've youll=you'll youre=you're youve=you've").split())
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")
_PUNCTUATION = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
                ",", "?", "!"]


def normalize_answer(text: str) -> str:
  text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
  text = text.replace("\n", " ").replace("\t", " ").strip()
  out = text
  for p in _PUNCTUATION:
    if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
      out = out.replace(p, "")
    else:
      out = out.replace(p, " ")
  out = _PERIOD_STRIP.sub("", out, re.UNICODE)
  words = [_NUMBERS.get(w, w) for w in out.lower().split()]
  words = [_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES]
  return " ".join(words)


def soft_score(prediction: str, human_answers: list[str]) -> float:
  """The VQA score of one prediction against its 10 human answers."""
  answers = [normalize_answer(a) for a in human_answers]
  pred = normalize_answer(prediction)
  if pred not in answers:
    return 0.0
  matches = [min(1.0, sum(1 for j, b in enumerate(answers) if j != i and b == pred) / 3)
             for i in range(len(answers))]
  return sum(matches) / len(matches)


def examples(row: dict, where: str) -> list[EvalExample]:
  qid, question, answers, image = require(row, "question_id", "question", "answers", "image", where=where)
  answers = [a["answer"] if isinstance(a, dict) else a for a in answers]
  ocr = row.get("ocr_tokens")
  prompt = question
  if ocr is not None:  # TextVQA as LLaVA-1.5 evaluates it: with reference OCR tokens, the line kept
    prompt += "\nReference OCR token: " + ", ".join(ocr)   # when there are none (llava_textvqa_val_v051_ocr)
  return [EvalExample(str(qid), image_bytes(image), f"{prompt}\n{SHORT_ANSWER}", list(answers))]


def score(predictions: dict[str, str], items: list[EvalExample]) -> dict[str, float]:
  scores = [soft_score(predictions.get(e.question_id, ""), e.answer) for e in items]
  return {"accuracy": 100 * sum(scores) / max(1, len(scores))}
