"""Generate an arithmetic task with difficulty levels 1..6 as JSONL.

Small models need problems they can solve (reward signal for GRPO) and problems they cannot
(the hard problems P2O works on), offline. Levels:
  1  one-step addition/subtraction of numbers up to 20
  2  two-digit addition/subtraction, two-digit times a small number
  3  multi-step expressions with parentheses, small numbers
  4  multi-step expressions with larger numbers and exact division, short word problems
  5  several operations, 3-4 digit multiplication, fraction answers (a/b in lowest terms)
  6  a defined constant: "What is 14 * k?" where, in this task, k = 0 (so every answer is 0). Nothing
     in a question says so; only a template (or a policy trained on the task) knows it. This is
     the P2O demo's hard level: a fact that only a template states (context distillation)

Each row: {"id": "arith-L3-00042", "question": ..., "answer": "exact string", "level": 3}.
Answers are computed exactly with fractions.Fraction on the expression tree (never eval).

    python data/make_arith.py --n 2000 --levels 1-5 --seed 0 --out data/arith_train.jsonl
    python data/make_arith.py --n 200 --levels 1-5 --seed 1 --exclude data/arith_train.jsonl \
        --id-prefix arith-test --out data/arith_test.jsonl
"""
import argparse
import json
import random
import sys
from fractions import Fraction

# --- expression trees: a leaf is an int, a node is (op, left, right) ---

PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def fail(message):
    """Bad input: one clear line and exit code 2, no traceback."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def evaluate(node):
    if isinstance(node, int):
        return Fraction(node)
    op, left, right = node
    a, b = evaluate(left), evaluate(right)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        raise ZeroDivisionError
    return a / b


def render(node):
    """Print with only the parentheses precedence needs, so level 3+ also tests precedence."""
    if isinstance(node, int):
        return str(node)
    op, left, right = node
    ls, rs = render(left), render(right)
    if not isinstance(left, int) and PRECEDENCE[left[0]] < PRECEDENCE[op]:
        ls = f"({ls})"
    # a - (b + c) and a / (b * c) need parentheses on the right even at equal precedence
    if not isinstance(right, int) and (PRECEDENCE[right[0]] < PRECEDENCE[op]
                                       or (PRECEDENCE[right[0]] == PRECEDENCE[op] and op in "-/")):
        rs = f"({rs})"
    return f"{ls} {op} {rs}"


def random_tree(rng, n_operands, ops, lo, hi):
    """Random binary tree shape over n_operands leaves drawn from [lo, hi]."""
    if n_operands == 1:
        return rng.randint(lo, hi)
    k = rng.randint(1, n_operands - 1)
    return (rng.choice(ops), random_tree(rng, k, ops, lo, hi),
            random_tree(rng, n_operands - k, ops, lo, hi))


def exact_division(rng, q_lo, q_hi, d_lo, d_hi):
    """A division node whose result is a whole number: (q*d) / d."""
    q, d = rng.randint(q_lo, q_hi), rng.randint(d_lo, d_hi)
    return ("/", q * d, d)


def insert_leaf(rng, tree, new_leaf):
    """Replace one random leaf of tree by new_leaf (used to put an exact division inside)."""
    if isinstance(tree, int):
        return new_leaf
    op, left, right = tree
    if rng.random() < 0.5:
        return (op, insert_leaf(rng, left, new_leaf), right)
    return (op, left, insert_leaf(rng, right, new_leaf))


def format_answer(value):
    """Integers as '42', others as 'a/b' in lowest terms (Fraction already reduces)."""
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value.numerator}/{value.denominator}"


PHRASES = ["What is {}?", "Compute {}.", "Calculate {}.", "Evaluate {}."]


def ask(expr):
    # phrasing is a function of the expression, so one problem has exactly one question text
    # and comparing question texts is enough to keep train and test apart
    return PHRASES[sum(map(ord, expr)) % len(PHRASES)].format(expr)


# --- one generator per level; each returns (question, answer) ---

def level1(rng):
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    op = rng.choice("+-")
    if op == "-" and a < b:
        a, b = b, a  # keep level 1 free of negative numbers
    expr = f"{a} {op} {b}"
    return ask(expr), format_answer(evaluate((op, a, b)))


def level2(rng):
    op = rng.choice("+-*")
    if op == "*":
        a, b = rng.randint(10, 99), rng.randint(2, 19)
    else:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if op == "-" and a < b:
            a, b = b, a
    expr = f"{a} {op} {b}"
    return ask(expr), format_answer(evaluate((op, a, b)))


def level3(rng):
    while True:
        tree = random_tree(rng, rng.randint(3, 4), "+-*", 1, 20)
        expr = render(tree)
        value = evaluate(tree)
        if "(" in expr and abs(value) <= 2000:
            return ask(expr), format_answer(value)


NAMES = ["Ava", "Ben", "Chen", "Dana", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena"]


def word_problem4(rng):
    name = rng.choice(NAMES)
    kind = rng.randrange(5)
    if kind == 0:
        a, b = rng.randint(3, 15), rng.randint(6, 24)
        c = rng.randint(1, a * b - 1)
        q = (f"A baker makes {a} trays of {b} cookies each and sells {c} cookies. "
             f"How many cookies are left?")
        return q, str(a * b - c)
    if kind == 1:
        b, c = rng.randint(2, 12), rng.randint(2, 9)
        a = b * c + rng.randint(0, 60)
        q = (f"{name} has {a} marbles and gives {b} marbles to each of {c} friends. "
             f"How many marbles does {name} have left?")
        return q, str(a - b * c)
    if kind == 2:
        s, h, t = rng.randint(40, 120), rng.randint(2, 9), rng.randint(10, 200)
        q = (f"A train travels at {s} km per hour for {h} hours and then another {t} km. "
             f"How many km does it travel in total?")
        return q, str(s * h + t)
    if kind == 3:
        n, each, more = rng.randint(3, 12), rng.randint(4, 25), rng.randint(2, 15)
        q = (f"{n} students share {n * each} pencils equally. Then each student buys {more} more "
             f"pencils. How many pencils does each student have now?")
        return q, str(each + more)
    d, bags, p = rng.randint(3, 12), rng.randint(5, 40), rng.randint(2, 9)
    q = (f"A shop packs {d * bags} apples into bags of {d} and sells each bag for {p} dollars. "
         f"How many dollars does it earn by selling all the bags?")
    return q, str(bags * p)


def level4(rng):
    if rng.random() < 0.4:
        return word_problem4(rng)
    while True:
        tree = random_tree(rng, rng.randint(3, 4), "+-*", 5, 150)
        if rng.random() < 0.6:
            tree = insert_leaf(rng, tree, exact_division(rng, 2, 40, 2, 15))
        expr = render(tree)
        value = evaluate(tree)
        if value.denominator == 1 and abs(value) <= 100000:
            return ask(expr), format_answer(value)


def level5(rng):
    kind = rng.randrange(3)
    if kind == 0:
        # long multiplication plus one more operation
        a, b, c = rng.randint(100, 9999), rng.randint(100, 999), rng.randint(10, 999)
        tree = (rng.choice("+-"), ("*", a, b), c)
        expr = render(tree)
        return ask(expr), format_answer(evaluate(tree))
    if kind == 1:
        # several operations on fractions; answer is a fraction in lowest terms
        while True:
            parts = []
            for _ in range(rng.randint(2, 3)):
                den = rng.randint(2, 12)
                parts.append(("/", rng.randint(1, 3 * den), den))
            tree = parts[0]
            for part in parts[1:]:
                tree = (rng.choice("+-*"), tree, part)
            if rng.random() < 0.5:
                tree = (rng.choice("*-+"), tree, rng.randint(2, 9))
            value = evaluate(tree)
            if value.denominator != 1 and abs(value.numerator) < 10000 and value.denominator < 1000:
                break
        expr = render(tree)
        q = f"{ask(expr)} Give the answer as a fraction in lowest terms."
        return q, format_answer(value)
    # five operands with division that need not come out even
    while True:
        tree = random_tree(rng, 5, "+-*/", 2, 60)
        try:
            value = evaluate(tree)
        except ZeroDivisionError:
            continue
        expr = render(tree)
        if "/" in expr and abs(value.numerator) < 100000 and value.denominator < 1000:
            q = ask(expr)
            if value.denominator != 1:
                q += " Give the answer as a fraction in lowest terms."
            return q, format_answer(value)


K_VALUE = 0  # level 6's constant; data/demo_templates.txt states it
L6_MAX = 99  # level 6's largest factor: 98 distinct problems; --l6-max widens it for larger files


def level6(rng, l6_max=L6_MAX):
    """A question about the task's constant k; the answer needs its value, which the question omits."""
    a = rng.randint(2, l6_max)
    # only "a * k": an "a + k" form was answerable by echoing a, which the policy does by habit
    return ask(f"{a} * k"), format_answer(evaluate(("*", a, K_VALUE)))


LEVELS = {1: level1, 2: level2, 3: level3, 4: level4, 5: level5, 6: level6}


def parse_levels(text):
    """'1-5' or '1,3,5' -> [1, 2, 3, 4, 5] / [1, 3, 5]."""
    try:
        if "-" in text:
            lo, hi = (int(x) for x in text.split("-"))
            levels = list(range(lo, hi + 1))
        else:
            levels = [int(x) for x in text.split(",")]
    except ValueError:
        levels = []
    if not levels or any(level not in LEVELS for level in levels):
        fail(f"--levels {text!r}: use a range like 1-5 or a list like 1,3 (levels are 1..6)")
    return levels


def read_questions(path):
    """Questions already used in another file (train), so a test set never repeats them."""
    questions = set()
    try:
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        questions.add(json.loads(line)["question"])
                    except (ValueError, KeyError, TypeError):
                        fail(f"{path}:{lineno}: expected a JSON object with a question field")
    except OSError as e:
        fail(f"--exclude {path}: {e.strerror}")
    return questions


def generate(n, levels, seed, exclude=(), id_prefix="arith", l6_max=L6_MAX):
    """n rows cycling through levels; duplicates and excluded problems are redrawn."""
    rng = random.Random(seed)
    makers = {**LEVELS, 6: lambda r: level6(r, l6_max)}
    seen = set(exclude)
    rows = []
    for i in range(n):
        level = levels[i % len(levels)]
        for _ in range(10000):
            question, answer = makers[level](rng)
            if question not in seen:
                break
        else:
            fail(f"level {level} ran out of distinct problems after {i} rows; ask for fewer rows (--n)")
        seen.add(question)
        rows.append({"id": f"{id_prefix}-L{level}-{i:05d}", "question": question,
                     "answer": answer, "level": level})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="number of rows")
    ap.add_argument("--levels", default="1-5", help="difficulty levels: range 1-5 or list 1,3")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="output .jsonl")
    ap.add_argument("--exclude", action="append", default=[],
                    help="JSONL from this script whose problems must not appear (repeatable)")
    ap.add_argument("--id-prefix", default="arith")
    ap.add_argument("--l6-max", type=int, default=L6_MAX,
                    help=f"largest factor n in level 6's 'n * k' (default {L6_MAX}: 98 distinct problems)")
    args = ap.parse_args()
    if args.n < 1:
        fail("--n must be at least 1")
    if args.l6_max < 2:
        fail("--l6-max must be at least 2")
    exclude = set()
    for path in args.exclude:
        exclude |= read_questions(path)
    rows = generate(args.n, parse_levels(args.levels), args.seed, exclude, args.id_prefix, args.l6_max)
    try:
        with open(args.out, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    except OSError as e:
        fail(f"--out {args.out}: {e.strerror}")
    counts = {lvl: sum(r["level"] == lvl for r in rows) for lvl in sorted({r["level"] for r in rows})}
    print(f"wrote {len(rows)} rows to {args.out} (per level: {counts})")


if __name__ == "__main__":
    main()
