"""data/: the arithmetic generator and the files it made."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import p2o
import verify

ROOT = Path(__file__).resolve().parent.parent


def read(path):
    return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]


def test_shipped_files_are_what_the_generator_makes(tmp_path):
    """Regenerating with the README's commands gives byte-identical files."""
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    gen = [sys.executable, str(ROOT / "data" / "make_arith.py")]
    subprocess.run(gen + ["--n", "2000", "--levels", "1-5", "--seed", "0", "--out", str(train)], check=True,
                   capture_output=True)
    subprocess.run(gen + ["--n", "200", "--levels", "1-5", "--seed", "1", "--exclude", str(train), "--id-prefix",
                          "arith-test", "--out", str(test)], check=True, capture_output=True)
    assert train.read_bytes() == (ROOT / "data" / "arith_train.jsonl").read_bytes()
    assert test.read_bytes() == (ROOT / "data" / "arith_test.jsonl").read_bytes()


def test_gold_answers_verify_and_splits_are_disjoint():
    train, test = read(ROOT / "data" / "arith_train.jsonl"), read(ROOT / "data" / "arith_test.jsonl")
    assert {r["level"] for r in train} == {1, 2, 3, 4, 5}
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    for r in train[:300] + test:
        assert verify.score(f"So the result is \\boxed{{{r['answer']}}}.", r["answer"])[0] == 1.0, r
    assert verify.score("\\boxed{12345678}", train[0]["answer"])[0] == 0.0
    assert len(p2o.load_problems(str(ROOT / "data" / "arith_test.jsonl"))) == 200  # the trainer reads them


def test_generator_rejects_bad_flags(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "data" / "make_arith.py"), "--n", "0", "--out",
                        str(tmp_path / "x.jsonl")], capture_output=True, text=True)
    assert r.returncode == 2 and "--n" in r.stderr


DEMO_FILES = [  # (flags, file): the demo's data, as data/README.md regenerates it
    (["--n", "24", "--levels", "1,6", "--seed", "2", "--exclude", "data/arith_test.jsonl", "--id-prefix", "demo"],
     "demo_train.jsonl"),
    (["--n", "24", "--levels", "1", "--seed", "3", "--exclude", "data/demo_train.jsonl", "--id-prefix", "demo-test"],
     "demo_test_l1.jsonl"),
    (["--n", "24", "--levels", "6", "--seed", "4", "--exclude", "data/demo_train.jsonl", "--id-prefix", "demo-test"],
     "demo_test_l6.jsonl"),
    (["--n", "240", "--levels", "1,6", "--seed", "5", "--l6-max", "999", "--exclude", "data/demo_test_l1.jsonl",
      "--exclude", "data/demo_test_l6.jsonl", "--id-prefix", "demo-big"], "demo_train_240.jsonl"),
]


@pytest.mark.parametrize("flags, name", DEMO_FILES)
def test_demo_files_are_what_the_generator_makes(tmp_path, flags, name):
    out = tmp_path / name
    subprocess.run([sys.executable, str(ROOT / "data" / "make_arith.py"), *flags, "--out", str(out)], check=True,
                   capture_output=True, cwd=ROOT)
    assert out.read_bytes() == (ROOT / "data" / name).read_bytes()


def test_level6_needs_the_constant_and_the_seed_templates_state_it():
    train = read(ROOT / "data" / "demo_train.jsonl") + read(ROOT / "data" / "demo_train_240.jsonl")
    tests = read(ROOT / "data" / "demo_test_l1.jsonl") + read(ROOT / "data" / "demo_test_l6.jsonl")
    big = read(ROOT / "data" / "demo_train_240.jsonl")
    assert len({r["question"] for r in big if r["level"] == 6}) == 120  # more than the 98 of factors up to 99
    assert not {r["question"] for r in train} & {r["question"] for r in tests}
    for r in train + tests:
        if r["level"] == 6:  # "a * k" -> 0: the value of k is nowhere in the question
            a, op = int(r["question"].split()[-3]), r["question"].split()[-2]
            assert op == "*" and r["answer"] == "0" and "0" not in r["question"].replace(str(a), "")
        assert verify.score(f"\\boxed{{{r['answer']}}}", r["answer"])[0] == 1.0
    templates = p2o.load_templates(str(ROOT / "data" / "demo_templates.txt"))
    assert len(templates) == 3 and all("k = 0" in t or "k stands for 0" in t for t in templates)
