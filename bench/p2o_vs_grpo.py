"""P²O against plain GRPO on SmolLM2-135M-Instruct and the demo's arithmetic task, paired by seed.

For each seed, `p2o.py --demo --seed S` (P²O) and `p2o.py --demo --seed S --no-p2o` (GRPO) train
with the same settings and steps (the demo's, see p2o.DEMO), each in its own process with one
thread, two at a time; with --grpo-long-steps N also a GRPO run of N steps (`grpo_long`: GRPO given
about P²O's wall time in more steps). Every run is then evaluated by this script, greedily, problem by
problem:

  - held-out accuracy WITHOUT any template on the hard levels (--hard-levels, 6), the easy levels
    (--easy-levels, 1: what GRPO alone learns) and all levels, before (the base model) and after
    training; the paired difference P²O - GRPO (and P²O - grpo_long) after training, with a 95%
    bootstrap interval (resampling seeds and test problems);
  - the same held-out problems answered by sampling (K = 8 answers per problem at the training
    temperature, no template): avg@8, a finer measure of how far the answer distribution moved
    than one greedy answer; paired differences with their intervals as above;
  - template-in-prompt accuracy on the hard levels: the policy with the seed template in its prompt
    (what distilling the template could reach);
  - the fraction of hard groups given a nonzero advantage (groups of hard-level problems; for P²O
    also the template-guided groups), the ρ-masked token fraction;
  - time: each run's wall time (training, then this script's evaluation, the same for every arm),
    training time, CPU time (one thread a run: the work, whatever else shares the machine), the
    ratios P²O / GRPO per seed, GEPA's share of P²O's training time and of its wall time (and of its
    training CPU time), and the training phases summed from metrics.jsonl (time/rollout_s, time/reward_s,
    time/update_s, time/gepa_s), with peak RSS.

    python bench/p2o_vs_grpo.py                         # 3 seeds -> bench/results/p2o_vs_grpo.json
    python bench/p2o_vs_grpo.py --seeds 0 1 2 3 --jobs 2 --steps 30
    python bench/p2o_vs_grpo.py --seeds 0 1 2 3 4 5 --data data/demo_train_240.jsonl \
        --json bench/results/p2o_vs_grpo_240.json      # a training file larger than the run
    python bench/p2o_vs_grpo.py --train-args "--replay-share 0.25" ...   # any p2o.py flags, both arms
    python bench/p2o_vs_grpo.py --seeds 0 1 2 3 4 5 --kinds grpo_long --grpo-long-steps 60 --keep-runs \
        --runs runs/bench_six       # add equal-wall-time GRPO runs beside finished ones, then summarize all

Prints a table and writes the JSON. Runs go to runs/bench_p2o_vs_grpo/ (deleted first, unless --keep-runs).
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
from results_file import cpu_name, write_results  # noqa: E402  (bench/ is this script's folder)


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
    cpu = {"train_cpu_s": 0.0, "gepa_cpu_s": 0.0}
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
        argv += ["--no-p2o"] if kind in ("grpo", "grpo_long") else []
        cfg, given = p2o.parse_config(argv)
        cfg = p2o.Config(**{**cfg.__dict__, **{k: v for k, v in cfg_demo.items() if k not in given}})
        cfg.eval = []  # evaluated below, problem by problem
        real_gepa = p2o.run_gepa

        def gepa_run(*a, **k):  # GEPA's CPU seconds: on a shared machine a fairer share than wall seconds
            c0 = time.process_time()
            try:
                return real_gepa(*a, **k)
            finally:
                cpu["gepa_cpu_s"] += time.process_time() - c0
        p2o.run_gepa = gepa_run
        t0, c0 = time.time(), time.process_time()
        p2o.train(cfg, given | set(cfg_demo))
        train_s, cpu["train_cpu_s"] = time.time() - t0, time.process_time() - c0
    else:
        cfg = p2o.Config(**{**p2o.Config().__dict__, **cfg_demo, "eval": []})
        train_s = 0.0
    model, tok = p2o.load_model(cfg, torch.device("cpu"), adapter=str(out / "adapter") if kind != "base" else "")
    engine = p2o.make_engine(model, tok, cfg, torch.device("cpu"))
    template = p2o.load_templates(cfg.templates)[0] if cfg.templates else ""
    rows = {}
    for path in eval_paths:
        probs = p2o.load_problems(str(ROOT / path))[:cfg.eval_limit]
        levels = {r.get("id"): level_of(r) for r in read_rows(path)}
        plain = p2o.answer_problems(engine, cfg, probs)[0]
        torch.manual_seed(1234)  # the same sampling noise for every run
        sampled = p2o.answer_problems(engine, cfg, [p for p in probs for _ in range(SAMPLES)],
                                      sampling=p2o.Sampling(cfg.temperature, cfg.top_p, cfg.min_new_tokens))[0]
        hard = [p for p in probs if levels.get(p["id"]) in hard_levels]
        with_t = p2o.answer_problems(engine, cfg, hard, template)[0] if hard and template else []
        t_ok = dict(zip([p["id"] for p in hard], with_t))
        for i, (p, r) in enumerate(zip(probs, plain)):
            rows[p["id"]] = {"level": levels.get(p["id"]), "plain": r, "template": t_ok.get(p["id"]),
                             "sampled": sum(sampled[i * SAMPLES:(i + 1) * SAMPLES]) / SAMPLES}
    metrics = []
    if (out / "metrics.jsonl").is_file():
        metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]
    (out / "bench.json").write_text(json.dumps({"kind": kind, "seed": seed, "problems": rows, "groups": groups,
                                                "train_s": train_s, **cpu, "metrics": metrics,
                                                "replay_on_top": bool(cfg.p2o and getattr(cfg, "replay_on_top", False))}))


# ---------------------------------------------------------------------------------------------
# Parent: schedule the runs, then compare


def run_all(jobs, n_parallel, runs_dir, steps, hard_levels, data="", train_args=""):
    """Run (kind, seed) jobs, n_parallel at a time; `steps` maps a kind to its --steps (0: the demo's)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    pending, running, done = list(jobs), {}, {}
    while pending or running:
        while pending and len(running) < n_parallel:
            kind, seed = pending.pop(0)
            out = runs_dir / f"{kind}-{seed}"
            shutil.rmtree(out, ignore_errors=True)  # (a run stopped part-way under --keep-runs starts again)
            cmd = [sys.executable, __file__, "--child", kind, "--seed", str(seed), "--run-dir", str(out),
                   "--hard-levels", ",".join(map(str, hard_levels)), "--data", data,
                   f"--train-args={train_args}"]  # (one word: a value that starts with '--' is no flag)
            cmd += ["--steps", str(steps[kind])] if steps.get(kind) else []
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


def step_groups(x, on_top):
    """Groups in a step: the new problems, and the replayed ones when they come on top (--replay-on-top,
    since issue 26; before it, and with --no-replay-on-top, replays take new problems' places)."""
    return DEMO_PROMPTS + (x.get("p2o/replayed_groups", 0) if on_top else 0)


def guided_share(metrics, on_top):
    """Share of the rollout groups that were template-guided, from the step after the first GEPA run on."""
    first = next((i for i, x in enumerate(metrics) if x.get("p2o/gepa_runs", 0) >= 1), None)
    after = metrics[first + 1:] if first is not None else []
    groups = sum(step_groups(x, on_top) for x in after)
    return sum(x["p2o/guided_groups"] for x in after) / groups if groups else None


def phase_times(metrics, on_top):
    """Seconds of training by phase, summed over the steps of metrics.jsonl: rollouts, the update (with
    the ρ mask, which needs no forward of its own now), what lies between them (`between`: decoding,
    rewards, hard-problem mining; before issue 26 also the ρ mask's two forwards) and GEPA."""
    m = [x for x in metrics if "loss" in x]
    get = lambda k: sum(x.get(k, 0.0) for x in m)
    gepa = get("time/gepa_s") if any("time/gepa_s" in x for x in m) else (m[-1].get("p2o/gepa_seconds", 0.0) if m else 0.0)
    return {"steps": len(m), "rollout_s": get("time/rollout_s"), "update_s": get("time/update_s"),
            "between_s": sum(x["step_time"] - x["time/rollout_s"] - x["time/update_s"] for x in m),
            "gepa_s": gepa, "groups_per_step": sum(step_groups(x, on_top) for x in m) / len(m) if m else None}


KINDS = ("grpo", "p2o", "grpo_long")
LEVEL_SETS = ("hard", "easy", "all")


def arm_row(r, levels, is_hard):
    """One run's figures: accuracy by level set (greedy `acc`, sampled `avg8`), groups, time."""
    m = [x for x in r["metrics"] if "loss" in x]
    rho = [x["p2o/rho_masked_frac"] for x in m if x.get("p2o/guided_groups")]
    on_top = r.get("replay_on_top", False)  # (runs before issue 26 do not say: in place)
    phases = phase_times(r["metrics"], on_top)
    row = {f"{name}_{label}": acc(r, lv, key) for name, lv in levels.items()
           for key, label in (("plain", "acc"), ("sampled", "avg8"))}
    row.update({
        "hard_acc_with_template": acc(r, levels["hard"], "template"),
        "hard_groups_nonzero_adv": nonzero_frac(r["groups"], is_hard)[0], "hard_groups": nonzero_frac(r["groups"], is_hard)[1],
        "guided_groups_nonzero_adv": nonzero_frac(r["groups"], lambda g: g["guided"])[0],
        "guided_groups": nonzero_frac(r["groups"], lambda g: g["guided"])[1],
        "rho_masked_frac": sum(rho) / len(rho) if rho else None,
        "steps": phases["steps"], "phases": phases, "gepa_s": phases["gepa_s"], "train_s": r["train_s"],
        "wall_s": r["wall_s"], "eval_s": r["wall_s"] - r["train_s"],
        "gepa_share_of_train": phases["gepa_s"] / max(r["train_s"], 1e-9),
        "gepa_share_of_wall": phases["gepa_s"] / max(r["wall_s"], 1e-9),
        "peak_rss_mb": r["peak_rss_mb"], "cpu_s": r.get("cpu_s"), "train_cpu_s": r.get("train_cpu_s"),
        "gepa_cpu_s": r.get("gepa_cpu_s"), "gepa_cpu_share_of_train": (r["gepa_cpu_s"] / max(r["train_cpu_s"], 1e-9))
        if r.get("train_cpu_s") else None,
        "templates_in_use": m[-1].get("p2o/templates") if m else None, "guided_share_after_first_gepa": guided_share(m, on_top)})
    return row


def paired(pairs, levels):
    """P²O - other arm, by level set, greedy and avg@8: {name: {mean, ci_low, ci_high}}."""
    out = {}
    for name, lv in levels.items():
        for key, suffix in (("plain", ""), ("sampled", "_avg8")):
            out[f"paired_diff_{name}{suffix}"] = dict(zip(("mean", "ci_low", "ci_high"), paired_bootstrap(pairs, lv, key=key)))
    return out


def summarize(done, seeds, hard_levels, easy_levels=(1,)):
    base = done[("base", 0)]
    levels_of = {i: v["level"] for i, v in base["problems"].items()}
    levels = {"hard": list(hard_levels), "easy": list(easy_levels), "all": sorted(set(levels_of.values()))}
    is_hard = lambda g: level_of_id(g["id"]) in hard_levels
    kinds = [k for k in KINDS if all((k, s) in done for s in seeds)]
    per_seed = []
    for s in seeds:
        row = {"seed": s, **{kind: arm_row(done[(kind, s)], levels, is_hard) for kind in kinds}}
        row["wall_ratio_p2o_over_grpo"] = row["p2o"]["wall_s"] / row["grpo"]["wall_s"]
        row["train_ratio_p2o_over_grpo"] = row["p2o"]["train_s"] / row["grpo"]["train_s"]
        # CPU seconds (one thread a run): what the work costs, whatever else the machine was doing
        row["cpu_ratio_p2o_over_grpo"] = (row["p2o"]["cpu_s"] / row["grpo"]["cpu_s"]) \
            if row["grpo"]["cpu_s"] and row["p2o"]["cpu_s"] else None  # (None: a run its bench did not see end)
        row["train_cpu_ratio_p2o_over_grpo"] = (row["p2o"]["train_cpu_s"] / row["grpo"]["train_cpu_s"]) \
            if row["grpo"]["train_cpu_s"] else None
        per_seed.append(row)
    mean = lambda xs: sum(xs) / len(xs) if xs else None
    numeric = [k for k, v in per_seed[0]["p2o"].items() if isinstance(v, (int, float))]
    after = {kind: {k: mean([r[kind][k] for r in per_seed if r[kind][k] is not None]) for k in numeric} for kind in kinds}
    for kind in kinds:
        after[kind]["phases"] = {k: mean([r[kind]["phases"][k] for r in per_seed if r[kind]["phases"][k] is not None])
                                 for k in per_seed[0][kind]["phases"]}
    summary = {
        "levels": levels, "kinds": kinds,
        "before": {**{f"{name}_{label}": acc(base, lv, key) for name, lv in levels.items()
                      for key, label in (("plain", "acc"), ("sampled", "avg8"))},
                   "hard_acc_with_template": acc(base, levels["hard"], "template")},
        "after_mean": after,
        "wall_ratio_p2o_over_grpo": mean([r["wall_ratio_p2o_over_grpo"] for r in per_seed]),
        "train_ratio_p2o_over_grpo": mean([r["train_ratio_p2o_over_grpo"] for r in per_seed]),
        "cpu_ratio_p2o_over_grpo": mean([r["cpu_ratio_p2o_over_grpo"] for r in per_seed if r["cpu_ratio_p2o_over_grpo"]]),
        "train_cpu_ratio_p2o_over_grpo": mean([r["train_cpu_ratio_p2o_over_grpo"] for r in per_seed
                                               if r["train_cpu_ratio_p2o_over_grpo"]]),
        **paired([(done[("p2o", s)], done[("grpo", s)]) for s in seeds], levels),
        "p2o_guided_groups_nonzero_adv": (sum(r["p2o"]["guided_groups_nonzero_adv"] * r["p2o"]["guided_groups"]
                                              for r in per_seed if r["p2o"]["guided_groups"])
                                          / max(1, sum(r["p2o"]["guided_groups"] for r in per_seed))),
        "p2o_guided_groups": sum(r["p2o"]["guided_groups"] for r in per_seed),
        "p2o_guided_share_after_first_gepa": mean([r["p2o"]["guided_share_after_first_gepa"] for r in per_seed
                                                   if r["p2o"]["guided_share_after_first_gepa"] is not None]),
    }
    if "grpo_long" in kinds:
        summary["vs_grpo_long"] = {
            **paired([(done[("p2o", s)], done[("grpo_long", s)]) for s in seeds], levels),
            "wall_ratio_p2o_over_grpo_long": mean([r["p2o"]["wall_s"] / r["grpo_long"]["wall_s"] for r in per_seed])}
    return per_seed, summary


def table(per_seed, summary, hard_levels):
    f = lambda x: "-" if x is None or x != x else f"{x:.3f}"
    b, a, kinds = summary["before"], summary["after_mean"], summary["kinds"]
    names = {"grpo": "GRPO", "p2o": "P²O", "grpo_long": f"GRPO, {a.get('grpo_long', {}).get('steps', 0):.0f} steps"}
    lv = summary["levels"]
    head = f"| (mean of {len(per_seed)} seeds) | before | " + " | ".join(names[k] + " after" for k in kinds) + " |"
    lines = [head, "|---|---|" + "---|" * len(kinds)]
    row = lambda label, before, key: lines.append(f"| {label} | {before} | " + " | ".join(f(a[k].get(key)) for k in kinds) + " |")
    for name in LEVEL_SETS:
        row(f"held-out {name} levels {lv[name]}, greedy, no template", f(b[f'{name}_acc']), f"{name}_acc")
        row(f"held-out {name} levels {lv[name]}, avg@{SAMPLES} (sampled at the training temperature)",
            f(b[f'{name}_avg8']), f"{name}_avg8")
    row("hard levels with the seed template in the prompt", f(b["hard_acc_with_template"]), "hard_acc_with_template")
    row("hard-level groups with nonzero advantage", "-", "hard_groups_nonzero_adv")
    lines.append(f"| template-guided groups with nonzero advantage | - | P²O: {f(summary['p2o_guided_groups_nonzero_adv'])} "
                 f"of {summary['p2o_guided_groups']} |")
    lines.append(f"| share of groups template-guided, after the first GEPA run | - | P²O: "
                 f"{f(summary['p2o_guided_share_after_first_gepa'])} |")
    for key, label in (("wall_s", "wall time per run, s (training + this script's evaluation)"),
                       ("train_s", "training time per run, s"), ("gepa_s", "GEPA, s"),
                       ("gepa_share_of_train", "GEPA's share of training time"),
                       ("gepa_share_of_wall", "GEPA's share of wall time"),
                       ("cpu_s", "CPU time per run, s (one thread)"),
                       ("gepa_cpu_share_of_train", "GEPA's share of training CPU time")):
        lines.append(f"| {label} | - | " + " | ".join("-" if a[k].get(key) is None else f"{a[k][key]:.3f}"
                                                      if "share" in key else f"{a[k][key]:.0f}" for k in kinds) + " |")
    for key in ("rollout_s", "update_s", "between_s", "gepa_s", "groups_per_step"):
        how = "mean" if key == "groups_per_step" else "sum"
        lines.append(f"| phase: {key} ({how} over steps) | - | "
                     + " | ".join(f"{a[k]['phases'][key]:.1f}" for k in kinds) + " |")
    lines.append(f"\nP²O / GRPO wall time, mean of per-seed ratios: {summary['wall_ratio_p2o_over_grpo']:.3f} "
                 f"(training time: {summary['train_ratio_p2o_over_grpo']:.3f}; CPU time of the run: "
                 f"{f(summary['cpu_ratio_p2o_over_grpo'])}, of training: {f(summary['train_cpu_ratio_p2o_over_grpo'])})")
    blocks = [("P²O - GRPO", summary)] + ([("P²O - GRPO at about equal wall time", summary["vs_grpo_long"])]
                                          if "vs_grpo_long" in summary else [])
    for who, d0 in blocks:
        for name in LEVEL_SETS:
            for suffix, how in (("", "greedy"), ("_avg8", f"avg@{SAMPLES}")):
                d = d0[f"paired_diff_{name}{suffix}"]
                lines.append(f"{who}, {name} levels, {how}: {d['mean']:+.3f} (95% bootstrap interval "
                             f"{d['ci_low']:+.3f} .. {d['ci_high']:+.3f})")
    lines.append("\nper seed (hard / easy greedy GRPO vs P²O, guided groups, ρ-masked fraction, wall s GRPO / P²O):")
    for r in per_seed:
        lines.append(f"  seed {r['seed']}: {f(r['grpo']['hard_acc'])} / {f(r['grpo']['easy_acc'])} vs "
                     f"{f(r['p2o']['hard_acc'])} / {f(r['p2o']['easy_acc'])}, {r['p2o']['guided_groups']}, "
                     f"{f(r['p2o']['rho_masked_frac'])}, {r['grpo']['wall_s']:.0f} / {r['p2o']['wall_s']:.0f}")
    return "\n".join(lines)


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=0, help="training steps of the p2o and grpo arms (default: the demo's)")
    ap.add_argument("--grpo-long-steps", type=int, default=0,
                    help="also run GRPO for this many steps (kind grpo_long): GRPO given about P²O's wall time, e.g. "
                         "round(steps x P²O's / GRPO's wall time) from an equal-step bench")
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=None,
                    help="which arms to run (default: p2o grpo, and grpo_long with --grpo-long-steps)")
    ap.add_argument("--keep-runs", action="store_true",
                    help="keep the finished runs in --runs and run only the missing ones (default: delete --runs first)")
    ap.add_argument("--data", default="", help="training file (default: the demo's)")
    ap.add_argument("--train-args", default="", help="more p2o.py flags for every arm, as one string")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    ap.add_argument("--hard-levels", default="6", help="comma-separated levels counted as hard")
    ap.add_argument("--easy-levels", default="1", help="comma-separated levels counted as easy (what GRPO learns)")
    ap.add_argument("--runs", default="runs/bench_p2o_vs_grpo")
    ap.add_argument("--json", default="bench/results/p2o_vs_grpo.json")
    ap.add_argument("--child", choices=["base", *KINDS], help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    ap.add_argument("--summarize", action="store_true",
                    help="no new runs: compare the finished runs in --runs (seeds with both arms)")
    args = ap.parse_args()
    hard_levels = [int(x) for x in args.hard_levels.split(",")]
    easy_levels = [int(x) for x in args.easy_levels.split(",")]
    import p2o
    assert p2o.DEMO["group_size"] == DEMO_G and p2o.DEMO["prompts_per_step"] == DEMO_PROMPTS, "update DEMO_G"
    if args.child:
        out = Path(args.run_dir)
        out.mkdir(parents=True, exist_ok=True) if args.child == "base" else None
        child(args.child, args.seed, out, args.steps, hard_levels, args.data, args.train_args)
        return
    runs_dir = ROOT / args.runs
    t0, load0 = time.time(), os.getloadavg()[0]
    if not args.summarize:
        kinds = args.kinds or ["p2o", "grpo"] + (["grpo_long"] if args.grpo_long_steps else [])
        if "grpo_long" in kinds and not args.grpo_long_steps:
            sys.exit("--kinds grpo_long needs --grpo-long-steps N")
        if not args.keep_runs:
            shutil.rmtree(runs_dir, ignore_errors=True)
        runs_dir.mkdir(parents=True, exist_ok=True)
        finished = load_runs(runs_dir)
        jobs = [(kind, s) for kind, s in [("base", 0)] + [(k, s) for s in args.seeds for k in kinds]
                if (kind, s) not in finished]
        run_all(jobs, args.jobs, runs_dir, {"p2o": args.steps, "grpo": args.steps, "grpo_long": args.grpo_long_steps},
                hard_levels, args.data, args.train_args)
    done = load_runs(runs_dir)
    args.seeds = [s for s in args.seeds if ("p2o", s) in done and ("grpo", s) in done]
    if ("base", 0) not in done or not args.seeds:
        sys.exit(f"{runs_dir} has no base run or no seed with both arms finished")
    per_seed, summary = summarize(done, args.seeds, hard_levels, easy_levels)
    print(table(per_seed, summary, hard_levels))
    result = {"command": " ".join(["python", "bench/p2o_vs_grpo.py"] + sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": git_commit(),
              "settings": {**p2o.DEMO, **({"data": args.data} if args.data else {}), "train_args": args.train_args},
              "steps": args.steps or p2o.DEMO["steps"], "grpo_long_steps": args.grpo_long_steps or None,
              "seeds": args.seeds, "hard_levels": hard_levels, "easy_levels": easy_levels,
              "summary": summary, "per_seed": per_seed, "bench_wall_s": time.time() - t0,
              "loadavg_before_after": [load0, os.getloadavg()[0]], "machine": f"{cpu_name()}, {platform.platform()}",
              "cpus": os.cpu_count(), "peak_rss_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    write_results(ROOT / args.json, p2o.json_safe(result))  # a mean over no groups is NaN: JSON has null


if __name__ == "__main__":
    main()
