"""Benchmark verify.py against math-verify (the peer) on the labelled cases of tests/test_verify.py.

Measures, in one run on this machine:
  - accuracy: the share of labelled (pred, gold, equal) cases each verifier gets right, per class;
  - throughput: is_equiv calls per second on the numeric cases and on the symbolic ones
    (math-verify: parse both sides + verify, which is what a reward function has to do).
Prints a table and writes bench/results/verify.json.

    python bench/verify_bench.py            # needs sympy, math-verify (bench/requirements.txt)
"""
import ast
import importlib.metadata
import json
import os
import platform
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import verify  # noqa: E402

NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")


def load_cases():
    """CASES from tests/test_verify.py, read as a literal (no pytest import needed)."""
    path = os.path.join(ROOT, "tests", "test_verify.py")
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "CASES" for t in node.targets):
            return ast.literal_eval(node.value)
    sys.exit("%s: no CASES = [...] literal found; the bench reads its labelled cases from there" % path)


def math_verify_equiv():
    """is_equiv-like function built from math-verify's documented parse/verify API."""
    from math_verify import parse, verify as mv_verify

    def read(s):
        parsed = parse("$%s$" % s)  # math-verify finds LaTeX inside math delimiters
        return parsed if parsed else parse(s)

    def equiv(pred, gold):
        try:
            return bool(mv_verify(read(gold), read(pred)))
        except Exception:  # noqa: BLE001 - a crash counts as 'not equal', as in a reward fn
            return False
    return equiv


def accuracy(cases, equiv):
    per_class, wrong = {}, []
    for kind, pred, gold, equal in cases:
        ok = equiv(pred, gold) is equal
        hits, total = per_class.get(kind, (0, 0))
        per_class[kind] = (hits + ok, total + 1)
        if not ok:
            wrong.append([kind, pred, gold, equal])
    right = sum(h for h, _ in per_class.values())
    return right / len(cases), per_class, wrong


def throughput(pairs, equiv, seconds=1.5):
    """Calls per second over the pairs, repeated until `seconds` have passed."""
    equiv(*pairs[0])  # warm up (starts verify.py's worker, imports math-verify's grammar)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for pred, gold in pairs:
            equiv(pred, gold)
        calls += len(pairs)
    return calls / (time.perf_counter() - start)


def main():
    cases = load_cases()
    mv = math_verify_equiv()
    ours = verify.is_equiv
    acc_ours, class_ours, wrong_ours = accuracy(cases, ours)
    acc_mv, class_mv, wrong_mv = accuracy(cases, mv)

    def is_numeric(case):
        return NUMBER.fullmatch(verify.normalize(case[1])) and NUMBER.fullmatch(verify.normalize(case[2]))
    numeric = [(c[1], c[2]) for c in cases if is_numeric(c)]
    symbolic = [(c[1], c[2]) for c in cases if not is_numeric(c)]
    completions = [("Step by step ... so the answer is \\boxed{%s}." % p, g) for p, g in numeric]
    speed = {
        "verify_numeric": throughput(numeric, ours),
        "math_verify_numeric": throughput(numeric, mv),
        "verify_symbolic": throughput(symbolic, ours),
        "math_verify_symbolic": throughput(symbolic, mv),
        "verify_score_numeric": throughput(completions, verify.score),
    }
    verify.shutdown_worker()

    print("labelled cases: %d (%d numeric, %d symbolic)" % (len(cases), len(numeric), len(symbolic)))
    print("%-12s %14s %14s" % ("class", "verify.py", "math-verify"))
    for kind in class_ours:
        (h1, n), (h2, _) = class_ours[kind], class_mv[kind]
        print("%-12s %10d/%-3d %10d/%-3d" % (kind, h1, n, h2, n))
    print("%-12s %13.1f%% %13.1f%%" % ("accuracy", 100 * acc_ours, 100 * acc_mv))
    print()
    print("%-24s %14s %14s %8s" % ("throughput (calls/s)", "verify.py", "math-verify", "ratio"))
    for kind in ("numeric", "symbolic"):
        a, b = speed["verify_" + kind], speed["math_verify_" + kind]
        print("%-24s %14.0f %14.0f %7.1fx" % ("is_equiv " + kind, a, b, a / b))
    print("%-24s %14.0f %14s" % ("score numeric", speed["verify_score_numeric"], "-"))
    print()
    for name, wrong in (("verify.py", wrong_ours), ("math-verify", wrong_mv)):
        print("%s gets wrong: %s" % (name, "; ".join("%s %r vs %r (label %s)" % tuple(w) for w in wrong) or "none"))

    results = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count()},
        "versions": {"sympy": importlib.metadata.version("sympy"),
                     "math-verify": importlib.metadata.version("math-verify")},
        "cases": {"total": len(cases), "numeric": len(numeric), "symbolic": len(symbolic)},
        "accuracy": {"verify": acc_ours, "math_verify": acc_mv},
        "accuracy_per_class": {k: {"verify": class_ours[k][0] / class_ours[k][1],
                                   "math_verify": class_mv[k][0] / class_mv[k][1],
                                   "cases": class_ours[k][1]} for k in class_ours},
        "wrong": {"verify": wrong_ours, "math_verify": wrong_mv},
        "calls_per_second": {k: round(v, 1) for k, v in speed.items()},
        "speed_ratio": {"numeric": speed["verify_numeric"] / speed["math_verify_numeric"],
                        "symbolic": speed["verify_symbolic"] / speed["math_verify_symbolic"]},
        "targets": {"accuracy_above_math_verify": acc_ours > acc_mv,
                    "numeric_calls_per_second_at_least_20000": speed["verify_numeric"] >= 20_000},
    }
    out = os.path.join(ROOT, "bench", "results", "verify.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    print("wrote", os.path.relpath(out, ROOT))


if __name__ == "__main__":
    main()
