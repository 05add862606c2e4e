"""Real benchmark files (read by path from ../shared/benchmarks, skipped when absent), bad rows,
and the evaluation protocol: greedy pass@1, avg@K, pass@K, the table and the per-problem file."""
import json
import math
from pathlib import Path

import pytest
import torch

import p2o
import verify
from conftest import load_engine, write_problems

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT.parent / "shared" / "benchmarks"
FILES = sorted(p.relative_to(BENCH).as_posix() for p in BENCH.glob("*/*.jsonl")) if BENCH.is_dir() else []
# rows with no usable gold, counted by hand: MATH train has 2 answers that are null (level 3) and 2
# that are empty (level 5, so also in the level 4-5 file)
SKIPPED = {"math/train.jsonl": 4, "math/train_hard_level4to5.jsonl": 2}
needs_bench = pytest.mark.skipif(not FILES, reason=f"{BENCH} not present")


def read_jsonl(path):
    return [json.loads(l) for l in Path(path).read_text(encoding="utf-8").splitlines() if l.strip()]


@needs_bench
def test_the_shared_folder_has_the_sets_the_readme_names():
    for name in ("gsm8k/test.jsonl", "math/train.jsonl", "math500/test.jsonl", "aime24/test.jsonl",
                 "aime25/test.jsonl", "amc23/test.jsonl", "minerva_math/test.jsonl", "olympiadbench/test.jsonl",
                 "train_pools/deepmath_103k_5k.jsonl"):
        assert name in FILES


@needs_bench
@pytest.mark.parametrize("name", FILES)
def test_every_benchmark_file_loads_with_sane_golds(name, capsys):
    path = BENCH / name
    raw = read_jsonl(path)
    probs = p2o.load_problems(str(path))
    err = capsys.readouterr().err
    skipped = SKIPPED.get(name, 0)
    assert len(probs) == len(raw) - skipped
    if skipped:
        assert f"skipped {skipped} of {len(raw)} rows" in err and err.count("warning") == 1
    else:
        assert "warning" not in err
    assert len({p["id"] for p in probs}) == len(probs)  # ids name problems in the per-problem file
    for p in probs:
        assert p["question"] and p["answer"] and p["answer"] == p["answer"].strip()
    # each set's gold field is read the way its source means it
    usable = [r for r in raw if p2o.problem_from_row(r, 0, "x") is not None]
    for r, p in zip(usable, probs):
        if isinstance(r.get("final_answer"), list):  # OlympiadBench: a list of answers
            assert p["answer"] == ", ".join(r["final_answer"]).strip()
        elif "answer" not in r and "solution" in r:  # Minerva: the last \boxed{} of the worked solution
            assert "\\boxed" in r["solution"] and p["answer"] == verify.extract_answer(r["solution"]).strip()
        elif isinstance(r.get("answer"), float):  # AMC: whole floats (27.0) read as integers (27)
            assert float(p["answer"]) == r["answer"]
            assert p["answer"] == str(int(r["answer"])) if r["answer"].is_integer() else "." in p["answer"]
        elif "ground_truth" in r and "answer" not in r:  # AIME25, DeepMath
            assert p["answer"] == str(r["ground_truth"]).strip()


@needs_bench
def test_every_eval_gold_verifies_against_itself_boxed():
    """A model that writes the gold in \\boxed{} scores 1 on every evaluation problem (checks the
    loader and the verifier together; training pools are large and checked by the test above)."""
    for name in FILES:
        if "train" in name:
            continue
        for p in p2o.load_problems(str(BENCH / name)):
            assert verify.score(f"So the answer is \\boxed{{{p['answer']}}}.", p["answer"])[0] == 1.0, (name, p["id"])


@needs_bench
def test_eval_only_on_three_benchmarks_with_samples(tiny_model, tmp_path, capsys):
    out = tmp_path / "ev"
    rc = p2o.main(["--eval-only", "--model", str(tiny_model), "--device", "cpu", "--out", str(out),
                   "--eval", str(BENCH / "math500" / "test.jsonl"), "--eval", str(BENCH / "amc23" / "test.jsonl"),
                   "--eval", f"minerva={BENCH / 'minerva_math' / 'test.jsonl'}", "--eval-limit", "3",
                   "--eval-samples", "4", "--max-new-tokens", "6", "--gen-batch-size", "8"])
    printed = capsys.readouterr().out
    assert rc == 0
    names = ["math500", "amc23", "minerva"]
    rows = read_jsonl(out / "metrics.jsonl")
    assert len(rows) == 1 and rows[0]["step"] == 0
    per_problem = read_jsonl(out / "evals" / "step_0.jsonl")
    assert [r["benchmark"] for r in per_problem] == [n for n in names for _ in range(3)]
    for name in names:
        m = {k.split("/")[-1]: v for k, v in rows[0].items() if k.startswith(f"eval/{name}/")}
        assert set(m) == {"n", "accuracy", "avg@4", "pass@4", "mean_length"} and m["n"] == 3
        mine = [r for r in per_problem if r["benchmark"] == name]
        assert all(len(r["sample_correct"]) == len(r["sample_answers"]) == len(r["sample_completions"]) == 4
                   for r in mine)
        # the logged metrics are the per-problem verdicts aggregated
        assert m["accuracy"] == pytest.approx(sum(r["greedy_correct"] for r in mine) / 3)
        assert m["avg@4"] == pytest.approx(sum(sum(r["sample_correct"]) for r in mine) / 12)
        assert m["pass@4"] == pytest.approx(sum(max(r["sample_correct"]) for r in mine) / 3)
        # the golds are the loader's, in the file a person reads
        golds = [p["answer"] for p in p2o.load_problems(str(dict(zip(names, [
            BENCH / "math500" / "test.jsonl", BENCH / "amc23" / "test.jsonl",
            BENCH / "minerva_math" / "test.jsonl"]))[name]))[:3]]
        assert [r["gold"] for r in mine] == golds
    table = (out / "evals" / "step_0.md").read_text()
    assert table.strip() in printed
    lines = [l for l in table.splitlines() if l.startswith("| ") and "benchmark" not in l]
    assert len(lines) == 3 * 3 + 3  # 3 benchmarks x (pass@1, avg@4, pass@4) + their means
    assert "| amc23 | 3 | avg@4 (T=0.6, top_p=0.95) |" in table


def test_avg_and_pass_at_k_aggregate_the_verdicts():
    greedy = [1.0, 0.0, 0.0]
    sampled = [[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 0]]
    m = p2o.eval_metrics(greedy, sampled)
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["avg@4"] == pytest.approx((2 / 4 + 0 + 3 / 4) / 3)
    assert m["pass@4"] == pytest.approx(2 / 3)
    assert set(p2o.eval_metrics([1.0, 1.0])) == {"accuracy"}


def test_integral_float_golds_read_as_integers(tmp_path):
    f = tmp_path / "nums.jsonl"
    rows = [{"question": "a", "answer": 27.0}, {"question": "b", "answer": 2.5}, {"question": "c", "answer": 7},
            {"question": "d", "final_answer": [1.0, "x"]}, {"question": "e", "answer": "27.0"}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [p["answer"] for p in p2o.load_problems(str(f))] == ["27", "2.5", "7", "1, x", "27.0"]
    assert verify.score("\\boxed{27}", "27")[0] == 1.0


def test_bad_rows_are_skipped_counted_and_named(tmp_path, capsys):
    f = tmp_path / "mixed.jsonl"
    rows = [{"question": "ok 1", "answer": "1"}, {"question": "no gold"}, {"question": "  ", "answer": "2"},
            {"problem": "blank solution", "solution": "   "}, ["not", "an", "object"],
            {"prompt": "ok 2", "ground_truth": "3"}, {"question": "empty list", "final_answer": []}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    probs = p2o.load_problems(str(f))
    assert [p["question"] for p in probs] == ["ok 1", "ok 2"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "skipped 5 of 7 rows" in err and "lines 2, 3, 4, 5, 7)" in err
    p2o.load_problems(str(f), warn=False)
    assert capsys.readouterr().err == ""
    # more than five: the first five are named
    many = tmp_path / "many.json"
    many.write_text(json.dumps([{"question": "ok", "answer": "1"}] + [{"question": f"q{i}"} for i in range(8)]))
    assert len(p2o.load_problems(str(many))) == 1
    err = capsys.readouterr().err
    assert "skipped 8 of 9 rows" in err and "items 2, 3, 4, 5, 6, ...)" in err


def test_gold_falls_through_blank_fields_and_ids_stay_unique(tmp_path):
    f = tmp_path / "ids.jsonl"
    rows = [{"id": 7, "problem": "a", "answer": "  ", "solution": "so $\\boxed{12}$"},
            {"id": 7, "problem": "b", "answer": "3"}, {"problem": "c", "answer": [" "], "ground_truth": "4"}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    probs = p2o.load_problems(str(f))
    assert [(p["id"], p["answer"]) for p in probs] == [("7", "12"), ("7:2", "3"), ("ids:3", "4")]


def test_a_file_with_nothing_usable_is_refused(tmp_path, tiny_model, capsys):
    f = tmp_path / "nogolds.jsonl"
    f.write_text('{"question": "a"}\n{"question": "b", "answer": ""}\n')
    with pytest.raises(p2o.UserError, match=r"no usable problem in 2 rows.*line 1 has keys \['question'\]"):
        p2o.load_problems(str(f))
    rc = p2o.main(["--eval-only", "--model", str(tiny_model), "--eval", str(f), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "nogolds.jsonl" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # refused before anything is written or loaded
    bad = tmp_path / "bad.jsonl"  # a malformed line is still an error, with its line
    bad.write_text('{"question": "a"}\n{"question": "b", "answer": "1"}\n{"question": \n')
    with pytest.raises(p2o.UserError, match="bad.jsonl:3: malformed JSON"):
        p2o.load_problems(str(bad))


def test_eval_names(tmp_path):
    names = [n for n, _ in p2o.eval_sets(["a/math500/test.jsonl", "b/gsm8k/test.jsonl", "b/gsm8k/train.jsonl",
                                           "mine=c/foo.jsonl", "d/foo.jsonl", "e/foo.jsonl", "f/my set/test.jsonl"])]
    assert names == ["math500", "gsm8k", "gsm8k-train", "mine", "foo", "foo-foo", "my_set"]
    assert [n for n, _ in p2o.eval_sets(["foo=x/a.jsonl", "y/foo.jsonl"])] == ["foo", "foo-foo"]
    with pytest.raises(p2o.UserError, match="given twice"):
        p2o.eval_sets(["x=a.jsonl", "x=b.jsonl"])
    # '=' that does not follow a plain name belongs to the path
    assert p2o.eval_sets(["runs/lr=1e-5/test.jsonl", "x/=a.jsonl"]) == [
        ("lr=1e-5", "runs/lr=1e-5/test.jsonl"), ("=a", "x/=a.jsonl")]
    weird = tmp_path / "a=b.jsonl"  # an existing file with '=' in its name is a path
    weird.write_text("")
    assert p2o.eval_sets([str(weird)]) == [("a=b", str(weird))]


@pytest.mark.parametrize("flags,msg", [
    (["--eval-samples", "-1"], "--eval-samples"),
    (["--eval-limit", "0"], "--eval-limit"),
    (["--eval-samples", "2", "--eval-temperature", "0"], "--eval-temperature"),
    (["--eval", "a=x.jsonl", "--eval", "a=y.jsonl"], "given twice"),
])
def test_unusable_eval_flags(capsys, tiny_model, tmp_path, flags, msg):
    rc = p2o.main(["--model", str(tiny_model), "--data", str(write_problems(tmp_path / "t.jsonl", 2)),
                   "--out", str(tmp_path / "o"), *flags])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and "Traceback" not in err


def test_sampled_evaluation_repeats_and_leaves_the_rng_alone(tiny_model, tmp_path):
    data = write_problems(tmp_path / "probs.jsonl", 3)
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--device", "cpu", "--max-new-tokens", "5",
                               "--eval-samples", "3", "--eval-temperature", "1.0", "--gen-batch-size", "4"])
    model, tok, engine = load_engine(cfg)
    problems = p2o.load_problems(str(data))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    m1, rows1 = p2o.evaluate_file(engine, cfg, "p", problems)
    assert torch.equal(torch.get_rng_state(), before)  # training's random stream is untouched
    m2, rows2 = p2o.evaluate_file(engine, cfg, "p", problems)
    assert rows1 == rows2 and m1 == m2 and m1["n"] == 3 and len(rows1) == 3
    assert [len(r["sample_completions"]) for r in rows1] == [3] * 3
    # samples differ from each other (sampled at T=1, not greedy copies), and the batch size only
    # groups the work
    assert any(len(set(r["sample_completions"])) > 1 for r in rows1)
    cfg1 = p2o.Config(**{**cfg.__dict__, "gen_batch_size": 64, "eval_samples": 0})
    m3, rows3 = p2o.evaluate_file(p2o.make_engine(model, tok, cfg1, torch.device("cpu")), cfg1, "p", problems)
    assert [r["greedy_completion"] for r in rows3] == [r["greedy_completion"] for r in rows1]
    assert set(m3) == {"n", "accuracy", "mean_length"} and "sample_answers" not in rows3[0]


def test_eval_only_without_out_writes_a_timestamped_folder(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = write_problems(tmp_path / "probs.jsonl", 2)
    assert p2o.main(["--eval-only", "--model", str(tiny_model), "--eval", str(data), "--device", "cpu",
                     "--max-new-tokens", "4"]) == 0
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("eval-")
    assert len(read_jsonl(folder / "evals" / "step_0.jsonl")) == 2
    assert "eval/probs/accuracy" in read_jsonl(folder / "metrics.jsonl")[0]
    assert "| probs | 2 | pass@1 (greedy) |" in capsys.readouterr().out
    # an existing folder is not written into
    rc = p2o.main(["--eval-only", "--model", str(tiny_model), "--eval", str(data), "--out", str(folder)])
    assert rc == 2 and "already exists" in capsys.readouterr().err


def test_committed_bench_results_are_strict_json():
    """Bare NaN is not JSON (other tools refuse the file): bench scripts write null instead."""
    files = sorted((ROOT / "bench" / "results").glob("*.json"))
    assert files
    for f in files:
        json.loads(f.read_text(), parse_constant=lambda c, f=f: pytest.fail(f"bare {c} in {f}"))


def test_schedule_bench_templates_reach_rollouts_on_data_larger_than_the_run():
    """bench/p2o_schedule.py drives p2o.py's own data walk, buffer, GEPA schedule and replay with an
    oracle for the model: on 400 problems and 40 x 8 draws (none repeated), replay guides groups from
    the step after the first GEPA run; the epoch schedule, whose first pass outlasts the run, none."""
    import sys
    sys.path.insert(0, str(ROOT / "bench"))
    from p2o_schedule import simulate
    replay = simulate(400, 40, "replay", gepa_every=10)
    assert replay["first_gepa_step"] == 10 and replay["first_guided_step"] == 11
    # replays come on top of the 8 new problems a step (--replay-share 0.5: up to 4 more, 1/3 of the groups)
    assert replay["guided_share_after_first_gepa"] >= 0.3 and replay["guided_nonzero_adv"] > 0
    assert replay["groups"] - replay["replayed"] == 40 * 8 and replay["replayed"] > 0
    epoch = simulate(400, 40, "epoch", gepa_every=10)
    assert epoch["gepa_runs"] == 0 and epoch["guided_groups"] == 0


def test_twin_dtype_bench_reads_a_run_folder(tmp_path):
    """bench/demo_twin_dtype.py --summarize: the demo's figures come from the run's own logs."""
    import sys
    sys.path.insert(0, str(ROOT / "bench"))
    from demo_twin_dtype import summarize
    run = tmp_path / "run"
    run.mkdir()
    steps = [{"step": 0, "eval/l6/accuracy": 0.0, "eval/l6/n": 4},
             {"step": 1, "loss": 0.1, "p2o/guided_groups": 0, "p2o/gepa_seconds": 0.0, "rollout/mismatch_frac": 0.1},
             {"step": 2, "loss": 0.2, "p2o/guided_groups": 2, "p2o/guided_nonzero_adv_groups": 1, "p2o/gepa_seconds": 3.25},
             {"step": 2, "eval/l6/accuracy": 0.5, "eval/l6/n": 4}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
    (run / "gepa_runs.jsonl").write_text('{"step": 1}\n')
    got = summarize(run)
    assert got["steps"] == 2 and got["guided_groups"] == 2 and got["guided_nonzero_adv_groups"] == 1
    assert got["evals_first"] == {"step": 0, "eval/l6/accuracy": 0.0}
    assert got["evals_last"] == {"step": 2, "eval/l6/accuracy": 0.5}
    assert got["gepa_runs"] == 1 and got["gepa_s"] == 3.2 and got["mismatch_frac_mean"] == 0.05


def test_twin_dtype_bench_combines_seeds():
    """bench/demo_twin_dtype.py --combine: per-seed files -> level 6 per seed and the seeds above start."""
    import sys
    sys.path.insert(0, str(ROOT / "bench"))
    from demo_twin_dtype import combine
    run = lambda seed, l6: {"seed": seed, "twin_dtype": "fp32", "command": "c", "guided_groups": 8,
                            "guided_nonzero_adv_groups": 4, "machine": "m",
                            "evals_first": {"eval/demo_test_l6/accuracy": 0.0, "eval/demo_test_l1/accuracy": 0.5},
                            "evals_last": {"eval/demo_test_l6/accuracy": l6, "eval/demo_test_l1/accuracy": 0.25}}
    got = combine([run(1, 0.0), run(0, 0.75)])
    assert [r["seed"] for r in got["per_seed"]] == [0, 1]
    assert got["seeds_l6_above_start"] == 1 and got["mean_l6_end"] == 0.375 and got["mean_l1_end"] == 0.25


def test_p2o_vs_grpo_summary_has_every_level_time_and_the_equal_time_arm():
    """bench/p2o_vs_grpo.py's summary from finished runs: paired P²O - GRPO (and - grpo_long) on the hard,
    easy and all levels, greedy and avg@8; GEPA's share of training and of wall time; the phases."""
    import sys
    sys.path.insert(0, str(ROOT / "bench"))
    from p2o_vs_grpo import summarize, table

    def run(kind, seed, easy, hard, train_s, wall_s, gepa_s=0.0):
        problems = {f"e{i}": {"level": 1, "plain": float(i < easy), "sampled": easy / 4, "template": None}
                    for i in range(4)}
        problems.update({f"h{i}": {"level": 6, "plain": float(i < hard), "sampled": hard / 4, "template": 1.0}
                         for i in range(4)})
        metrics = [{"step": s, "loss": 0.0, "step_time": 3.0, "time/rollout_s": 1.0, "time/update_s": 1.5,
                    "time/reward_s": 0.5, "time/gepa_s": gepa_s / 2 if s % 2 else 0.0, "p2o/guided_groups": 2,
                    "p2o/replayed_groups": 2, "p2o/gepa_runs": s // 2, "p2o/rho_masked_frac": 0.01}
                   for s in (1, 2, 3, 4)] if kind == "p2o" else \
            [{"step": s, "loss": 0.0, "step_time": 2.0, "time/rollout_s": 1.0, "time/update_s": 1.0,
              "time/gepa_s": 0.0} for s in range(1, 5 if kind == "grpo" else 7)]
        return {"kind": kind, "seed": seed, "problems": problems, "groups": [], "train_s": train_s,
                "replay_on_top": kind == "p2o",
                "wall_s": wall_s, "peak_rss_mb": 1.0, "cpu_s": wall_s / 2, "train_cpu_s": train_s / 2,
                "gepa_cpu_s": gepa_s / 2, "metrics": metrics}
    done = {("base", 0): run("base", 0, 1, 0, 0.0, 1.0)}
    for s in (0, 1):
        done[("grpo", s)] = run("grpo", s, 3, 0, 100.0, 150.0)
        done[("p2o", s)] = run("p2o", s, 2, 3, 120.0, 170.0, gepa_s=12.0)
        done[("grpo_long", s)] = run("grpo_long", s, 4, 0, 150.0, 200.0)
    per_seed, summary = summarize(done, [0, 1], [6], [1])
    assert summary["kinds"] == ["grpo", "p2o", "grpo_long"]
    assert summary["paired_diff_easy"]["mean"] == pytest.approx(-0.25)  # 2 of 4 against 3 of 4
    assert summary["paired_diff_hard"]["mean"] == pytest.approx(0.75)
    assert summary["paired_diff_easy_avg8"]["mean"] == pytest.approx(-0.25)
    assert summary["vs_grpo_long"]["paired_diff_easy"]["mean"] == pytest.approx(-0.5)
    p = summary["after_mean"]["p2o"]
    assert p["gepa_share_of_train"] == pytest.approx(0.1) and p["gepa_share_of_wall"] == pytest.approx(12 / 170)
    assert p["gepa_cpu_share_of_train"] == pytest.approx(0.1)
    assert summary["wall_ratio_p2o_over_grpo"] == pytest.approx(170 / 150)
    assert p["phases"]["update_s"] == 6.0 and p["phases"]["between_s"] == 2.0 and p["phases"]["groups_per_step"] == 6
    assert summary["after_mean"]["grpo_long"]["steps"] == 6
    text = table(per_seed, summary, [6])
    assert "easy levels [1], greedy" in text and "GEPA's share of wall time" in text and "equal wall time" in text
