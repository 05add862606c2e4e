"""Time and peak memory of p2o.py's evaluation on Qwen2.5-0.5B / 1.5B-shaped models.

    python bench/eval_time.py                        # on CUDA: 0.5B and 1.5B -> bench/results/eval_time.json
    python bench/eval_time.py --sizes 1.5B --max-new-tokens 512
    python bench/eval_time.py --dry-run              # CPU check of this script: a 2-layer model, 8 tokens

The one-GPU recipe's evaluation time and memory have not been measured on a GPU; this measures
them. Each size is the real Qwen2.5 architecture with random weights
(bench/gpu_memory.py builds it; no download), loaded the way p2o.py loads it (4-bit NF4 + LoRA on
CUDA). A random model almost never writes EOS, so every answer runs to --max-new-tokens: the
figures are an upper bound for real answers. Problems: the first --limit of --eval
(MATH-500 when ../shared/benchmarks is present, else data/arith_test.jsonl). Three evaluations
per size, each timed around p2o.run_evals with the peak allocated memory reset before it:
greedy at --gen-batch-size 64; greedy + K=4 samples at 64; the same at 256.
"""
import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import gpu_memory  # noqa: E402  (the random-weight Qwen2.5 builder)

from results_file import write_results  # bench/ is this script's folder

MATH500 = os.path.join(os.path.dirname(ROOT), "shared", "benchmarks", "math500", "test.jsonl")
RUNS = [("greedy, batch 64", 0, 64), ("greedy + avg@4, batch 64", 4, 64), ("greedy + avg@4, batch 256", 4, 256)]


def parse_args():
    ap = argparse.ArgumentParser(description="p2o.py evaluation time and memory on Qwen2.5 shapes")
    ap.add_argument("--sizes", default="0.5B,1.5B")
    ap.add_argument("--eval", default=MATH500 if os.path.exists(MATH500) else
                    os.path.join(ROOT, "data", "arith_test.jsonl"))
    ap.add_argument("--limit", type=int, default=64, help="problems evaluated")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--json", default=None, help="default: bench/results/eval_time.json (dry run: not written)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, 2-layer model, 8 tokens, 4 problems")
    args = ap.parse_args()
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if any(s not in gpu_memory.QWEN25 for s in args.sizes):
        ap.error(f"--sizes: choose from {', '.join(gpu_memory.QWEN25)}")
    if args.dry_run:
        args.limit, args.max_new_tokens, args.sizes = 4, 8, args.sizes[:1]
    elif args.json is None:
        args.json = os.path.join(ROOT, "bench", "results", "eval_time.json")
    return args


def time_size(size, args, folder):
    import torch
    import p2o
    tok, _ = gpu_memory.build_tokenizer(folder, "auto", os.path.join(ROOT, "data", "arith_train.jsonl"))
    gpu_memory.build_model(folder, size, tok, args.dry_run)
    device = "cpu" if args.dry_run else "cuda"
    base = ["--model", folder, "--device", device, "--eval", f"bench={args.eval}", "--eval-limit", str(args.limit),
            "--max-new-tokens", str(args.max_new_tokens)]
    cfg, _ = p2o.parse_config(base)
    model, tok = p2o.load_model(cfg, torch.device(device))
    engine = p2o.make_engine(model, tok, cfg, torch.device(device))
    evals = p2o.fit_evals([("bench", args.eval, p2o.load_problems(args.eval))], engine, cfg)
    rows = []
    for label, k, batch in RUNS:
        cfg, _ = p2o.parse_config(base + ["--eval-samples", str(k), "--gen-batch-size", str(batch)])
        engine.batch_size = batch  # (the engine built once, as in a run; its compiled buckets from the first cfg)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        p2o.run_evals(engine, cfg, evals, 0, lambda row: None)
        if device == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        n = min(args.limit, len(p2o.load_problems(args.eval, warn=False)))
        batches = -(-n // batch) + (-(-n * k // batch) if k else 0)
        rows.append({"run": label, "problems": n, "samples": k, "gen_batch_size": batch, "batches": batches,
                     "answers": n * (1 + k), "wall_s": wall, "s_per_batch": wall / batches,
                     "ms_per_decode_step": 1000 * wall / (batches * args.max_new_tokens),
                     "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None})
    del model, engine
    return rows


def main():
    args = parse_args()
    import torch
    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("eval_time.py needs a CUDA GPU (or --dry-run)")
    results = {"device": gpu_memory.gpu_name() if not args.dry_run else "cpu (dry run)",
               "date": time.strftime("%Y-%m-%d"), "eval": args.eval, "max_new_tokens": args.max_new_tokens,
               "how": "p2o.run_evals on a random-weight Qwen2.5-shaped model (4-bit + LoRA on CUDA); every "
                      "answer runs to max_new_tokens", "sizes": {}}
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            results["sizes"][size] = time_size(size, args, folder)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print(f"\n{results['device']}, {args.max_new_tokens} new tokens per answer")
    print("| size | run | answers | batches | wall s | s/batch | ms/decode step | peak MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for size, rows in results["sizes"].items():
        for r in rows:
            peak = f"{r['peak_mb']:.0f}" if r["peak_mb"] is not None else "-"
            print(f"| {size} | {r['run']} | {r['answers']} | {r['batches']} | {r['wall_s']:.1f} | "
                  f"{r['s_per_batch']:.1f} | {r['ms_per_decode_step']:.0f} | {peak} |")
    if args.json:
        write_results(args.json, results)


if __name__ == "__main__":
    main()
