"""A setting the code added after a run recorded its settings is no change at its default (how the
recorded run ran), in train.py's resume check and in eval.py's."""

from blink_jax.eval import provenance
from blink_jax.train import run_record


def test_a_setting_newer_than_the_record_is_no_change_at_its_default():
  saved = {"config": {"blink": {"tau_exp": 0.1}, "train": {"steps": 3}}, "dataset": "d"}
  now = {"config": {"blink": {"tau_exp": 0.1, "sr_source": "mode"}, "train": {"steps": 3}}, "dataset": "d"}
  assert run_record.differences(saved, now) == []
  now["config"]["blink"]["sr_source"] = "teacher"
  now["config"]["train"]["mixing"] = 0.5           # no default the code holds: named
  assert run_record.differences(saved, now) == ["blink.sr_source: '<absent>' -> 'teacher'",
                                                "train.mixing: '<absent>' -> 0.5"]


def test_eval_resumes_answers_recorded_before_a_setting_existed():
  old = {"mode": "tokensr", "blink": {"tau_exp": 0.1}, "zoom": {"layer": 3}}
  assert provenance._diff(old, {**old, "blink": {"tau_exp": 0.1, "sr_source": "mode"},
                                "zoom": {"layer": 3, "box_choice": "attention"}}) == []
  assert provenance._diff(old, {**old, "blink": {"tau_exp": 0.1, "sr_source": "teacher"}}) == [
      "blink.sr_source: '<absent>' -> 'teacher'"]
