"""Do templates reach rollouts at the default settings? The kit's own data walk, hard buffer, GEPA
schedule, template assignment and replay, run without a model.

Every function that decides which problems a step samples and which get templates is p2o.py's own
(draw_problems, collect_hard, gepa_due, split_hard, give_templates, assign_templates,
tally_templates); only the model is replaced by an oracle, as in the count that found the problem:
half of the problems are hard (every plain rollout fails); GEPA's template solves half of the hard
problems in its scoring set greedily, and on those a guided rollout succeeds with probability
--guided-rate; everything else succeeds with probability --easy-rate. Counts guided groups (a
template in the prompt) and those with a nonzero advantage, per schedule and data size.

    python bench/p2o_schedule.py                  # the default runs and the README's one-GPU recipe
    python bench/p2o_schedule.py --quick          # two small cases (CI-sized)
"""
import argparse
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import p2o  # noqa: E402
from results_file import write_results  # noqa: E402


def simulate(n_problems: int, steps: int, schedule: str, seed: int = 0, guided_rate: float = 0.5,
             easy_rate: float = 0.6, **flags) -> dict:
    cfg = p2o.Config(steps=steps, p2o_schedule=schedule, seed=seed, **flags)
    rng = random.Random(seed + 7_919)  # not the data walk's stream: Random(0) would pick its complement
    problems = [{"id": f"p{i}", "question": f"q{i}", "answer": "1"} for i in range(n_problems)]
    hard = set(rng.sample([p["id"] for p in problems], n_problems // 2))
    solvable = {i for i in hard if rng.random() < 0.5}  # what a template can fix
    st, pos, G = p2o.P2OState(), {"epoch": 0, "index": 0}, cfg.group_size
    seeds_cap = max(1, min(300, cfg.gepa_budget // 4))
    out = {"guided_groups": 0, "guided_nonzero_adv": 0, "groups": 0, "replayed": 0, "gepa_runs": 0,
           "first_gepa_step": None, "first_guided_step": None, "groups_after_first_gepa": 0}
    for step in range(steps):
        epoch_before = pos["epoch"]
        batch, replayed = p2o.draw_problems(problems, pos, st, cfg)
        out["replayed"] += replayed
        rewards, templates_all = [], []
        for prob in batch:
            templates = p2o.assign_templates(st, prob, G, rng)
            for g in range(G):
                t = templates[g] if templates else ""
                if prob["id"] not in hard:
                    ok = rng.random() < easy_rate
                else:
                    ok = bool(t) and prob["id"] in solvable and rng.random() < guided_rate
                rewards.append(float(ok))
                templates_all.append(t)
            if templates:
                succ = sum(rewards[-G:])
                out["guided_groups"] += 1
                out["guided_nonzero_adv"] += 0 < succ < G
                if out["first_guided_step"] is None:
                    out["first_guided_step"] = step + 1
        out["groups"] += len(batch)
        if out["first_gepa_step"] is not None:
            out["groups_after_first_gepa"] += len(batch)
        p2o.tally_templates(st, templates_all, rewards)
        p2o.collect_hard(st, batch, rewards, ["x"] * len(rewards), ["wrong"] * len(rewards), cfg)
        if p2o.gepa_due(st, cfg, step, epoch_before, pos):  # GEPA, as run_gepa does it, the model an oracle
            val, train_set = p2o.split_hard(list(st.hard.values()), seeds_cap, seed=cfg.seed * 1009 + st.runs)
            state = SimpleNamespace(candidates=["", "template"],
                                    val_scores=[[0.0] * len(val), [float(ex["id"] in solvable) for ex in val]])
            st.runs += 1
            p2o.give_templates(st, state, val, [ex for ex in train_set if ex not in val],
                               cfg.hard_threshold / cfg.group_size)
            out["gepa_runs"] += 1
            out["first_gepa_step"] = out["first_gepa_step"] or step + 1
    out["guided_share_after_first_gepa"] = out["guided_groups"] / max(out["groups_after_first_gepa"], 1)
    return out


CASES = [  # (what, problems, steps, flags)
    ("default: python p2o.py (data/arith_train.jsonl)", 2000, 200, {}),
    ("README one-GPU recipe (MATH levels 4-5, --gepa-every 50)", 3977, 200, {"gepa_every": 50}),
    ("default data, 1,000 steps", 2000, 1000, {}),
    ("recipe data, 2,000 steps", 3977, 2000, {"gepa_every": 50}),
]
QUICK = [("quick: 200 problems, 40 steps, --gepa-every 10", 200, 40, {"gepa_every": 10})]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one small case (seconds)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="bench/results/p2o_schedule.json")
    args = ap.parse_args()
    rows, t0 = [], time.time()
    print("| case | schedule | groups | guided (share after 1st GEPA) | nonzero adv | GEPA runs | 1st GEPA / 1st guided step |")
    print("|---|---|---|---|---|---|---|")
    for what, n, steps, flags in (QUICK if args.quick else CASES):
        for schedule in ("replay", "epoch"):
            r = simulate(n, steps, schedule, seed=args.seed, **flags)
            rows.append({"case": what, "problems": n, "steps": steps, "flags": flags, "schedule": schedule, **r})
            print(f"| {what} | {schedule} | {r['groups']} | {r['guided_groups']} ({r['guided_share_after_first_gepa']:.2f}) "
                  f"| {r['guided_nonzero_adv']} | {r['gepa_runs']} | {r['first_gepa_step']} / {r['first_guided_step']} |")
    write_results(args.json, {"command": "python bench/p2o_schedule.py" + (" --quick" if args.quick else ""),
                              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seed": args.seed,
                              "oracle": "half the problems hard; a template solves half of those (guided rate 0.5); "
                                        "other rollouts succeed at 0.6", "rows": rows,
                              "seconds": round(time.time() - t0, 1)})


if __name__ == "__main__":
    main()
