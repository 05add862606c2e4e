"""verify.py tried as a policy would game it: labelled adversarial completions, per class.

bench/verify_adversarial.jsonl holds completions written by hand, each with a gold answer and a label
decided by verify.py's principle: "right" when the completion commits to exactly one final value and
that value equals the gold; "wrong" otherwise (a bound or comparison, a negated value, two or more
candidates, a value retracted or replaced later, an operation still to do against a number gold, a
number cut out of another, or simply another value). Classes name the way each one tries to pass.
Batch 1 was written first and verify.py was fixed against it; each later batch was written after
the fixes for the one before, in the same classes, and run once before verify.py changed again.
So each batch is scored by verify.py as it was when the batch was written (WRITTEN_AFTER, read from
git): a held-out estimate that later fixes do not flatter.

The bench scores every row with verify.py as it is, as it was when the row's batch was written, as
it was at --before, and with math-verify (bench/requirements.txt; left out when it is not installed),
and counts per class the wrong answers accepted and the right answers refused. It also says back
every question of data/arith_test.jsonl and the demo's held-out files as its own answer, in the
wrappers of tests/test_verify_said_back.py, and counts how many each scorer accepts.
Writes bench/results/verify_adversarial.json.

    python bench/verify_adversarial.py            # needs sympy; math-verify for its column
"""
import argparse
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from results_file import cpu_name, write_results  # noqa: E402  (bench/ is this script's folder)
from small_model_answers import scorers_beside, verify_at  # noqa: E402
from verify_bench import load_literal  # noqa: E402

CASES = os.path.join(ROOT, "bench", "verify_adversarial.jsonl")
QUESTION_FILES = ["data/arith_test.jsonl", "data/demo_test_l1.jsonl", "data/demo_test_l6.jsonl"]
# the commit whose verify.py was current when each batch was written (batch 1: before issue 30)
WRITTEN_AFTER = {1: "6cc20dd", 2: "f51c9eb", 3: "b08f208", 4: "e94585b", 5: "d6f6659", 6: "77c9a8d", 7: "ec131c5",
                 8: "0c6f0ef"}


def tally(rows, score):
    """Per batch (and all batches) and class: [wrong accepted, wrong, right refused, right], and the
    rows it gets wrong. score(row) -> 0.0 or 1.0."""
    table, missed = {}, []
    for r in rows:
        got = score(r) == 1.0
        right = r["label"] == "right"
        for batch in (str(r["batch"]), "all"):
            cell = table.setdefault(batch, {}).setdefault(r["class"], [0, 0, 0, 0])
            cell[2 * right + 1] += 1
            cell[2 * right] += got != right
        if got != right:
            missed.append([r["batch"], r["class"], r["label"], r["gold"], r["completion"]])
    return table, missed


def totals(table):
    out = {}
    for batch, classes in table.items():
        fa, wrong, refused, right = (sum(c[k] for c in classes.values()) for k in range(4))
        out[batch] = {"wrong_accepted": fa, "wrong": wrong, "right_refused": refused, "right": right,
                      "wrong_accepted_share": fa / wrong if wrong else None,
                      "right_refused_share": refused / right if right else None}
    return out


def said_back_rows():
    """(completion, gold) for every expression question of the question files in every wrapper."""
    wrappers = load_literal("test_verify_said_back.py", "WRAPPERS")
    expression_re = load_literal("test_verify_said_back.py", "EXPRESSION_RE")
    rows = []
    for path in QUESTION_FILES:
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            for row in map(json.loads, f):
                m = re.fullmatch(expression_re, row["question"])
                if m:
                    bracketed = re.sub(r"\d+", r"(\g<0>)", m.group(1))  # '(9) + (4)'
                    rows += [(w.format(e=m.group(1), p=bracketed), row["answer"]) for w in wrappers]
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="6cc20dd", help="the commit whose verify.py is 'before'")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "verify_adversarial.json"))
    args = ap.parse_args()
    with open(CASES, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    scorers = scorers_beside(verify_at(args.before))
    then = {batch: verify_at(commit) for batch, commit in WRITTEN_AFTER.items()}
    said = said_back_rows()
    results = {"rows": len(rows), "machine": cpu_name(), "before": args.before, "written_after": WRITTEN_AFTER,
               "said_back": {"cases": len(said)}}
    names = {"verify": "verify.py now", "verify_when_written": "when written",
             "verify_before": "verify.py at " + args.before, "math_verify": "math-verify"}
    columns = {"verify": lambda r: scorers["verify"](r["completion"], r["gold"]),
               "verify_when_written": lambda r: then[r["batch"]].score(r["completion"], r["gold"])[0]}
    columns.update({name: (lambda r, s=score: s(r["completion"], r["gold"]))
                    for name, score in scorers.items() if name != "verify"})
    for name, score in columns.items():
        table, missed = tally(rows, score)
        results[name] = {"per_class": table, "totals": totals(table)}
        if name in ("verify", "verify_when_written"):  # the rows verify.py gets wrong, now and when written
            results[name]["missed"] = missed
        if name in scorers:
            results["said_back"][name] = sum(scorers[name](c, g) == 1.0 for c, g in said)
    batches = sorted({str(r["batch"]) for r in rows}) + ["all"]  # 'all': each row by its own column
    for batch in batches:
        classes = sorted({r["class"] for r in rows if str(r["batch"]) == batch or batch == "all"})
        print("batch %s: wrong answers accepted / wrong, right answers refused / right" % batch)
        print("%-18s" % "class" + "".join("%24s" % names[n] for n in columns))
        for cls in classes + ["all"]:
            cells = []
            for name in columns:
                if cls == "all":
                    t = results[name]["totals"][batch]
                    c = [t["wrong_accepted"], t["wrong"], t["right_refused"], t["right"]]
                else:
                    c = results[name]["per_class"][batch][cls]
                cells.append("%3d/%-3d  %3d/%-3d" % tuple(c))
            print("%-18s" % cls + "".join("%24s" % c for c in cells))
        print()
    print("the question said back, %d completions: accepted %s" % (len(said), ", ".join(
        "%s %d" % (names[n], results["said_back"][n]) for n in scorers)))
    write_results(args.json, results, indent=1)


if __name__ == "__main__":
    main()
