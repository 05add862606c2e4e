"""A real p2o run's shapes on a GPU, each rollout engine side by side: a short P²O run (rollouts,
GEPA with the `self` reflector, evaluations) on random-weight Qwen2.5 shapes, per engine

    peft            --rollout-engine peft                 (the 4-bit + LoRA training model generates)
    twin_eager      --rollout-engine twin --compile off   (bf16 twin, dynamic cache)
    twin_compiled   --rollout-engine twin --compile on    (bf16 twin, static caches, compiled: the CUDA default)

each in its own process. Reported per engine: compile time, rollout/graphs and rollout/eager_calls,
tokens/s per phase (rollouts, GEPA scoring, reflection, evaluation; a phase's time includes the
compiles that landed in it, which are also given apart), train/sampler mismatch, step and update
time, and peak memory (torch.cuda.max_memory_allocated and max_memory_reserved).

    python bench/gpu_p2o_run.py                        # CUDA: 0.5B and 1.5B -> bench/results/gpu_run_<card>.json
    python bench/gpu_p2o_run.py --sizes 1.5B --engines twin_compiled
    python bench/gpu_p2o_run.py --dry-run --out-dir /tmp  # CPU check: 2-layer models, tiny run; not the targets

Models: the real Qwen2.5 architectures with random weights (bench/gpu_memory.py builds them; no
download). Rollouts are forced to full length (--min-new-tokens), so random weights cost what real
ones would; every problem stays unsolved, so every problem is hard and GEPA runs every 2 steps.
Targets (issue 17, H100-class card): twin rollouts >= 10k tokens/s at 0.5B and >= 5k at 1.5B (batch
64); a 1.5B step <= 12 s and <= 6 GB peak; the peft engine <= 4 GB.
"""
import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
from results_file import write_results  # noqa: E402

ENGINES = {"peft": ["--rollout-engine", "peft", "--compile", "off"],
           "twin_eager": ["--rollout-engine", "twin", "--compile", "off"],
           "twin_compiled": ["--rollout-engine", "twin", "--compile", "on"]}
TARGETS = {"rollout_tokens_per_s": {"0.5B": 10_000, "1.5B": 5_000}, "step_s": {"1.5B": 12},
           "peak_gb": {"1.5B": 6}, "peft_peak_gb": {"1.5B": 4}}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="p2o engines side by side on a short P²O run")
    ap.add_argument("--sizes", default="0.5B,1.5B")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--prompts-per-step", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--gepa-budget", type=int, default=64)
    ap.add_argument("--eval-limit", type=int, default=64)
    ap.add_argument("--reflector-max-new-tokens", type=int, default=128)
    ap.add_argument("--timeout", type=int, default=400, help="seconds per engine run")
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--json", default=None, help="default: OUT_DIR/gpu_run_<card>.json")
    ap.add_argument("--dry-run", action="store_true", help="CPU check: 2-layer models, G=2 x 2 prompts x 8 tokens")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one engine's run, as JSON
    args = ap.parse_args(argv)
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if set(args.engines) - set(ENGINES):
        ap.error(f"--engines: choose from {', '.join(ENGINES)}")
    if args.dry_run:
        args.steps, args.group_size, args.prompts_per_step, args.max_new_tokens = 3, 2, 2, 8
        args.gepa_budget, args.eval_limit, args.reflector_max_new_tokens = 12, 4, 8
    return args


def p2o_flags(args, model_dir, out, engine):
    device = "cpu" if args.dry_run else "cuda"
    return ["--model", model_dir, "--data", os.path.join(ROOT, "data", "arith_train.jsonl"), "--out", out,
            "--device", device, "--steps", str(args.steps), "--group-size", str(args.group_size),
            "--prompts-per-step", str(args.prompts_per_step), "--max-new-tokens", str(args.max_new_tokens),
            "--min-new-tokens", str(args.max_new_tokens), "--gen-batch-size", str(8 if args.dry_run else 64),
            "--gepa-every", "2", "--gepa-min-hard", "2", "--gepa-budget", str(args.gepa_budget),
            "--reflector", "self", "--reflector-max-new-tokens", str(args.reflector_max_new_tokens),
            "--eval", os.path.join(ROOT, "data", "arith_test.jsonl"), "--eval-every", "2",
            "--eval-limit", str(args.eval_limit), "--save-every", "1000", "--no-log-completions",
            *ENGINES[engine]]


def child(spec_path):
    """One engine's run in this process: p2o.train with every generate call timed by phase."""
    import torch
    import p2o
    spec = json.load(open(spec_path))
    cuda = torch.cuda.is_available() and "cuda" in spec["flags"]
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    phase, stats = ["rollout"], defaultdict(lambda: {"calls": 0, "tokens": 0, "seconds": 0.0, "compile_s": 0.0})
    real_make = p2o.make_engine

    def make_engine(*a, **k):  # the run's engine, its generate calls timed and its adapter_off a phase
        engine = real_make(*a, **k)
        real_gen, real_off = engine.generate, engine.adapter_off

        def gen(*a, **k):
            c0 = engine.stats().get("rollout/compile_s", 0.0)
            sync()
            t0 = time.perf_counter()
            result = real_gen(*a, **k)
            sync()
            s = stats[phase[-1]]
            s["calls"] += 1
            s["tokens"] += int(result[1].sum())
            s["seconds"] += time.perf_counter() - t0
            s["compile_s"] += engine.stats().get("rollout/compile_s", 0.0) - c0
            return result

        @contextlib.contextmanager
        def reflecting():
            phase.append("reflect")
            try:
                with real_off():
                    yield
            finally:
                phase.pop()
        engine.generate, engine.adapter_off = gen, reflecting
        return engine

    def in_phase(name, fn):
        def wrapped(*a, **k):
            phase.append(name)
            try:
                return fn(*a, **k)
            finally:
                phase.pop()
        return wrapped

    p2o.make_engine = make_engine
    p2o.run_gepa = in_phase("gepa", p2o.run_gepa)
    p2o.run_evals = in_phase("eval", p2o.run_evals)
    cfg, given = p2o.parse_config(spec["flags"])
    t0 = time.perf_counter()
    out = p2o.train(cfg, given)
    wall = time.perf_counter() - t0
    rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if l.strip()]
    steps = [r for r in rows if "loss" in r]
    mean = lambda xs: sum(xs) / max(len(xs), 1)  # noqa: E731
    result = {
        "wall_s": wall, "engine": steps[-1]["rollout/engine"], "compile_s": steps[-1]["rollout/compile_s"],
        "graphs": [r["rollout/graphs"] for r in steps], "eager_calls": [r["rollout/eager_calls"] for r in steps],
        "mismatch_frac": mean([r["rollout/mismatch_frac"] for r in steps]),
        "step_s": [r["step_time"] for r in steps], "rollout_s": [r["time/rollout_s"] for r in steps],
        "update_s": [r["time/update_s"] for r in steps], "gepa_runs": steps[-1].get("p2o/gepa_runs"),
        "phases": {k: v | {"tokens_per_s": v["tokens"] / max(v["seconds"], 1e-9),
                           "tokens_per_s_without_compile": v["tokens"] / max(v["seconds"] - v["compile_s"], 1e-9)}
                   for k, v in stats.items()},
    }
    # torch's own counts: unique graphs, recompiles, and CUDA graph skips (a re-recording limit hit)
    from torch._dynamo.utils import counters
    result["torch_counters"] = {k: dict(counters[k]) for k in ("stats", "inductor", "recompiles") if k in counters}
    if cuda:
        result |= {"peak_allocated_gb": torch.cuda.max_memory_allocated() / 2**30,
                   "peak_reserved_gb": torch.cuda.max_memory_reserved() / 2**30}
    json.dump(result, open(spec["result"], "w"))


def card_name():
    import torch
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def run_engine(args, size, model_dir, engine, work):
    spec = {"flags": p2o_flags(args, model_dir, os.path.join(work, f"run-{size}-{engine}"), engine),
            "result": os.path.join(work, f"{size}-{engine}.json")}
    json.dump(spec, open(os.path.join(work, "spec.json"), "w"))
    log_path = os.path.join(work, f"{size}-{engine}.log")
    with open(log_path, "w") as log:
        try:
            rc = subprocess.call([sys.executable, os.path.abspath(__file__), "--child", os.path.join(work, "spec.json")],
                                 stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            rc = "timeout"
    text = open(log_path, errors="replace").read()
    said = [l for l in text.splitlines() if l.startswith("p2o: ") and ("engine" in l or "warning" in l or "note" in l)]
    if rc != 0:
        return {"error": f"exit {rc}", "log_tail": text[-3000:], "p2o_said": said}
    return json.load(open(spec["result"])) | {"p2o_said": said}


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return child(args.child)
    import gpu_memory as g
    card = "cpu_dry_run" if args.dry_run else card_name()
    results = {"card": card, "dry_run": args.dry_run, "runs": [],
               "settings": {k: getattr(args, k) for k in ("steps", "group_size", "prompts_per_step", "max_new_tokens",
                                                          "gepa_budget", "eval_limit", "reflector_max_new_tokens")},
               "targets": TARGETS, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    with tempfile.TemporaryDirectory(prefix="p2o_gpu_run_") as work:
        for size in args.sizes:
            model_dir = os.path.join(work, size)
            tok, _ = g.build_tokenizer(model_dir, "auto", os.path.join(ROOT, "data", "arith_train.jsonl"))
            g.build_model(model_dir, size, tok, dry_run=args.dry_run)
            for engine in args.engines:
                print(f"== {size} {engine}", flush=True)
                r = run_engine(args, size, model_dir, engine, work) | {"size": size, "engine_asked": engine}
                results["runs"].append(r)
                if "error" in r:
                    print(f"   FAILED ({r['error']}):\n{r['log_tail'][-1500:]}", flush=True)
                    continue
                ph = "  ".join(f"{k} {v['tokens_per_s']:.0f}" for k, v in r["phases"].items())
                peak = (f"peak {r['peak_allocated_gb']:.2f}/{r['peak_reserved_gb']:.2f} GB (alloc/reserved)"
                        if "peak_allocated_gb" in r else "")
                print(f"   compile {r['compile_s']:.1f} s  graphs {r['graphs'][-1]}  eager calls {r['eager_calls'][-1]}  "
                      f"step {sum(r['step_s'][1:]) / max(len(r['step_s']) - 1, 1):.1f} s  mismatch "
                      f"{r['mismatch_frac']:.4f}  {peak}\n   tokens/s: {ph}", flush=True)
    write_results(args.json or os.path.join(args.out_dir, f"gpu_run_{card}.json"), results)
    return results


if __name__ == "__main__":
    main()
