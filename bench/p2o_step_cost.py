"""What a training step costs on the demo, GRPO against P²O's step before and after issue 26, side by side.

    python bench/p2o_step_cost.py                 # 6 rounds, ~6 min alone on 2 cores (one thread)
    python bench/p2o_step_cost.py --rounds 10 --json /tmp/cost.json

One process, one thread, the demo's model and settings (p2o.DEMO: SmolLM2-135M-Instruct, G = 4,
32 new tokens, temperature 0.7, micro-batches of 4, the bf16 rollout twin where the CPU has bf16).
Each round draws 4 new problems from the demo's data and times one step of each kind on them, in a
rotating order (so a slower machine slows every kind alike): rollouts (sample_rollouts), rewards
(decode + verify), the update (update_policy, then the twin's refresh), at lr 0 so every round
starts from the base policy. Guided problems are level-6 problems sampled with the first seed
template (data/demo_templates.txt), as after a GEPA run.

  grpo           4 new problems, plain                               (plain GRPO's step)
  before         2 new + 2 replayed guided, in place of new ones, and the ρ mask's two no-grad
                 forwards per guided micro-batch                     (P²O's step before issue 26)
  on_top_0.25    4 new + 1 replayed guided on top, ρ from the sampler's log-probs (--replay-share 0.25)
  on_top_0.5     4 new + 2 replayed guided on top, ρ from the sampler's log-probs (--replay-share 0.5)

GEPA is not in a step: its share comes from the bench's runs (bench/p2o_vs_grpo.py, time/gepa_s).
Results -> bench/results/p2o_step_cost.json: median wall and CPU seconds per kind and phase, and
their ratios to grpo (CPU seconds of this one-thread process: what a busy machine inflates least).
"""
import argparse
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

import p2o  # noqa: E402
from results_file import cpu_name, write_results  # noqa: E402

KINDS = {"grpo": (4, 0, False), "before": (2, 2, True), "on_top_0.25": (4, 1, False), "on_top_0.5": (4, 2, False)}


def exact_rho_forwards(model, batch, cfg):
    """What P²O's ρ mask cost before: π(y|x) and π(y|t+x) by two no-grad forwards per guided micro-batch."""
    guided = [i for i, t in enumerate(batch.templates) if t]
    with torch.no_grad():
        for s in range(0, len(guided), cfg.micro_batch_size):
            idx = guided[s:s + cfg.micro_batch_size]
            c, m = batch.completions[idx], batch.mask[idx]
            for ids in (batch.prompt_ids, batch.sample_ids):
                p2o.completion_logprobs(model, [ids[i] for i in idx], c, m, batch.pad_id, cfg.temperature,
                                        cfg.logprob_chunk)


def one_step(engine, optimizer, scheduler, problems, state, cfg, rng, exact_rho):
    """One step's phases in wall seconds (`*_s`) and CPU seconds of this process (`*_cpu`: what a busy
    machine does not inflate much)."""
    marks = [(time.time(), time.process_time())]
    model = engine.policy
    batch = p2o.sample_rollouts(engine, problems, cfg, state, rng)
    marks.append((time.time(), time.process_time()))
    texts = p2o.decode(engine.tok, batch.completions, batch.mask)
    rewards, _ = p2o.reward_rollouts(texts, [p["answer"] for p in problems for _ in range(cfg.group_size)])
    batch.advantages = p2o.group_advantages(torch.tensor(rewards), cfg.group_size, cfg.scale_rewards)
    marks.append((time.time(), time.process_time()))
    if exact_rho:
        exact_rho_forwards(model, batch, cfg)
    marks.append((time.time(), time.process_time()))
    p2o.update_policy(model, optimizer, scheduler, batch, cfg)
    engine.follow()
    marks.append((time.time(), time.process_time()))
    out = {"rows": len(texts), "tokens": int(batch.mask.sum())}
    for k, name in enumerate(("rollout", "reward", "rho_forwards", "update")):
        out[f"{name}_s"], out[f"{name}_cpu"] = (marks[k + 1][j] - marks[k][j] for j in (0, 1))
    out["step_s"], out["step_cpu"] = (marks[-1][j] - marks[0][j] for j in (0, 1))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "p2o_step_cost.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = p2o.Config(**{**p2o.Config().__dict__, **p2o.DEMO, "eval": [], "lr": 0.0, "warmup_steps": 0,
                        "seed": args.seed})
    torch.manual_seed(args.seed)
    model, tok = p2o.load_model(cfg, torch.device("cpu"))
    engine = p2o.make_engine(model, tok, cfg, torch.device("cpu"))
    optimizer, scheduler = p2o.make_optimizer(model, cfg)
    problems = p2o.load_problems(str(ROOT / cfg.data))
    hard = [p for p in problems if "-L6-" in p["id"]]
    template = p2o.load_templates(str(ROOT / cfg.templates))[0]
    state = p2o.P2OState(templates=[template])
    pos, rng = {"epoch": 0, "index": 0}, random.Random(args.seed)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    times = {k: [] for k in KINDS}
    order = list(KINDS)
    for r in range(args.rounds):
        new = p2o.next_problems(problems, pos, 4, args.seed)
        replay = rng.sample([p for p in hard if p["id"] not in {q["id"] for q in new}], 2)
        state.hard = {p["id"]: {**p, "failures": []} for p in replay}
        state.weights = {p["id"]: [1.0] for p in replay}
        for kind in order[r % len(order):] + order[:r % len(order)]:  # rotate who goes first
            n_new, n_replay, exact = KINDS[kind]
            step_rng = random.Random(1000 * r)  # the same template draws for every kind
            torch.manual_seed(1000 * r)  # the same sampling noise for every kind
            times[kind].append(one_step(engine, optimizer, scheduler, new[:n_new] + replay[:n_replay], state, cfg,
                                        step_rng, exact))
        print(f"round {r + 1}: " + ", ".join(f"{k} {times[k][-1]['step_s']:.1f} s" for k in KINDS), flush=True)
    med = {k: {ph: statistics.median(x[ph] for x in v) for ph in v[0]} for k, v in times.items()}
    results = {"command": shlex.join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "commit": commit, "machine": f"{cpu_name()}, {os.cpu_count()} cores",
               "loadavg": os.getloadavg(), "rounds": args.rounds, "twin_dtype": str(p2o.twin_dtype(torch.device("cpu"))),
               "median": med, "step_ratio_to_grpo": {k: med[k]["step_s"] / med["grpo"]["step_s"] for k in KINDS},
               "step_cpu_ratio_to_grpo": {k: med[k]["step_cpu"] / med["grpo"]["step_cpu"] for k in KINDS},
               "per_round": times}
    print(json.dumps({k: results[k] for k in ("median", "step_ratio_to_grpo", "step_cpu_ratio_to_grpo")}, indent=1))
    write_results(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
