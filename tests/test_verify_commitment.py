"""verify.py's principle: 1 only when a completion commits to exactly one final value equal to the gold.

Every labelled completion of bench/verify_adversarial.jsonl (written by hand, each label decided by
the principle; bench/verify_adversarial.py compares verify.py with math-verify on them) must score
as labelled, and the feedback must name why an answer is no commitment, since GEPA's reflector
reads it."""
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import verify  # noqa: E402

with open(os.path.join(ROOT, "bench", "verify_adversarial.jsonl"), encoding="utf-8") as f:
    ROWS = [json.loads(line) for line in f]
CLASSES = sorted({r["class"] for r in ROWS})


@pytest.mark.parametrize("cls", CLASSES)
def test_adversarial_completions_score_as_labelled(cls):
    rows = [r for r in ROWS if r["class"] == cls]
    assert {r["label"] for r in ROWS} == {"right", "wrong"}
    missed = [(r["completion"], r["gold"], r["label"]) for r in rows
              if (verify.score(r["completion"], r["gold"])[0] == 1.0) != (r["label"] == "right")]
    assert missed == []


@pytest.mark.parametrize("completion,gold,feedback", [
    ("It is 12 or 13.", "13", "hedged between 12 and 13; commit to one final answer"),
    ("The answer is between 12 and 14.", "13", "hedged between 12 and 14; commit to one final answer"),
    ("The answer is ((9 + 4)).", "13", "an operation still to do: ((9 + 4)); give the number it comes to"),
    ("The answer is twice 13.", "26", "an operation still to do: twice 13; give the number it comes to"),
    ("It is not 13.", "13", "answer 13 is negated ('not'); state the value itself"),
    ("13 is wrong.", "13", "answer 13 is negated ('is wrong'); state the value itself"),
    ("The answer is less than 13.", "13",
     "answer 13 is a bound or comparison ('less than 13'), not a value; give the exact value"),
    ("\\boxed{13}. That is wrong.", "13",
     "answer 13 is retracted ('That is wrong') and no other value replaces it; end on the one answer you keep"),
    ("The answer is 12. The answer is 12. The answer is 1", "1",
     "the text repeats the answer 12 and stops on 1; end with one final answer"),
])
def test_feedback_names_why_there_is_no_commitment(completion, gold, feedback):
    assert verify.score(completion, gold) == (0.0, feedback)


@pytest.mark.parametrize("completion,answer", [
    ("The answer is 13. Wait, actually it is 15.", "15"),  # replaced
    ("\\boxed{13}\nThe answer is 14.", "14"),               # a later answer sentence replaces the box
    ("\\boxed{13}. That is wrong.", None),                  # taken back, nothing in its place
    ("It is 14, not 13.", "14"),                             # the value kept in a contrast
    ("The answer is thirteen.", "13"),                       # a text without digits: numbers in words
    ("#### 1,3", "1, 3"),                                    # '####' takes commas as thousands only
])
def test_extract_answer_follows_what_the_text_commits_to(completion, answer):
    assert verify.extract_answer(completion) == answer


def test_is_equiv_compares_answers_not_commitments():
    # is_equiv reads two bare answers: '2 + 3' is 5 there; only score() asks for a number against
    # a number gold, and a whole-number gold needs that integer in both
    assert verify.is_equiv("2 + 3", "5") is True
    assert verify.score("2 + 3", "5")[0] == 0.0
    assert verify.is_equiv("13.0", "13") and not verify.is_equiv("6621478.0", "6621474")


@pytest.mark.parametrize("completion,gold,reward", [
    ("It takes 12 to 14 days.", "14", 0.0),                  # a range is two candidates
    ("It is 12\u201314.", "14", 0.0),
    ("The temperature rose from 12 to 14.", "14", 1.0),      # a change, not a range
    ("Round 13.6 to 14.", "14", 1.0),
    ("She has 13 apples (or maybe 14).", "14", 0.0),         # a hedge with a counted thing between
    ("The temperature is \u22127\u00b0C.", "7", 0.0),         # the minus sign is a sign
    ("The temperature is \u22127\u00b0C.", "-7", 1.0),
    ("The final balance is -$10.", "-10", 1.0),
    ("She had $15 - $10 = $5 left.", "5", 1.0),
    ("She needs a minimum of 13 eggs.", "13", 0.0),          # a bound
    ("giving a minimum of $\\boxed{015}$.", "15", 1.0),     # the least value
    ("So she has 20 apples (25 - 5 = 20).", "20", 1.0),      # a check that agrees
    ("So she has 20 apples (25 - 5 = 21).", "20", 0.0),
    ("The answer is 13, wait no, 14.", "14", 1.0),           # a second thought replaces it
    ("The answer is 13. Oh wait, it is 14.", "13", 0.0),
    ("The answer is 13 \u2014 or maybe 14.", "13", 0.0),       # a dash between words reads as a comma
    ("The answer is $0.\\dot{1}4285\\dot{7}$.", "\\frac{1}{7}", 1.0),  # a repeating decimal in dots
])
def test_readings_beside_the_labelled_rows(completion, gold, reward):
    assert verify.score(completion, gold)[0] == reward
