"""P²O against plain GRPO on SmolLM2-135M-Instruct and the demo's arithmetic task, paired by seed.

For each seed, `p2o.py --demo --seed S` (P²O) and `p2o.py --demo --seed S --no-p2o` (GRPO) train
with the same settings, steps and rollouts (the demo's, see p2o.DEMO), each in its own process with
one thread, two at a time. Every run is then evaluated by this script, greedily, problem by problem:

  - held-out accuracy WITHOUT any template, on the hard levels and on all levels, before (the base
    model) and after training; the paired difference P²O - GRPO after training, with a 95% bootstrap
    interval (resampling seeds and test problems);
  - the same held-out problems answered by sampling (K = 8 answers per problem at the training
    temperature, no template): avg@8, a finer measure of how far the answer distribution moved
    than one greedy answer; paired difference with its interval as above;
  - template-in-prompt accuracy on the hard levels: the policy with the seed template in its prompt
    (what distilling the template could reach);
  - the fraction of hard groups given a nonzero advantage (groups of hard-level problems; for P²O
    also the template-guided groups), the ρ-masked token fraction, GEPA's share of the wall time,
    the wall time and peak RSS of each run.

    python bench/p2o_vs_grpo.py                         # 3 seeds -> bench/results/p2o_vs_grpo.json
    python bench/p2o_vs_grpo.py --seeds 0 1 2 3 --jobs 2 --steps 30
    python bench/p2o_vs_grpo.py --seeds 0 1 2 3 4 5 --data data/demo_train_240.jsonl \
        --json bench/results/p2o_vs_grpo_240.json      # a training file larger than the run
    python bench/p2o_vs_grpo.py --train-args "--replay-share 0.25" ...   # any p2o.py flags, both arms

Prints a table and writes the JSON. Runs go to runs/bench_p2o_vs_grpo/ (deleted first).
"""
import argparse
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from results_file import write_results  # noqa: E402  (bench/ is this script's folder)


def level_of(row):
    return int(row.get("level", 0))


DEMO_G = 4  # p2o.DEMO's group size (checked in main)
DEMO_PROMPTS = 4  # and its prompts per step
SAMPLES = 8  # sampled answers per held-out problem (avg@8)


def level_of_id(problem_id):
    """make_arith.py ids carry the level: demo-L6-00001 -> 6 (training problems are not in the test files)."""
    m = re.search(r"-L(\d+)-", problem_id)
    return int(m.group(1)) if m else None


def read_rows(path):
    return [json.loads(l) for l in (ROOT / path).read_text().splitlines() if l.strip()]


# ---------------------------------------------------------------------------------------------
# Child: one training run (or the base model) and its per-problem evaluation


def child(kind, seed, out, steps, hard_levels, data="", train_args=""):
    import torch
    torch.set_num_threads(1)
    import p2o
    cfg_demo = dict(p2o.DEMO)
    eval_paths = cfg_demo.pop("eval")
    groups = []  # one record per rollout group: level, guided, successes
    if kind != "base":
        real_sample, real_reward = p2o.sample_rollouts, p2o.reward_rollouts
        last = {}

        def sample(*a, **k):
            last["batch"] = real_sample(*a, **k)
            last["pending"] = True  # the next reward call scores these rollouts (not GEPA's or an eval's)
            return last["batch"]

        def reward(texts, golds):
            rs, fb = real_reward(texts, golds)
            if not last.pop("pending", False):
                return rs, fb
            b = last["batch"]
            G = len(rs) // len(b.problems)
            for g, prob in enumerate(b.problems):
                r = rs[g * G:(g + 1) * G]
                groups.append({"id": prob["id"], "guided": any(b.templates[g * G:(g + 1) * G]),
                               "successes": int(sum(x > 0 for x in r)), "G": G})
            return rs, fb
        p2o.sample_rollouts, p2o.reward_rollouts = sample, reward
        argv = ["--demo", "--seed", str(seed), "--out", str(out), "--eval-every", "0"]
        argv += ["--steps", str(steps)] if steps else []
        argv += ["--data", data] if data else []
        argv += shlex.split(train_args)
        argv += ["--no-p2o"] if kind == "grpo" else []
        cfg, given = p2o.parse_config(argv)
        cfg = p2o.Config(**{**cfg.__dict__, **{k: v for k, v in cfg_demo.items() if k not in given}})
        cfg.eval = []  # evaluated below, problem by problem
        t0 = time.time()
        p2o.train(cfg, given | set(cfg_demo))
        train_s = time.time() - t0
    else:
        cfg = p2o.Config(**{**p2o.Config().__dict__, **cfg_demo, "eval": []})
        train_s = 0.0
    model, tok = p2o.load_model(cfg, torch.device("cpu"), adapter=str(out / "adapter") if kind != "base" else "")
    template = p2o.load_templates(cfg.templates)[0] if cfg.templates else ""
    rows = {}
    for path in eval_paths:
        probs = p2o.load_problems(str(ROOT / path))[:cfg.eval_limit]
        levels = {r.get("id"): level_of(r) for r in read_rows(path)}
        plain = p2o.answer_problems(model, tok, cfg, probs)[0]
        torch.manual_seed(1234)  # the same sampling noise for every run
        sampled = p2o.answer_problems(model, tok, cfg, [p for p in probs for _ in range(SAMPLES)], greedy=False)[0]
        hard = [p for p in probs if levels.get(p["id"]) in hard_levels]
        with_t = p2o.answer_problems(model, tok, cfg, hard, template)[0] if hard and template else []
        t_ok = dict(zip([p["id"] for p in hard], with_t))
        for i, (p, r) in enumerate(zip(probs, plain)):
            rows[p["id"]] = {"level": levels.get(p["id"]), "plain": r, "template": t_ok.get(p["id"]),
                             "sampled": sum(sampled[i * SAMPLES:(i + 1) * SAMPLES]) / SAMPLES}
    metrics = []
    if (out / "metrics.jsonl").is_file():
        metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]
    (out / "bench.json").write_text(json.dumps({"kind": kind, "seed": seed, "problems": rows, "groups": groups,
                                                "train_s": train_s, "metrics": metrics}))


# ---------------------------------------------------------------------------------------------
# Parent: schedule the runs, then compare


def run_all(jobs, n_parallel, runs_dir, steps, hard_levels, data="", train_args=""):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    pending, running, done = list(jobs), {}, {}
    while pending or running:
        while pending and len(running) < n_parallel:
            kind, seed = pending.pop(0)
            out = runs_dir / f"{kind}-{seed}"
            cmd = [sys.executable, __file__, "--child", kind, "--seed", str(seed), "--run-dir", str(out),
                   "--hard-levels", ",".join(map(str, hard_levels)), "--data", data, "--train-args", train_args]
            cmd += ["--steps", str(steps)] if steps else []
            log = open(runs_dir / f"{kind}-{seed}.log", "w")
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            running[proc.pid] = (kind, seed, out, time.time(), log)
            print(f"started {kind} seed {seed}", flush=True)
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        kind, seed, out, t0, log = running.pop(pid)
        log.close()
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"{kind} seed {seed} failed; see {runs_dir / f'{kind}-{seed}.log'}")
        res = json.loads((out / "bench.json").read_text())
        res["wall_s"], res["peak_rss_mb"] = time.time() - t0, usage.ru_maxrss / 1024
        res["cpu_s"] = usage.ru_utime + usage.ru_stime
        (out / "parent.json").write_text(json.dumps({k: res[k] for k in ("wall_s", "peak_rss_mb", "cpu_s")}))
        done[(kind, seed)] = res
        print(f"finished {kind} seed {seed} in {res['wall_s']:.0f} s", flush=True)
    return done


def load_runs(runs_dir):
    """The finished runs in runs_dir (for --summarize: a bench stopped early, or rerun tables)."""
    done = {}
    for f in sorted(runs_dir.glob("*/bench.json")):
        res = json.loads(f.read_text())
        parent = f.parent / "parent.json"
        res.update(json.loads(parent.read_text()) if parent.is_file() else
                   {"wall_s": float("nan"), "peak_rss_mb": float("nan"), "cpu_s": None})
        done[(res["kind"], res["seed"])] = res
    return done


def acc(res, levels=None, key="plain"):
    xs = [v[key] for v in res["problems"].values() if (levels is None or v["level"] in levels) and v[key] is not None]
    return sum(xs) / len(xs) if xs else float("nan")


def paired_bootstrap(pairs, levels, n_boot=4000, seed=0, key="plain"):
    """Mean over seeds of (P²O - GRPO) accuracy on `levels`, with a 95% interval from resampling
    seeds and, within them, test problems (the same problems for both arms: paired)."""
    ids = sorted({i for a, _ in pairs for i, v in a["problems"].items() if v["level"] in levels})
    diff = [[a["problems"][i][key] - b["problems"][i][key] for i in ids] for a, b in pairs]
    point = sum(sum(d) / len(d) for d in diff) / len(diff)
    rng = random.Random(seed)
    stats = []
    for _ in range(n_boot):
        ss = [diff[rng.randrange(len(diff))] for _ in diff]
        stats.append(sum(sum(d[rng.randrange(len(d))] for _ in d) / len(d) for d in ss) / len(ss))
    stats.sort()
    return point, stats[int(0.025 * n_boot)], stats[int(0.975 * n_boot) - 1]


def nonzero_frac(groups, pred):
    # (records with another G came from GEPA's and the evaluation's reward calls in runs made before
    # the child recorded training groups only)
    gs = [g for g in groups if pred(g) and g["G"] == DEMO_G]
    return (sum(0 < g["successes"] < g["G"] for g in gs) / len(gs) if gs else float("nan")), len(gs)


def guided_share(metrics):
    """Share of the rollout groups that were template-guided, from the step after the first GEPA run on."""
    first = next((i for i, x in enumerate(metrics) if x.get("p2o/gepa_runs", 0) >= 1), None)
    after = metrics[first + 1:] if first is not None else []
    groups = len(after) * DEMO_PROMPTS
    return sum(x["p2o/guided_groups"] for x in after) / groups if groups else None


def summarize(done, seeds, hard_levels):
    base = done[("base", 0)]
    levels_of = {i: v["level"] for i, v in base["problems"].items()}
    is_hard = lambda g: level_of_id(g["id"]) in hard_levels
    per_seed = []
    for s in seeds:
        row = {"seed": s}
        for kind in ("grpo", "p2o"):
            r = done[(kind, s)]
            m = [x for x in r["metrics"] if "loss" in x]
            gepa_s = m[-1].get("p2o/gepa_seconds", 0.0) if m else 0.0
            rho = [x["p2o/rho_masked_frac"] for x in m if x.get("p2o/guided_groups")]
            row[kind] = {
                "hard_acc": acc(r, hard_levels), "all_acc": acc(r), "hard_acc_with_template": acc(r, hard_levels, "template"),
                "hard_avg8": acc(r, hard_levels, "sampled"), "all_avg8": acc(r, None, "sampled"),
                "hard_groups_nonzero_adv": nonzero_frac(r["groups"], is_hard)[0],
                "hard_groups": nonzero_frac(r["groups"], is_hard)[1],
                "guided_groups_nonzero_adv": nonzero_frac(r["groups"], lambda g: g["guided"])[0],
                "guided_groups": nonzero_frac(r["groups"], lambda g: g["guided"])[1],
                "rho_masked_frac": sum(rho) / len(rho) if rho else None,
                "gepa_s": gepa_s, "train_s": r["train_s"], "gepa_share": gepa_s / max(r["train_s"], 1e-9),
                "wall_s": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"], "cpu_s": r.get("cpu_s"),
                "templates_in_use": m[-1].get("p2o/templates") if m else None,
                "guided_share_after_first_gepa": guided_share(m)}
        per_seed.append(row)
    pairs = [(done[("p2o", s)], done[("grpo", s)]) for s in seeds]
    all_levels = sorted({v for v in levels_of.values()})
    mean = lambda k, kind: sum(r[kind][k] for r in per_seed) / len(per_seed)
    summary = {
        "before": {"hard_acc": acc(base, hard_levels), "all_acc": acc(base),
                   "hard_acc_with_template": acc(base, hard_levels, "template"),
                   "hard_avg8": acc(base, hard_levels, "sampled"), "all_avg8": acc(base, None, "sampled")},
        "after_mean": {kind: {k: mean(k, kind) for k in ("hard_acc", "all_acc", "hard_acc_with_template",
                                                         "hard_avg8", "all_avg8",
                                                         "hard_groups_nonzero_adv", "gepa_share", "wall_s")}
                       for kind in ("grpo", "p2o")},
        "paired_diff_hard": dict(zip(("mean", "ci_low", "ci_high"), paired_bootstrap(pairs, hard_levels))),
        "paired_diff_all": dict(zip(("mean", "ci_low", "ci_high"), paired_bootstrap(pairs, all_levels))),
        "paired_diff_hard_avg8": dict(zip(("mean", "ci_low", "ci_high"), paired_bootstrap(pairs, hard_levels, key="sampled"))),
        "paired_diff_all_avg8": dict(zip(("mean", "ci_low", "ci_high"), paired_bootstrap(pairs, all_levels, key="sampled"))),
        "p2o_guided_groups_nonzero_adv": (sum(r["p2o"]["guided_groups_nonzero_adv"] * r["p2o"]["guided_groups"]
                                              for r in per_seed if r["p2o"]["guided_groups"])
                                          / max(1, sum(r["p2o"]["guided_groups"] for r in per_seed))),
        "p2o_guided_groups": sum(r["p2o"]["guided_groups"] for r in per_seed),
        "p2o_guided_share_after_first_gepa": (lambda xs: sum(xs) / len(xs) if xs else None)(
            [r["p2o"]["guided_share_after_first_gepa"] for r in per_seed
             if r["p2o"]["guided_share_after_first_gepa"] is not None]),
    }
    return per_seed, summary


def table(per_seed, summary, hard_levels):
    f = lambda x: "-" if x is None or x != x else f"{x:.3f}"
    b, a = summary["before"], summary["after_mean"]
    lines = [f"| (mean of {len(per_seed)} seeds) | before | GRPO after | P²O after |", "|---|---|---|---|",
             f"| held-out accuracy, hard levels {hard_levels}, no template | {f(b['hard_acc'])} | "
             f"{f(a['grpo']['hard_acc'])} | {f(a['p2o']['hard_acc'])} |",
             f"| held-out accuracy, all levels, no template | {f(b['all_acc'])} | {f(a['grpo']['all_acc'])} | "
             f"{f(a['p2o']['all_acc'])} |",
             f"| held-out avg@{SAMPLES} (sampled, T = training temperature), hard levels, no template | "
             f"{f(b['hard_avg8'])} | {f(a['grpo']['hard_avg8'])} | {f(a['p2o']['hard_avg8'])} |",
             f"| held-out avg@{SAMPLES}, all levels, no template | {f(b['all_avg8'])} | {f(a['grpo']['all_avg8'])} | "
             f"{f(a['p2o']['all_avg8'])} |",
             f"| hard levels with the seed template in the prompt | {f(b['hard_acc_with_template'])} | "
             f"{f(a['grpo']['hard_acc_with_template'])} | {f(a['p2o']['hard_acc_with_template'])} |",
             f"| hard-level groups with nonzero advantage | - | {f(a['grpo']['hard_groups_nonzero_adv'])} | "
             f"{f(a['p2o']['hard_groups_nonzero_adv'])} |",
             f"| template-guided groups with nonzero advantage | - | - | "
             f"{f(summary['p2o_guided_groups_nonzero_adv'])} of {summary['p2o_guided_groups']} |",
             f"| share of groups template-guided, after the first GEPA run | - | - | "
             f"{f(summary['p2o_guided_share_after_first_gepa'])} |",
             f"| GEPA share of training wall time | - | - | {f(a['p2o']['gepa_share'])} |",
             f"| run wall time, s (2 runs at a time, 1 thread each, shared machine) | - | "
             f"{a['grpo']['wall_s']:.0f} | {a['p2o']['wall_s']:.0f} |"]
    for key, name in (("paired_diff_hard", "hard levels, greedy"), ("paired_diff_all", "all levels, greedy"),
                      ("paired_diff_hard_avg8", f"hard levels, avg@{SAMPLES}"),
                      ("paired_diff_all_avg8", f"all levels, avg@{SAMPLES}")):
        d = summary[key]
        lines.append(f"\nP²O - GRPO, {name}: {d['mean']:+.3f} (95% bootstrap interval {d['ci_low']:+.3f} .. "
                     f"{d['ci_high']:+.3f})")
    lines.append("\nper seed (hard-level accuracy GRPO / P²O, guided groups, ρ-masked fraction):")
    for r in per_seed:
        lines.append(f"  seed {r['seed']}: {f(r['grpo']['hard_acc'])} / {f(r['p2o']['hard_acc'])}, "
                     f"{r['p2o']['guided_groups']}, {f(r['p2o']['rho_masked_frac'])}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=0, help="training steps (default: the demo's)")
    ap.add_argument("--data", default="", help="training file (default: the demo's)")
    ap.add_argument("--train-args", default="", help="more p2o.py flags for both arms, as one string")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    ap.add_argument("--hard-levels", default="6", help="comma-separated levels counted as hard")
    ap.add_argument("--runs", default="runs/bench_p2o_vs_grpo")
    ap.add_argument("--json", default="bench/results/p2o_vs_grpo.json")
    ap.add_argument("--child", choices=["base", "grpo", "p2o"], help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    ap.add_argument("--summarize", action="store_true",
                    help="no new runs: compare the finished runs in --runs (seeds with both arms)")
    args = ap.parse_args()
    hard_levels = [int(x) for x in args.hard_levels.split(",")]
    import p2o
    assert p2o.DEMO["group_size"] == DEMO_G and p2o.DEMO["prompts_per_step"] == DEMO_PROMPTS, "update DEMO_G"
    if args.child:
        out = Path(args.run_dir)
        out.mkdir(parents=True, exist_ok=True) if args.child == "base" else None
        child(args.child, args.seed, out, args.steps, hard_levels, args.data, args.train_args)
        return
    runs_dir = ROOT / args.runs
    t0, load0 = time.time(), os.getloadavg()[0]
    if args.summarize:
        done = load_runs(runs_dir)
        args.seeds = [s for s in args.seeds if ("p2o", s) in done and ("grpo", s) in done]
        if ("base", 0) not in done or not args.seeds:
            sys.exit(f"--summarize: {runs_dir} has no base run or no seed with both arms finished")
    else:
        shutil.rmtree(runs_dir, ignore_errors=True)
        runs_dir.mkdir(parents=True)
        jobs = [("base", 0)] + [(kind, s) for s in args.seeds for kind in ("p2o", "grpo")]
        done = run_all(jobs, args.jobs, runs_dir, args.steps, hard_levels, args.data, args.train_args)
    per_seed, summary = summarize(done, args.seeds, hard_levels)
    print(table(per_seed, summary, hard_levels))
    import p2o
    result = {"command": " ".join(["python", "bench/p2o_vs_grpo.py"] + sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "settings": {**p2o.DEMO, **({"data": args.data} if args.data else {}), "train_args": args.train_args},
              "steps": args.steps or p2o.DEMO["steps"], "seeds": args.seeds, "hard_levels": hard_levels,
              "summary": summary, "per_seed": per_seed, "bench_wall_s": time.time() - t0,
              "loadavg_before_after": [load0, os.getloadavg()[0]], "machine": platform.platform(),
              "cpus": os.cpu_count(), "peak_rss_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    write_results(ROOT / args.json, p2o.json_safe(result))  # a mean over no groups is NaN: JSON has null


if __name__ == "__main__":
    main()
