"""The demo with the rollout twin forced to one dtype: does P²O's effect hold on a CPU without bf16?

    python bench/demo_twin_dtype.py --dtype fp32 --out runs/demo-fp32     # ~10 min alone on 2 cores
    python bench/demo_twin_dtype.py --dtype fp32 --seed 3 --out runs/demo-fp32-3 --json /tmp/s3.json
    python bench/demo_twin_dtype.py --summarize runs/demo-fp32 --dtype fp32   # the table again, no run
    python bench/demo_twin_dtype.py --combine /tmp/s*.json --json bench/results/demo_twin_fp32_seeds.json

p2o.py picks the twin's dtype from the machine (`twin_dtype`: bf16 where the CPU has native bf16
instructions, else fp32), so a bf16 box never runs the fp32 twin that most laptops get. This runs
`python p2o.py --demo` unchanged except for that choice, then reads the run's own files: held-out
accuracy at the first and last evaluation, guided groups and those with a nonzero advantage, the
mean train/sampler mismatch (rollout/mismatch_frac), GEPA time, wall time and peak RSS. Results -> bench/results/demo_twin_<dtype>.json.
"""
import argparse
import json
import os
import resource
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402

import p2o  # noqa: E402
from results_file import cpu_name, write_results  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def summarize(run: Path) -> dict:
    """The demo's figures from its metrics.jsonl and gepa_runs.jsonl."""
    rows = p2o.read_rows(run / "metrics.jsonl")
    steps = [r for r in rows if "loss" in r]
    evals = [{k: v for k, v in r.items() if k == "step" or k.endswith("/accuracy")}
             for r in rows if any(k.endswith("/accuracy") for k in r)]
    gepa = p2o.read_rows(run / "gepa_runs.jsonl") if (run / "gepa_runs.jsonl").exists() else []
    return {"steps": len(steps), "evals_first": evals[0] if evals else {}, "evals_last": evals[-1] if evals else {},
            "guided_groups": sum(r.get("p2o/guided_groups", 0) for r in steps),
            "guided_nonzero_adv_groups": sum(r.get("p2o/guided_nonzero_adv_groups", 0) for r in steps),
            "mismatch_frac_mean": round(sum(r.get("rollout/mismatch_frac", 0.0) for r in steps) / max(len(steps), 1), 4),
            "gepa_runs": len(gepa), "gepa_s": round(steps[-1].get("p2o/gepa_seconds", 0.0), 1) if steps else 0.0}


def combine(runs: list[dict]) -> dict:
    """Per-seed files of this script -> one record: level 6 and level 1 per seed, and in how many
    seeds level 6 ended above its start (the demo's target: 5 of 6)."""
    acc = lambda r, when, level: r[f"evals_{when}"].get(f"eval/demo_test_l{level}/accuracy")
    rows = [{"seed": r["seed"], "twin_dtype": r["twin_dtype"], "p2o_args": r.get("p2o_args", ""),
             "l6_start": acc(r, "first", 6), "l6_end": acc(r, "last", 6), "l1_start": acc(r, "first", 1),
             "l1_end": acc(r, "last", 1), "guided_groups": r["guided_groups"],
             "guided_nonzero_adv_groups": r["guided_nonzero_adv_groups"], "wall_s": r.get("wall_s"),
             "peak_rss_kb": r.get("peak_rss_kb"), "command": r["command"]} for r in sorted(runs, key=lambda r: r["seed"])]
    mean = lambda k: round(sum(x[k] for x in rows) / len(rows), 4)
    return {"date": time.strftime("%Y-%m-%d"), "machine": runs[0].get("machine"), "seeds": len(rows),
            "per_seed": rows, "mean_l6_end": mean("l6_end"), "mean_l1_end": mean("l1_end"),
            "seeds_l6_above_start": sum(x["l6_end"] > x["l6_start"] for x in rows)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--seed", type=int, default=0, help="the demo's --seed")
    ap.add_argument("--out", default="runs/demo-twin", help="the demo's --out folder")
    ap.add_argument("--p2o-args", default="", help="more p2o.py flags for the demo, e.g. \"--rho-low 1e-6\" (an ablation)")
    ap.add_argument("--summarize", metavar="RUN", help="only read an existing run folder")
    ap.add_argument("--json", help="default: bench/results/demo_twin_<dtype>.json")
    ap.add_argument("--combine", nargs="+", metavar="JSON", help="only read per-seed files of this script "
                    "and write one table of them (held-out level 6 and level 1 per seed) to --json")
    args = ap.parse_args()
    if args.combine:
        results = combine([json.loads(Path(f).read_text()) for f in args.combine])
        print(json.dumps(results, indent=1))
        write_results(args.json or str(Path(__file__).parent / "results" / "demo_twin_seeds.json"), results)
        return 0
    results = {"command": shlex.join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d"),
               "machine": f"{cpu_name()}, {os.cpu_count()} cores", "twin_dtype": args.dtype, "seed": args.seed,
               "p2o_args": args.p2o_args}
    run = Path(args.summarize or args.out)
    if not args.summarize:
        p2o.twin_dtype = lambda device: DTYPES[args.dtype]
        t0 = time.time()
        rc = p2o.main(["--demo", "--seed", str(args.seed), "--out", str(run), *shlex.split(args.p2o_args)])
        if rc:
            return rc
        ru = resource.getrusage(resource.RUSAGE_SELF)
        results.update(wall_s=round(time.time() - t0, 1), cpu_s=round(ru.ru_utime + ru.ru_stime, 1),
                       peak_rss_kb=ru.ru_maxrss)
    results.update(summarize(run))
    print(json.dumps(results, indent=1))
    write_results(args.json or str(Path(__file__).parent / "results" / f"demo_twin_{args.dtype}.json"), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
