"""The ρ mask from the sampler's log-probs against the ρ mask from two training forwards, on the demo.

    python bench/rho_sampler_mismatch.py                       # seed 0, 24 demo steps, ~6 min alone on 2 cores
    python bench/rho_sampler_mismatch.py --steps 48 --seed 1 --json /tmp/rho1.json

P²O masks a guided token when ρ = π(y|x) / π(y|template+x) leaves [--rho-low, --rho-high]. p2o.py
takes π(y|template+x) from what the sampler recorded when it drew the token (Rollouts.sample_logp:
the rollout twin, bf16 on a CPU with native bf16) and π(y|x) from the update's own forward, so the
mask costs no forward of its own. The exact mask takes both from the training model (fp32 here), two
more forwards per guided micro-batch (what p2o.py did before). This runs `p2o.py --demo` with a hook
in front of every update that computes the exact one beside it and counts, over the guided tokens:
tokens masked by each, tokens where the two disagree, the gap between the sampler's and the training
model's log π(y|template+x), and the seconds the two exact forwards took (what the mask used to cost)
against the seconds the mask takes now and the update around it. Results -> bench/results/rho_sampler_mismatch.json.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

import p2o  # noqa: E402
from results_file import cpu_name, write_results  # noqa: E402


def exact_logprobs(model, batch, rows, cfg):
    """log π(y|x) and log π(y|template+x) of `rows` from the training model, no gradient."""
    c, m = batch.completions[rows], batch.mask[rows]
    args = (batch.pad_id, cfg.temperature, cfg.logprob_chunk)
    with torch.no_grad():
        orig = p2o.completion_logprobs(model, [batch.prompt_ids[i] for i in rows], c, m, *args)[0]
        tmpl = p2o.completion_logprobs(model, [batch.sample_ids[i] for i in rows], c, m, *args)[0]
    return orig, tmpl


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--out", default="runs/bench_rho_mismatch")
    ap.add_argument("--p2o-args", default="", help="more p2o.py flags for the demo")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "rho_sampler_mismatch.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    tally = {"update_s": 0.0, "guided_tokens": 0, "masked_exact": 0, "masked_sampler": 0, "masked_exact_only": 0,
             "masked_sampler_only": 0, "exact_forwards_s": 0.0, "steps_with_guided_rows": 0}
    gaps = []  # |log π_sampler(y|t+x) - log π_train(y|t+x)| per guided token
    rho_s = []
    real_update = p2o.update_policy

    def update(model, optimizer, scheduler, batch, cfg):
        rows = [i for i, t in enumerate(batch.templates) if t]
        if not rows:
            return real_update(model, optimizer, scheduler, batch, cfg)
        t0 = time.time()
        orig, tmpl = [], []
        for s in range(0, len(rows), cfg.micro_batch_size):  # as the exact mask was computed: by micro-batch
            o, t = exact_logprobs(model, batch, rows[s:s + cfg.micro_batch_size], cfg)
            orig.append(o)
            tmpl.append(t)
        tally["exact_forwards_s"] += time.time() - t0
        t1 = time.time()
        stats = real_update(model, optimizer, scheduler, batch, cfg)  # fills batch.loss_mask (the sampler's ρ)
        t2 = time.time()
        for s in range(0, len(rows), cfg.micro_batch_size):  # the mask as the update makes it, timed alone
            idx = rows[s:s + cfg.micro_batch_size]
            p2o.p2o_token_mask(model, batch, idx, orig[s // cfg.micro_batch_size], batch.mask[idx], cfg)
        rho_s.append(time.time() - t2)
        tally["update_s"] += t2 - t1
        tally["steps_with_guided_rows"] += 1
        m = batch.mask[rows].bool()
        o, t = torch.cat(orig), torch.cat(tmpl)
        exact = p2o.rho_mask(o, t, batch.mask[rows], cfg.rho_low, cfg.rho_high).bool()
        used = batch.loss_mask[rows].bool()
        tally["guided_tokens"] += int(m.sum())
        tally["masked_exact"] += int((m & ~exact).sum())
        tally["masked_sampler"] += int((m & ~used).sum())
        tally["masked_exact_only"] += int((m & ~exact & used).sum())
        tally["masked_sampler_only"] += int((m & exact & ~used).sum())
        gaps.extend((batch.sample_logp[rows].to(t) - t)[m].abs().tolist())
        return stats

    p2o.update_policy = update
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    run = Path(args.out)
    t0 = time.time()
    argv = ["--demo", "--seed", str(args.seed), "--steps", str(args.steps), "--out", str(run), "--eval-every", "0",
            *shlex.split(args.p2o_args)]
    cfg, given = p2o.parse_config(argv)
    cfg = p2o.Config(**{**cfg.__dict__, **{k: v for k, v in p2o.DEMO.items() if k not in given}, "eval": []})
    p2o.train(cfg, given | set(p2o.DEMO))
    gaps.sort()
    q = lambda f: round(gaps[min(len(gaps) - 1, int(f * len(gaps)))], 4) if gaps else None
    n = max(tally["guided_tokens"], 1)
    results = {"command": shlex.join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "machine": f"{cpu_name()}, {os.cpu_count()} cores", "seed": args.seed, "steps": args.steps,
               "twin_dtype": str(p2o.twin_dtype(torch.device("cpu"))), "rho_low": cfg.rho_low, "rho_high": cfg.rho_high,
               **tally, "exact_forwards_s": round(tally["exact_forwards_s"], 1), "update_s": round(tally["update_s"], 1),
               "sampler_mask_s": round(sum(rho_s), 2), "commit": commit,
               "masked_frac_exact": round(tally["masked_exact"] / n, 5),
               "masked_frac_sampler": round(tally["masked_sampler"] / n, 5),
               "disagree_frac": round((tally["masked_exact_only"] + tally["masked_sampler_only"]) / n, 5),
               "logp_gap_median": q(0.5), "logp_gap_p99": q(0.99), "logp_gap_max": gaps[-1] if gaps else None,
               "run_s": round(time.time() - t0, 1)}
    print(json.dumps(results, indent=1))
    write_results(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
