"""verify.py on what a small model really writes: labelled completions of the kit's own runs.

bench/small_model_answers.jsonl holds completions of SmolLM2-135M-Instruct from demo-sized runs
of p2o.py (training rollouts and held-out evaluations), each labelled by a person: "right" when
a careful reader takes it as stating the gold answer, "wrong" when not. They were mined (--mine)
from rows that verify.py as it was at --before scores 0 although the text contains the gold (the
rewards that refuse right answers, and the wrong answers beside them that must stay refused), from
rows it scores 1 although the text ends on another number (rewards that accept wrong answers), and
from every row that verify.py now scores otherwise than then.

    python bench/small_model_answers.py --mine runs/demo-A runs/demo-B > candidates.jsonl
    python bench/small_model_answers.py                  # verify.py now, before, and math-verify

The bench scores every row with verify.py as it is, with verify.py as it was at --before (read
from git), and with math-verify (bench/requirements.txt; skipped when it is not installed), and
counts right answers refused and wrong answers accepted. Writes results/small_model_answers.json.
"""
import argparse
import glob
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from fractions import Fraction

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from results_file import write_results  # noqa: E402  (bench/ is this script's folder)
import verify  # noqa: E402

COLLECTION = os.path.join(ROOT, "bench", "small_model_answers.jsonl")
# a number token, whole: '13' is in '9 + 4 = 13.' but not in '113', '3.13', '19.13.13' or '12:13'
TOKEN = re.compile(r"(?<![\d.:])-?\d+(?:\.\d+)?(?:/\d+)?(?![\d]|[.:]\d)")


def states(text, gold):
    """Whether a number in text equals a plain-number gold (for other golds: the gold string)."""
    try:
        value = Fraction(gold.strip())
    except ValueError:
        return gold.strip() in text
    return any(Fraction(t) == value for t in TOKEN.findall(text) if not t.endswith("/0"))


def run_rows(run):
    """(completion, gold, question, reward, source) of a run's training rollouts and evaluations."""
    name = os.path.relpath(run, ROOT) if run.startswith(ROOT) else run
    path = os.path.join(run, "completions.jsonl")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for r in map(json.loads, f):
                yield r["completion"], r["answer"], r["question"], r["reward"], "%s step %d" % (name, r["step"])
    for path in sorted(glob.glob(os.path.join(run, "evals", "step_*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for r in map(json.loads, f):
                where = "%s eval %s step %d" % (name, r["benchmark"], r["step"])
                yield r["greedy_completion"], r["gold"], r["question"], r["greedy_correct"], where
                for text, ok in zip(r.get("sample_completions") or [], r.get("sample_correct") or []):
                    yield text, r["gold"], r["question"], ok, where + " sampled"


def mine(runs, before):
    """Rows to label: scored 0 by verify.py at `before` but stating the gold, scored 1 by it but
    ending on another number, and every row verify.py now scores otherwise than at `before`.
    (Scored again: a run's logged reward may come from another verify.py.)"""
    seen = set()
    for run in runs:
        for text, gold, question, _, source in run_rows(run):
            reward = before.score(text, gold)[0]
            numbers = TOKEN.findall(text)
            suspect = (reward == 0 and states(text, gold)) or (
                reward == 1 and numbers and not states(numbers[-1], gold)) or (
                verify.score(text, gold)[0] != reward)
            if suspect and (text, gold) not in seen:
                seen.add((text, gold))
                print(json.dumps({"completion": text, "gold": gold, "question": question,
                                  "label": "", "why": "", "scored_then": reward, "source": source}))


def verify_at(ref):
    """verify.py as it was at a git commit, imported from a temporary copy."""
    code = subprocess.run(["git", "show", "%s:verify.py" % ref], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "verify.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(code)
    spec = importlib.util.spec_from_file_location("verify_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scorers_beside(before):
    """{name: score(completion, gold) -> 0.0 or 1.0}: verify.py now, `before` (verify_at's module),
    and math-verify when it is installed."""
    scorers = {"verify": lambda c, g: verify.score(c, g)[0],
               "verify_before": lambda c, g: before.score(c, g)[0]}
    try:
        from verify_bench import math_verify_score
        scorers["math_verify"] = math_verify_score()
        scorers["math_verify"]("1", "1")
    except ImportError:
        print("math-verify is not installed: its column is left out (pip install -r bench/requirements.txt)")
        scorers.pop("math_verify", None)
    return scorers


def tally(rows, score):
    """Right answers refused and wrong answers accepted by score(completion, gold) -> 0.0/1.0."""
    refused, accepted = [], []
    for r in rows:
        got = score(r["completion"], r["gold"]) == 1.0
        if r["label"] == "right" and not got:
            refused.append(r["completion"][-120:])
        if r["label"] == "wrong" and got:
            accepted.append(r["completion"][-120:])
    right = sum(r["label"] == "right" for r in rows)
    wrong = len(rows) - right
    classes = {}  # right answers accepted per class (the label's 'why' up to its ':')
    for r in rows:
        if r["label"] == "right":
            name = r["why"].split(":")[0]
            hit, total = classes.get(name, (0, 0))
            classes[name] = (hit + (score(r["completion"], r["gold"]) == 1.0), total + 1)
    return {"right": right, "right_accepted": right - len(refused), "right_accepted_per_class": classes,
            "right_accepted_share": (right - len(refused)) / right if right else None,
            "wrong": wrong, "false_accepts": len(accepted),
            "refused": refused, "false_accepted": accepted}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mine", nargs="+", metavar="RUN", help="print rows of these runs to label, then stop")
    ap.add_argument("--before", default="826aa94", help="the commit whose verify.py is 'before'")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "small_model_answers.json"))
    args = ap.parse_args()
    if args.mine:
        mine(args.mine, verify_at(args.before))
        return
    with open(COLLECTION, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    bad = [r for r in rows if r["label"] not in ("right", "wrong")]
    if bad:
        sys.exit("%s: %d rows without a 'right'/'wrong' label" % (COLLECTION, len(bad)))
    scorers = scorers_beside(verify_at(args.before))
    results = {"rows": len(rows), "before": args.before,
               "sources": sorted({r["source"].split(" ")[0] for r in rows}),
               **{name: tally(rows, score) for name, score in scorers.items()}}
    print("%d labelled completions (%d right, %d wrong) from %d runs"
          % (len(rows), results["verify"]["right"], results["verify"]["wrong"], len(results["sources"])))
    print("%-24s %22s %14s" % ("", "right answers accepted", "false accepts"))
    for name in scorers:
        t = results[name]
        print("%-24s %14d/%-3d (%3.0f%%) %10d/%-3d" % (
            name.replace("_before", " at " + args.before), t["right_accepted"], t["right"],
            100 * t["right_accepted_share"], t["false_accepts"], t["wrong"]))
    names = sorted({c for name in scorers for c in results[name]["right_accepted_per_class"]})
    print("\nright answers accepted, per class: " + ", ".join(names))
    for name in scorers:
        per = results[name]["right_accepted_per_class"]
        print("%-24s %s" % (name.replace("_before", " at " + args.before),
                            "  ".join("%d/%d" % per.get(c, (0, 0)) for c in names)))
    write_results(args.json, results, indent=1)


if __name__ == "__main__":
    main()
