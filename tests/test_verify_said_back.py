"""The question said back is no answer: every expression question of the kit's arithmetic test file and
of the demo's held-out files, restated as its own answer in each wrapper below, scores 0.

A reward that pays for the question's own expression is learned: a GRPO demo run answered '18 - 3'
to "Compute 18 - 3." (bench/README.md). bench/verify_adversarial.py reads WRAPPERS and EXPRESSION_RE
from this file (with ast), so keep them plain literals."""
import json
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import verify  # noqa: E402

# {e}: the question's expression ('9 + 4'); {p}: the same with each number in brackets ('(9) + (4)')
WRAPPERS = [
    "{e}", "{p}", "The answer is (({e})).", "\\boxed{{[{e}]}}", "({e})/1", "\\frac{{{e}}}{{1}}", "${e}$",
    "#### {e}", "Final Answer: The final answer is {e}. I hope it is correct.", "**Answer:** \\boxed{{{e}}}",
    "So the result is {e} + 0.", "({e}) \\times 1", "x = {e}", "\\boxed{{\\left({e}\\right)}}",
    "({e})^{{1}}", "The answer is {e}, which is the value.",
]
# the expression of a question that asks for one ('Compute 9 + 4.'); word problems have none
EXPRESSION_RE = r"(?:What is|Compute|Evaluate|Calculate) (.+?)[.?](?: Give the answer .*)?"
FILES = ["arith_test.jsonl", "demo_test_l1.jsonl", "demo_test_l6.jsonl"]


def questions():
    out = []
    for name in FILES:
        with open(os.path.join(ROOT, "data", name), encoding="utf-8") as f:
            for row in map(json.loads, f):
                m = re.fullmatch(EXPRESSION_RE, row["question"])
                if m:
                    out.append((m.group(1), row["answer"]))
    return out


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_the_question_said_back_scores_zero(wrapper):
    asked = questions()
    assert len(asked) >= 230  # 248 questions, the word problems left out
    paid = []
    for expression, gold in asked:
        bracketed = re.sub(r"\d+", r"(\g<0>)", expression)
        completion = wrapper.format(e=expression, p=bracketed)
        if verify.score(completion, gold)[0] != 0.0:
            paid.append((completion, gold))
    assert paid == []


def test_the_expression_with_its_value_still_scores_one():
    # the same expressions carried out are answers: the test above refuses the form, not the numbers
    for expression, gold in questions()[::7]:
        assert verify.score("%s = %s" % (expression, gold), gold)[0] == 1.0, expression
        assert verify.score("The answer is \\boxed{%s}." % gold, gold)[0] == 1.0, gold
