"""verify.py on real benchmark rows, read by path from ../shared/benchmarks (skipped without it).

- every worked solution of GSM8K (test), MATH-500 and the AIME 1983-2023 pool scores 1.0 against
  its own gold answer (the reward a perfect model would get), except the listed rows whose
  solution text never states the gold, or states it as no commitment to one value;
- 2,000 seeded pairs of different golds per set are never accepted as equal, except the listed
  pairs of golds that are written differently but are equal.
"""
import json
import random
from pathlib import Path

import pytest

import verify

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
pytestmark = pytest.mark.skipif(not BENCH.is_dir(), reason="../shared/benchmarks is absent")

# set -> (file, solution field, gold field or None for GSM8K's '#### x')
SETS = {
    "gsm8k": ("gsm8k/test.jsonl", "answer", None),
    "math500": ("math500/test.jsonl", "solution", "answer"),
    "aime_pool": ("train_pools/aime_1983_2023.jsonl", "solution", "answer"),
}
# rows (0-based line numbers) whose worked solution never states the gold, checked below
NO_ANSWER_IN_SOLUTION = {
    ("aime_pool", 957): "ends with a general volume formula and author lines; 125 is never written",
    ("aime_pool", 965): "an alternative solution that stops at the probability 17/18; 35 is never written",
}
# rows whose worked solution states the gold as no commitment to one value (verify.py's principle),
# each with the words that say so, checked below
NOT_COMMITTED = {
    ("math500", 141): ("at most $\\boxed{2}$", "a bound: the question asks for the greatest number"),
    ("aime_pool", 404): ("above $\\boxed{593}$", "'above' is a place here, read as a bound"),
    ("aime_pool", 512): ("abc \\le \\boxed{729}", "a bound; equality is shown in the next sentence"),
    ("aime_pool", 164): ("the answer is $\\frac{1992}{2(1995)}$", "an appended solution replaces the box"),
}
# pairs of different gold strings that are equal answers, hand-checked (verify.py reads a degree
# sign as decoration: 120^\circ is the angle 120)
EQUAL_GOLD_PAIRS = {("120^\\circ", "120"), ("120", "120^\\circ")}


def rows(name):
    path, solution, answer = SETS[name]
    out = []
    with open(BENCH / path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            gold = row["answer"].split("####")[-1].strip() if answer is None else str(row[answer])
            out.append((row[solution], gold))
    return out


@pytest.mark.parametrize("name", sorted(SETS))
def test_every_worked_solution_scores_one(name):
    data = rows(name)
    assert len(data) >= 500
    wrong = []
    for k, (solution, gold) in enumerate(data):
        reward, feedback = verify.score(solution, gold)
        if (name, k) in NO_ANSWER_IN_SOLUTION:
            assert gold.lstrip("0") not in solution  # the exception is still true of the data
            assert reward == 0.0
        elif (name, k) in NOT_COMMITTED:
            assert NOT_COMMITTED[name, k][0] in solution and reward == 0.0
        elif reward != 1.0:
            wrong.append((k, gold, feedback))
    assert wrong == []


@pytest.mark.parametrize("name", sorted(SETS))
def test_different_golds_are_not_accepted(name):
    golds = [gold for _, gold in rows(name)]
    rng = random.Random(2026)
    pairs = []
    while len(pairs) < 2000:
        i, j = rng.randrange(len(golds)), rng.randrange(len(golds))
        if golds[i].strip() != golds[j].strip():
            pairs.append((golds[i], golds[j]))
    accepted = [(a, b) for a, b in pairs if verify.is_equiv(a, b) and (a, b) not in EQUAL_GOLD_PAIRS]
    assert accepted == []


def test_golds_with_a_unit_keep_it():
    """A gold that ends in a unit ('15\\mbox{ cm}^2') accepts its bare value and its unit written
    another way, and refuses the same value in another unit."""
    with_unit = []
    for name in sorted(SETS):
        for _, gold in rows(name):
            value, unit = verify._clean_unit(gold)
            if unit:
                with_unit.append(gold)
                assert verify.is_equiv(value, gold), gold
                assert verify.is_equiv("%s\\text{ %s}" % (value, unit), gold), gold
                other = "kg" if unit != "kg" else "cm"
                assert not verify.is_equiv("%s\\text{ %s}" % (value, other), gold), gold
    assert len(with_unit) >= 3  # MATH-500 has a few: cm^2, inches^2, cents, degrees
