"""The vllm rollout engine against the twin, on the CPU: rollout tokens/s, training step time, and how well
the sampler's log-probs match the trainer's (mismatch). Needs a running vLLM server (tests/vllm_server.sh).

    bash tests/vllm_server.sh install && bash tests/vllm_server.sh start
    python bench/vllm_vs_twin.py --vllm-url http://127.0.0.1:8765/v1 --json bench/results/vllm_vs_twin_cpu.json
    python bench/vllm_vs_twin.py --demo-run runs/demo-vllm --json bench/results/demo_vllm_cpu.json   # a demo's figures

Model: the one the server serves (read from /v1/models), loaded by p2o in fp32 on the CPU with a nonzero
LoRA adapter (as after some training; for vllm it is sent to the server like every step's). Generation:
--prompts distinct chat prompts x G=4 rollouts, sampled at T=0.7 up to --new-tokens (they may end earlier, at
EOS), --rounds timed calls per engine, alternating; the fastest counts. tokens/s = completion tokens / wall
seconds. mismatch_frac: completion tokens whose ratio trainer / sampler leaves [0.9, 1.1] (p2o's
rollout/mismatch_frac); mean_abs_logp_gap: mean |log pi_trainer - log pi_sampler| per token. Step time: a
--steps-step GRPO run of p2o with the twin (in p2o's dtype for this CPU) and with vllm (demo-sized
settings), from its metrics.jsonl, the first step left out.
On a 2-core CPU the server and the trainer share the cores, and vLLM's CPU path is not what it is built for:
this measures correctness (the gap) and what the path costs here, not GPU speed (README, "Past one GPU").
"""
import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
from results_file import write_results  # noqa: E402
from results_file import cpu_name  # noqa: E402

ENGINES = ("twin_fp32", "twin_bf16", "vllm")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="vllm engine vs the twin on CPU: tokens/s, step time, mismatch")
    ap.add_argument("--vllm-url", default=os.environ.get("P2O_VLLM_URL", "http://127.0.0.1:8765/v1"))
    ap.add_argument("--prompts", type=int, default=4, help="distinct prompts per generate call (x G=4 rollouts)")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="training steps per engine for the step time (0: skip)")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"comma list of {', '.join(ENGINES)}")
    ap.add_argument("--demo-run", metavar="RUN", help="only summarize a finished `p2o.py --demo --rollout-engine vllm` "
                    "run folder (held-out accuracy first/last, mismatch, adapter sync time) into --json")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    args.engines = [e for e in args.engines.split(",") if e]
    if set(args.engines) - set(ENGINES):
        ap.error(f"--engines: choose from {', '.join(ENGINES)}")
    return args


def served_model(url):
    with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=10) as r:
        return next(c["root"] for c in json.loads(r.read())["data"] if not c.get("parent"))


def make_engine(p2o, torch, model, tok, cfg, engine):
    if engine == "vllm":
        return p2o.connect_vllm(model, tok, cfg)  # the start checks, then the (nonzero) adapter is loaded
    dtype = torch.float32 if engine == "twin_fp32" else torch.bfloat16
    return p2o.HFEngine(model, tok, cfg, p2o.build_twin(model, dtype, torch.device("cpu")))


def generation(args, model_path, work):
    import torch
    import p2o
    cfg = p2o.Config(model=model_path, device="cpu", rollout_engine="peft", max_new_tokens=args.new_tokens,
                     temperature=0.7, gen_batch_size=64, vllm_url=args.vllm_url, out=os.path.join(work, "gen"))
    model, tok = p2o.load_model(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    questions = [f"What is {7 * k + 3} + {11 * k + 5}? Give the final answer in \\boxed{{}}." for k in range(args.prompts)]
    pids = p2o.token_ids(tok, [p2o.chat_prompt(tok, q) for q in questions for _ in range(4)])
    out = {}
    for rnd in range(args.rounds):
        for engine in args.engines:
            gen = make_engine(p2o, torch, model, tok, cfg, engine)
            torch.manual_seed(rnd)
            t0 = time.perf_counter()
            comp, mask, slogp = gen.generate(pids, cfg.max_new_tokens, p2o.Sampling(cfg.temperature))
            seconds = time.perf_counter() - t0
            with torch.no_grad():
                lp = p2o.completion_logprobs(model, pids, comp, mask, tok.pad_token_id, cfg.temperature)[0]
            m = mask.bool()
            r = torch.exp(lp - slogp)
            row = {"seconds": seconds, "tokens": int(m.sum()), "tokens_per_s": int(m.sum()) / seconds,
                   "mismatch_frac": float((((r < 0.9) | (r > 1.1)) & m).sum() / m.sum()),
                   "mean_abs_logp_gap": float(((lp - slogp).abs() * mask).sum() / m.sum()),
                   "max_abs_logp_gap": float(((lp - slogp).abs() * mask).max())}
            best = out.get(engine)
            row["seconds_per_round"] = (best["seconds_per_round"] if best else []) + [seconds]
            if best is None or row["tokens_per_s"] > best["tokens_per_s"]:
                out[engine] = row
            else:
                best["seconds_per_round"] = row["seconds_per_round"]
            print(f"  generate {engine:>10} round {rnd}: {row['tokens_per_s']:7.1f} tokens/s  mismatch "
                  f"{row['mismatch_frac']:.4f}  mean |gap| {row['mean_abs_logp_gap']:.2e}", flush=True)
            del gen  # (a vllm engine unloads its adapter as it goes)
    return out


def step_time(args, model_path, work):
    import p2o
    out = {}
    for engine in ("twin", "vllm"):  # (the twin in p2o's dtype for this CPU)
        folder = os.path.join(work, f"steps_{engine}")
        flags = ["--model", model_path, "--device", "cpu", "--data", os.path.join(ROOT, "data", "demo_train_240.jsonl"),
                 "--steps", str(args.steps), "--group-size", "4", "--prompts-per-step", "4", "--max-new-tokens", "32",
                 "--temperature", "0.7", "--lr", "2e-4", "--warmup-steps", "0", "--no-p2o", "--save-every", "1000",
                 "--out", folder, "--rollout-engine", "vllm" if engine == "vllm" else "twin"]
        flags += ["--vllm-url", args.vllm_url] if engine == "vllm" else []
        cfg, given = p2o.parse_config(flags)
        p2o.train(cfg, given)
        rows = [json.loads(line) for line in open(os.path.join(folder, "metrics.jsonl")) if '"loss"' in line]
        later = rows[1:] or rows  # the first step also builds/loads things
        mean = lambda k: sum(r.get(k, 0.0) for r in later) / len(later)  # noqa: E731
        out[engine] = {"steps": len(rows), "step_time_s": mean("step_time"), "rollout_s": mean("time/rollout_s"),
                       "update_s": mean("time/update_s"), "sync_s": mean("rollout/sync_s"),
                       "mismatch_frac": [r["rollout/mismatch_frac"] for r in rows]}
        print(f"  steps {engine:>10}: {out[engine]['step_time_s']:.1f} s/step (rollout {out[engine]['rollout_s']:.1f} s, "
              f"sync {out[engine]['sync_s']:.2f} s), mismatch {out[engine]['mismatch_frac']}", flush=True)
    return out


def demo_summary(run):
    """A --rollout-engine vllm demo's figures, as bench/demo_twin_dtype.py reads a twin demo's, plus the engine's own."""
    from pathlib import Path
    import p2o
    from demo_twin_dtype import summarize
    steps = [r for r in p2o.read_rows(Path(run) / "metrics.jsonl") if "loss" in r]
    config = json.load(open(os.path.join(run, "config.json")))
    return {"run": run, "rollout_engine": config["rollout_engine"], "vllm_url": config["vllm_url"], **summarize(Path(run)),
        "mismatch_frac_max": max(r["rollout/mismatch_frac"] for r in steps),
        "sync_s_mean": round(sum(r["rollout/sync_s"] for r in steps) / len(steps), 3),
        "retries": steps[-1]["rollout/retries"], "step_time_s_mean": round(sum(r["step_time"] for r in steps) / len(steps), 1),
        "rollout_s_mean": round(sum(r["time/rollout_s"] for r in steps) / len(steps), 1)}


def main(argv=None):
    args = parse_args(argv)
    if args.demo_run:
        results = demo_summary(args.demo_run) | {"date": time.strftime("%Y-%m-%d"), "device": f"{cpu_name()}, {os.cpu_count()} cores"}
        print(json.dumps(results, indent=1))
        if args.json:
            write_results(args.json, results)
        return results
    import torch
    torch.set_num_threads(1)
    model_path = served_model(args.vllm_url)
    results = {"model": model_path, "server": args.vllm_url}
    with tempfile.TemporaryDirectory(prefix="p2o_vllm_bench_") as work:
        results["generate"] = generation(args, model_path, work)
        if args.steps:
            results["steps"] = step_time(args, model_path, work)
    import transformers
    results |= {"settings": {k: getattr(args, k) for k in ("prompts", "new_tokens", "rounds", "steps", "engines")}
                | {"G": 4, "temperature": 0.7, "trainer": "fp32, 1 torch thread"},
                "device": f"{cpu_name()}, {os.cpu_count()} cores", "versions": {"torch": torch.__version__,
                                                                                 "transformers": transformers.__version__},
                "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if args.json:
        write_results(args.json, results)
    return results


if __name__ == "__main__":
    main()
