"""Benchmark verify.py against math-verify (the peer), both run in this process on this machine.

Measures, in one run:
  - accuracy on the labelled cases of tests/test_verify.py, per class;
  - accuracy on math-verify's own public test cases (tests/test_verify_peer.py): agreement with the
    peer's labels, and with the labels after the corrections argued there;
  - accuracy on real answers (needs ../shared/benchmarks): golds of MATH-500, OlympiadBench,
    DeepMath and AIME rewritten the ways models write them (must be accepted) and near misses
    (a digit changed, a sign flipped, an interval end changed: must be refused);
  - calls per second: is_equiv on numeric and on symbolic labelled cases; score() on real mixed
    completions (MATH-500 and GSM8K worked solutions against their golds: mostly the same string
    as the gold) and on the real rewrites and near misses above (mostly symbolic work);
  - fairness: 8 threads of ordinary symbolic checks while a 9th sends an answer that always runs
    out its deadline - how many right answers came back 0.0;
  - hostile inputs: the worst time of one score() call over built attacks, and that none ran code.
Prints tables and writes bench/results/verify.json.

    python bench/verify_bench.py            # needs sympy, math-verify (bench/requirements.txt)
"""
import ast
import importlib.metadata
import json
import os
import platform
import random
import re
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from results_file import write_results  # noqa: E402  (bench/ is this script's folder)
import verify  # noqa: E402

NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")
BENCH = os.path.join(os.path.dirname(ROOT), "shared", "benchmarks")


def load_literal(filename, name):
    """A literal assigned at the top of a test file, read with ast (no pytest import needed)."""
    path = os.path.join(ROOT, "tests", filename)
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    sys.exit("%s: no %s = ... literal found; the bench reads its cases from there" % (path, name))


def load_cases():
    return load_literal("test_verify.py", "CASES")


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


def math_verify_score(settings=None):
    """score-like function from math-verify's parse/verify: both texts parsed, gold first.

    settings(origin) may give (extraction configs, float_rounding) for a peer test case, so each
    case runs under the settings math-verify's own test ran it with."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify as mv_verify

    def score(completion, gold, origin=""):
        try:
            if not origin:  # a bare gold answer: math-verify reads LaTeX inside math delimiters
                gold = gold if "$" in gold or "\\boxed" in gold else "$%s$" % gold
                return float(bool(mv_verify(parse(gold), parse(completion))))
            if "test_yujianll" in origin:
                return float(bool(mv_verify(parse(gold), parse(completion))))
            configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
            m = re.search(r"precision=(\d+)", origin)
            rounding = int(m.group(1)) if m else 6
            return float(bool(mv_verify(parse(gold, configs), parse(completion, configs),
                                        float_rounding=rounding)))
        except Exception:  # noqa: BLE001 - a crash counts as 'not equal', as in a reward fn
            return 0.0
    return score


def peer_suite(mv_score):
    """verify.py and math-verify on math-verify's public test cases (tests/test_verify_peer.py)."""
    cases = load_literal("test_verify_peer.py", "PEER_CASES")
    argued = load_literal("test_verify_peer.py", "ARGUED")
    out = {"cases": len(cases), "argued": len(argued)}
    agree = {"verify_vs_labels": 0, "math_verify_vs_labels": 0,
             "verify_vs_corrected": 0, "math_verify_vs_corrected": 0}
    ours_wrong, theirs_wrong = [], []
    for origin, gold, pred, label in cases:
        corrected = 1 - label if (gold, pred) in argued else label
        ours = verify.score(pred, verify.extract_answer(gold) or gold)[0]
        theirs = mv_score(pred, gold, origin)
        agree["verify_vs_labels"] += ours == label
        agree["math_verify_vs_labels"] += theirs == label
        agree["verify_vs_corrected"] += ours == corrected
        agree["math_verify_vs_corrected"] += theirs == corrected
        if ours != corrected:
            ours_wrong.append([origin, gold[:120], pred[-120:], corrected])
        if theirs != corrected:
            theirs_wrong.append([origin, gold[:120], pred[-120:], corrected])
    out.update(agree)
    out["verify_wrong_vs_corrected"] = ours_wrong
    out["math_verify_wrong_vs_corrected"] = theirs_wrong
    return out


def _mutations(gold):
    """Near misses of a gold: a digit changed, a sign flipped, an interval end switched."""
    out = []
    digits = list(re.finditer(r"\d", gold))
    if digits:
        d = digits[-1]
        out.append(gold[:d.start()] + str((int(d.group()) + 1) % 10) + gold[d.end():])
    if "+" in gold:
        out.append(gold.replace("+", "-", 1))
    elif gold.startswith("-"):
        out.append(gold[1:])
    if re.fullmatch(r"\(.*[^)]\)", gold) or re.fullmatch(r"\(.*\]", gold):
        out.append("[" + gold[1:])
    return [m for m in out if m != gold]


def real_answer_cases(per_set=100, seed=0):
    """(completion, gold, should_match) from real golds: rewrites (True) and near misses (False)."""
    if not os.path.isdir(BENCH):
        return []
    sources = {
        "math500": ("math500/test.jsonl", lambda r: r["answer"]),
        "olympiadbench": ("olympiadbench/test.jsonl", lambda r: ", ".join(r["final_answer"])),
        "deepmath": ("train_pools/deepmath_103k_5k.jsonl", lambda r: r["ground_truth"]),
        "aime_pool": ("train_pools/aime_1983_2023.jsonl", lambda r: str(r["answer"])),
    }
    rng, cases = random.Random(seed), []
    for name, (path, gold_of) in sources.items():
        with open(os.path.join(BENCH, path), encoding="utf-8") as f:
            golds = [g for g in (gold_of(json.loads(line)) for line in f) if g and g.strip()]
        for gold in rng.sample(golds, min(per_set, len(golds))):
            bare = gold.strip().strip("$") if gold.count("$") == 2 else gold
            forms = ["Step by step... so the answer is \\boxed{%s}." % bare,
                     "The answer is $%s$." % bare,
                     "Final Answer: The final answer is $%s$. I hope it is correct." % bare,
                     "**Answer:** $%s$" % bare]
            if "\\frac" in bare:
                forms.append("\\boxed{%s}" % bare.replace("\\frac", "\\dfrac"))
            if "(" in bare and "\\left" not in bare:
                forms.append("\\boxed{%s}" % bare.replace("(", "\\left(").replace(")", "\\right)"))
            cases += [(name, f, gold, True) for f in forms]
            cases += [(name, "\\boxed{%s}" % m, gold, False) for m in _mutations(bare)]
    return cases


def real_accuracy(cases, score):
    right, wrong, false_accepts = 0, [], 0
    for name, completion, gold, should in cases:
        got = score(completion, gold) == 1.0
        right += got == should
        false_accepts += got and not should
        if got != should:
            wrong.append([name, completion[-100:], gold[:100], should])
    return {"right": right, "cases": len(cases), "accuracy": right / len(cases) if cases else None,
            "false_accepts": false_accepts, "wrong": wrong}


def real_completions():
    """(worked solution, gold) of MATH-500 and GSM8K test: real mixed numeric and symbolic answers."""
    if not os.path.isdir(BENCH):
        return []
    pairs = []
    with open(os.path.join(BENCH, "math500/test.jsonl"), encoding="utf-8") as f:
        pairs += [(r["solution"], r["answer"]) for r in map(json.loads, f)]
    with open(os.path.join(BENCH, "gsm8k/test.jsonl"), encoding="utf-8") as f:
        pairs += [(r["answer"], r["answer"].split("####")[-1].strip()) for r in map(json.loads, f)][:500]
    random.Random(1).shuffle(pairs)
    return pairs


def fairness(threads=8, checks_per_thread=25):
    """Right answers refused while another thread keeps sending an answer that always times out."""
    pairs = [("(x+1)^2", "x^2+2x+1"), ("\\frac{1}{\\sqrt2}", "\\frac{\\sqrt2}{2}"),
             ("\\sqrt{8}", "2\\sqrt{2}"), ("\\frac{x^2-1}{x-1}", "x+1"), ("[1,2)", "[1, 2)"),
             ("\\sin^2 x + \\cos^2 x", "1"), ("(1, \\frac{1}{2})", "(1, 0.5)")]
    slow_pred = ",".join("x+%d" % k for k in range(150))
    slow_gold = ",".join("x+%d" % k for k in reversed(range(150)))
    refused, latencies, slow_calls = [], [], []
    stop = threading.Event()

    def ordinary(k):
        for j in range(checks_per_thread):
            pred, gold = pairs[(k + j) % len(pairs)]
            start = time.perf_counter()
            if not verify.is_equiv(pred, gold):
                refused.append((pred, gold))
            latencies.append(time.perf_counter() - start)

    def slow():
        while not stop.is_set():
            slow_calls.append(verify._judge(slow_pred, slow_gold, 2.0))

    verify.is_equiv("x", "x+0")  # a worker up
    slow_thread = threading.Thread(target=slow)
    slow_thread.start()
    time.sleep(0.3)
    workers = [threading.Thread(target=ordinary, args=(k,)) for k in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    slow_thread.join()
    latencies.sort()
    return {"threads": threads, "right_answers": threads * checks_per_thread, "refused": len(refused),
            "slow_calls": len(slow_calls), "slow_calls_timed_out": sum(r == (False, "timeout") for r in slow_calls),
            "latency_median_s": latencies[len(latencies) // 2], "latency_max_s": latencies[-1]}


def hostile():
    """Worst time of one score() call over built attacks, and whether any of them ran code."""
    marker = os.path.join(tempfile.mkdtemp(), "pwned")
    n = 99_000
    attacks = [
        "__import__('os').system('touch %s')" % marker, "\\boxed{eval(\"open('%s','w')\")}" % marker,
        "\\boxed{lambda: open('%s', 'w')}" % marker, "Symbol('x').__class__.__init__.__globals__",
        "\\boxed{9^{9^{9^9}}}", "\\boxed{10^{10^{10}}}", "\\boxed{100000!}", "\\boxed{x^{10^{100}}}",
        "\\boxed{2^{3^{4^{5}}}}", "\\boxed{1e99999}", "\\boxed{\\binom{10^{9}}{5}}",
        "\\boxed{%s}" % ("{" * 5000 + "1" + "}" * 5000), "1+" * 100_000,
        "answer" + " " * n + "x", "the answer is " + "\\(" * (n // 2), "####" * (n // 4), "\\boxed{" * (n // 7),
        "1," * (n // 2), "answer" + "**" * (n // 2), "answer is " + "$" * n, "answer is " * (n // 10),
        "\\boxed{" + "{" * n, "\\frac{" * (n // 6), "$" + "\\$" * (n // 2), "\\boxed{1} and " * (n // 14),
        "\n~bob" * (n // 5), "final answer is " + "$1$ and " * (n // 8), "\\\\" * (n // 2), "1or" * (n // 3),
        "12,\\!" * (n // 5), "{,}" * (n // 3), "x \\approx " * (n // 10),
        "\\boxed{" + "1:" * 400 + "1}", "\\boxed{" + "x<" * 300 + "x}", "\\boxed{" + "\\pm 1," * 150 + "}",
        "\\boxed{" + "f(" * 200 + "x" + ")" * 200 + "}", "\\boxed{\\begin{pmatrix}" + "1&" * 300 + "1\\end{pmatrix}^{99}}",
        "\\boxed{\\sum_{k=1}^{10^{100}} k}", "\\boxed{\\prod_{k=1}^{10^{6}} k}", "\\boxed{(-8)^{1/3^{99}}}",
        "\\boxed{\\lfloor 10^{9999} \\rfloor}", "\\boxed{%s}" % ",".join("x+%d" % k for k in range(150)),
    ]
    worst, worst_attack = 0.0, ""
    for attack in attacks:
        start = time.perf_counter()
        verify.score(attack, "1")
        took = time.perf_counter() - start
        if took > worst:
            worst, worst_attack = took, attack[:60]
    return {"attacks": len(attacks), "worst_s": worst, "worst_attack": worst_attack,
            "code_ran": os.path.exists(marker)}


def load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def main():
    load_before = load_average()
    cases = load_cases()
    mv = math_verify_equiv()
    mv_score = math_verify_score()
    ours = verify.is_equiv
    acc_ours, class_ours, wrong_ours = accuracy(cases, ours)
    acc_mv, class_mv, wrong_mv = accuracy(cases, mv)

    def is_numeric(case):
        return NUMBER.fullmatch(verify.normalize(case[1])) and NUMBER.fullmatch(verify.normalize(case[2]))
    numeric = [(c[1], c[2]) for c in cases if is_numeric(c)]
    symbolic = [(c[1], c[2]) for c in cases if not is_numeric(c)]
    completions = [("Step by step ... so the answer is \\boxed{%s}." % p, g) for p, g in numeric]
    real_mixed = real_completions()
    real_cases = real_answer_cases()
    rewrites = [(c, g) for _, c, g, _ in real_cases]
    speed = {
        "verify_numeric": throughput(numeric, ours),
        "math_verify_numeric": throughput(numeric, mv),
        "verify_symbolic": throughput(symbolic, ours),
        "math_verify_symbolic": throughput(symbolic, mv),
        "verify_score_numeric": throughput(completions, verify.score),
    }
    if real_mixed:
        speed["verify_score_real_mixed"] = throughput(real_mixed, verify.score, seconds=3.0)
        speed["math_verify_score_real_mixed"] = throughput(real_mixed, mv_score, seconds=3.0)
        speed["verify_score_real_rewrites"] = throughput(rewrites, verify.score, seconds=3.0)
        speed["math_verify_score_real_rewrites"] = throughput(rewrites, mv_score, seconds=3.0)
    peer = peer_suite(mv_score)
    real = {}
    if real_cases:
        real = {"verify": real_accuracy(real_cases, lambda c, g: verify.score(c, g)[0]),
                "math_verify": real_accuracy(real_cases, mv_score)}
    fair = fairness()
    attack = hostile()
    verify.shutdown_worker()
    load_after = load_average()

    print("labelled cases: %d (%d numeric, %d symbolic)" % (len(cases), len(numeric), len(symbolic)))
    print("%-14s %14s %14s" % ("class", "verify.py", "math-verify"))
    for kind in class_ours:
        (h1, n), (h2, _) = class_ours[kind], class_mv[kind]
        print("%-14s %10d/%-3d %10d/%-3d" % (kind, h1, n, h2, n))
    print("%-14s %13.1f%% %13.1f%%" % ("accuracy", 100 * acc_ours, 100 * acc_mv))
    print()
    n = peer["cases"]
    print("math-verify's public test cases: %d distinct pairs, %d labels argued wrong" % (n, peer["argued"]))
    print("%-34s %12s %12s" % ("agreement", "verify.py", "math-verify"))
    print("%-34s %8d/%-3d %8d/%-3d" % ("with math-verify's labels", peer["verify_vs_labels"], n,
                                       peer["math_verify_vs_labels"], n))
    print("%-34s %8d/%-3d %8d/%-3d" % ("with labels after argued fixes", peer["verify_vs_corrected"], n,
                                       peer["math_verify_vs_corrected"], n))
    print()
    if real:
        print("real answers (MATH-500, OlympiadBench, DeepMath, AIME golds): rewrites and near misses")
        print("%-20s %16s %16s" % ("", "verify.py", "math-verify"))
        a, b = real["verify"], real["math_verify"]
        print("%-20s %9d/%-6d %9d/%-6d" % ("right", a["right"], a["cases"], b["right"], b["cases"]))
        print("%-20s %15.1f%% %15.1f%%" % ("accuracy", 100 * a["accuracy"], 100 * b["accuracy"]))
        print("%-20s %16d %16d" % ("false accepts", a["false_accepts"], b["false_accepts"]))
        print()
    print("%-28s %14s %14s %8s" % ("throughput (calls/s)", "verify.py", "math-verify", "ratio"))
    for kind in ("numeric", "symbolic"):
        a, b = speed["verify_" + kind], speed["math_verify_" + kind]
        print("%-28s %14.0f %14.0f %7.1fx" % ("is_equiv " + kind, a, b, a / b))
    print("%-28s %14.0f %14s" % ("score numeric", speed["verify_score_numeric"], "-"))
    if real_mixed:
        a, b = speed["verify_score_real_mixed"], speed["math_verify_score_real_mixed"]
        print("%-28s %14.0f %14.0f %7.1fx" % ("score real solutions (%d)" % len(real_mixed), a, b, a / b))
        a, b = speed["verify_score_real_rewrites"], speed["math_verify_score_real_rewrites"]
        print("%-28s %14.0f %14.0f %7.1fx" % ("score real rewrites (%d)" % len(rewrites), a, b, a / b))
    print()
    print("fairness: %d threads x %d right answers with a slow answer alongside: %d refused "
          "(median %.3f s, max %.2f s; %d slow calls, %d timed out)"
          % (fair["threads"], fair["right_answers"] // fair["threads"], fair["refused"],
             fair["latency_median_s"], fair["latency_max_s"], fair["slow_calls"], fair["slow_calls_timed_out"]))
    print("hostile: %d attacks, worst %.2f s (%r), code ran: %s"
          % (attack["attacks"], attack["worst_s"], attack["worst_attack"], attack["code_ran"]))
    print("load average before/after: %s / %s (2 cores shared: timings swing with it)" % (load_before, load_after))
    print()
    for name, wrong in (("verify.py", wrong_ours), ("math-verify", wrong_mv)):
        print("%s gets wrong (labelled cases): %s" % (
            name, "; ".join("%s %r vs %r (label %s)" % tuple(w) for w in wrong) or "none"))
    print("verify.py disagrees on the peer suite (after argued fixes): %s" % (
        "; ".join("%s" % w[0] for w in peer["verify_wrong_vs_corrected"]) or "none"))

    results = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "load_average_before": load_before,
                    "load_average_after": load_after},
        "versions": {"sympy": importlib.metadata.version("sympy"),
                     "math-verify": importlib.metadata.version("math-verify")},
        "cases": {"total": len(cases), "numeric": len(numeric), "symbolic": len(symbolic)},
        "accuracy": {"verify": acc_ours, "math_verify": acc_mv},
        "accuracy_per_class": {k: {"verify": class_ours[k][0] / class_ours[k][1],
                                   "math_verify": class_mv[k][0] / class_mv[k][1],
                                   "cases": class_ours[k][1]} for k in class_ours},
        "wrong": {"verify": wrong_ours, "math_verify": wrong_mv},
        "peer_suite": peer,
        "real_answers": real,
        "calls_per_second": {k: round(v, 1) for k, v in speed.items()},
        "speed_ratio": {"numeric": speed["verify_numeric"] / speed["math_verify_numeric"],
                        "symbolic": speed["verify_symbolic"] / speed["math_verify_symbolic"]},
        "fairness": fair,
        "hostile": attack,
        "targets": {"accuracy_above_math_verify": acc_ours > acc_mv,
                    "numeric_calls_per_second_at_least_20000": speed["verify_numeric"] >= 20_000,
                    "no_right_answer_refused_under_concurrency": fair["refused"] == 0,
                    "hostile_worst_at_most_2_5_s": attack["worst_s"] <= 2.5 and not attack["code_ran"]},
    }
    if real_mixed:
        for kind in ("real_mixed", "real_rewrites"):
            results["speed_ratio"]["score_" + kind] = (speed["verify_score_" + kind]
                                                       / speed["math_verify_score_" + kind])
    write_results(os.path.join(ROOT, "bench", "results", "verify.json"), results, indent=2)


if __name__ == "__main__":
    main()
