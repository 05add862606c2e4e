"""One GRPO step of p2o.py against one step of TRL's GRPOTrainer: time and peak memory.

    python bench/step_vs_trl.py --model ~/.cache/p2o/SmolLM2-135M-Instruct --steps 4 \
        --json bench/results/step_vs_trl_cpu.json

Both sides get the same model, data, group size G, prompts per step P, LoRA rank (all linear
projections), beta, loss type, micro-batch size, temperature 1.0, gradient checkpointing (p2o's
default: on for CUDA, off on CPU) and the same reward (verify.score). Both generate exactly T
tokens per completion (min = max new tokens), so the work per step is identical: P*G
completions, one optimizer step. Each side runs in its own
fresh process, so peak memory is that process's alone:
  CPU: the child's peak RSS (getrusage of a one-child wrapper process);
  GPU: torch.cuda.max_memory_allocated inside the child (p2o's metrics memory/peak_mb).
The step time is the median over steps 2..N (step 1 is warm-up). ratio = p2o / TRL.

The TRL side lives in this file too (`--_trl-child SETTINGS.json`), so there is one bench file.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from results_file import write_results  # bench/ is this script's folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs argv[2:] as its only child and writes that child's peak RSS to argv[1]. A separate wrapper
# per run matters: RUSAGE_CHILDREN is a max over every child ever waited for, so measuring from
# the bench process itself would mix the two sides.
RSS_WRAPPER = (
    "import json, resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:])\n"
    "kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "json.dump({'rc': rc, 'peak_rss_mb': kb / 1024}, open(sys.argv[1], 'w'))\n"
    "sys.exit(rc)\n"
)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="p2o.py step vs TRL GRPOTrainer step: time and memory")
    ap.add_argument("--model", help="local HF folder (or anything p2o.py --model accepts that TRL can load)")
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "arith_train.jsonl"))
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per side (median over 2..N)")
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--prompts-per-step", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=64,
                    help="every completion is exactly this long on both sides")
    ap.add_argument("--micro-batch-size", type=int, default=None,
                    help="sequences per forward/backward on both sides (default: G*P, one micro-batch)")
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--beta", type=float, default=0.0)
    ap.add_argument("--loss-type", default="dapo", choices=["grpo", "dr_grpo", "dapo"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--load-in-4bit", action=argparse.BooleanOptionalAction, default=None,
                    help="4-bit base weights on both sides (default: p2o's default, on for CUDA only)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for both sides (OMP_NUM_THREADS); default: torch's default. On a machine "
                         "shared with other jobs, fewer threads than cores avoids OpenMP stalls")
    ap.add_argument("--repeats", type=int, default=1,
                    help="run the two sides alternately this many times; the fastest run of each side counts "
                         "(guards against other processes on a shared machine)")
    ap.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                    help="on both sides (default: p2o's default, on for CUDA only)")
    ap.add_argument("--rollout-engine", default="auto", choices=["auto", "twin", "peft"],
                    help="p2o's rollout engine (TRL without vLLM always generates with the training model)")
    ap.add_argument("--json", required=False, help="write results here (e.g. bench/results/step_vs_trl_cpu.json)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary run folders and logs")
    ap.add_argument("--_trl-child", dest="trl_child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.trl_child:
        return args
    if not args.model:
        ap.error("--model is required")
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if args.steps < 2:
        ap.error("--steps must be at least 2 (step 1 is warm-up and not counted)")
    completions = args.group_size * args.prompts_per_step
    if args.micro_batch_size is None:
        args.micro_batch_size = completions
    if completions % args.micro_batch_size:
        ap.error(f"--micro-batch-size {args.micro_batch_size} must divide G*P = {completions}")
    args.model = os.path.expanduser(args.model)
    if not os.path.isdir(args.model):
        ap.error(f"--model {args.model}: not a folder; TRL needs a local HF folder (save_pretrained)")
    if not os.path.exists(args.data):
        ap.error(f"--data {args.data}: file not found (generate it with data/make_arith.py)")
    if args.load_in_4bit is None:
        args.load_in_4bit = args.device == "cuda"
    if args.gradient_checkpointing is None:
        args.gradient_checkpointing = args.device == "cuda"
    return args


def child_env(args):
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    return env


def run_measured(cmd, log_path, rss_path, env=None):
    """Run cmd in a fresh process under the RSS wrapper; output goes to log_path."""
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.call([sys.executable, "-c", RSS_WRAPPER, rss_path, *cmd],
                             stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    if rc != 0:
        with open(log_path) as f:
            tail = f.read()[-4000:]
        sys.exit(f"error: command failed with exit code {rc}:\n  {' '.join(cmd)}\n--- log tail ---\n{tail}")
    with open(rss_path) as f:
        return json.load(f)["peak_rss_mb"], wall


def median_after_warmup(times):
    times = [t for t in times[1:] if t is not None]
    return statistics.median(times) if times else float("nan")


# --- p2o side ---

def run_p2o(args, work, tag=""):
    out = os.path.join(work, f"p2o_out{tag}")
    t = args.max_new_tokens
    cmd = [sys.executable, os.path.join(ROOT, "p2o.py"), "--model", args.model, "--data", args.data,
           "--out", out, "--steps", str(args.steps), "--group-size", str(args.group_size),
           "--prompts-per-step", str(args.prompts_per_step), "--max-new-tokens", str(t),
           "--min-new-tokens", str(t), "--micro-batch-size", str(args.micro_batch_size),
           "--lora-r", str(args.lora_r), "--beta", str(args.beta), "--loss-type", args.loss_type,
           "--temperature", "1.0", "--device", args.device, "--seed", str(args.seed),
           "--save-every", str(10 * args.steps), "--no-p2o", "--rollout-engine", args.rollout_engine,
           "--load-in-4bit" if args.load_in_4bit else "--no-load-in-4bit",
           "--gradient-checkpointing" if args.gradient_checkpointing else "--no-gradient-checkpointing"]
    print(f"[bench] p2o.py: {args.steps} steps ...", flush=True)
    rss_mb, wall = run_measured(cmd, os.path.join(work, f"p2o{tag}.log"), os.path.join(work, f"p2o_rss{tag}.json"),
                                env=child_env(args))
    rows = []
    with open(os.path.join(out, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if "loss" in row and "step_time" in row:  # eval rows have no loss
                rows.append(row)
    config = {}
    config_path = os.path.join(out, "config.json")
    if os.path.exists(config_path):
        with open(config_path) as f:
            config = json.load(f)
    peaks = [r["memory/peak_mb"] for r in rows if "memory/peak_mb" in r]
    return {
        "step_times": [r["step_time"] for r in rows],
        "mean_lengths": [r.get("completions/mean_length") for r in rows],
        "rollout_times": [r.get("time/rollout_s") for r in rows],
        "engine": rows[-1].get("rollout/engine") if rows else None,
        "mismatch_frac": [r.get("rollout/mismatch_frac") for r in rows],
        "peak_rss_mb": rss_mb,
        "peak_cuda_mb": max(peaks) if args.device == "cuda" and peaks else None,
        "wall_s": wall,
        "config": config,
    }


# p2o.py settings the TRL side copies from p2o's config.json, so both optimise the same way
SHARED_FROM_P2O = ["instruction", "lr", "lora_alpha", "lora_dropout", "epsilon", "epsilon_high",
                   "scale_rewards", "max_grad_norm", "top_p", "warmup_steps", "weight_decay"]


# --- TRL side ---

def run_trl(args, work, p2o_config, tag=""):
    settings = {
        "model": args.model, "data": args.data, "steps": args.steps, "group_size": args.group_size,
        "prompts_per_step": args.prompts_per_step, "max_new_tokens": args.max_new_tokens,
        "micro_batch_size": args.micro_batch_size, "lora_r": args.lora_r, "beta": args.beta,
        "loss_type": args.loss_type, "device": args.device, "seed": args.seed,
        "load_in_4bit": args.load_in_4bit, "gradient_checkpointing": args.gradient_checkpointing,
        "out": os.path.join(work, f"trl_out{tag}"),
        "result": os.path.join(work, f"trl_result{tag}.json"),
    }
    missing = [k for k in SHARED_FROM_P2O if k not in p2o_config]
    if missing:
        sys.exit(f"error: p2o's config.json lacks {missing}; update SHARED_FROM_P2O in {__file__}")
    settings |= {k: p2o_config[k] for k in SHARED_FROM_P2O}
    # p2o: epsilon_high < 0 means "same as epsilon"; TRL spells that None
    if settings["epsilon_high"] is not None and settings["epsilon_high"] < 0:
        settings["epsilon_high"] = None
    settings_path = os.path.join(work, f"trl_settings{tag}.json")
    with open(settings_path, "w") as f:
        json.dump(settings, f, indent=1)
    print(f"[bench] TRL GRPOTrainer: {args.steps} steps ...", flush=True)
    cmd = [sys.executable, os.path.abspath(__file__), "--_trl-child", settings_path]
    rss_mb, wall = run_measured(cmd, os.path.join(work, f"trl{tag}.log"), os.path.join(work, f"trl_rss{tag}.json"),
                                env=child_env(args))
    with open(settings["result"]) as f:
        result = json.load(f)
    result["peak_rss_mb"] = rss_mb
    result["wall_s"] = wall
    result["settings"] = settings
    return result


def trl_prompts(tokenizer, data, instruction):
    """Prompt text and gold answers exactly as p2o.py builds them (its own loader and chat prompt)."""
    import p2o
    problems = p2o.load_problems(data)
    return [{"prompt": p2o.chat_prompt(tokenizer, p2o.user_message(p["question"], instruction)),
             "gold": p["answer"]} for p in problems]


def trl_child(settings_path):
    """Runs in its own process: TRL GRPOTrainer for `steps` steps, writes step times and memory."""
    sys.path.insert(0, ROOT)
    import torch
    import datasets
    import peft
    import transformers
    import trl
    import verify
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    with open(settings_path) as f:
        s = json.load(f)
    cuda = s["device"] == "cuda"
    torch.manual_seed(s["seed"])

    tokenizer = AutoTokenizer.from_pretrained(s["model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model_kwargs = {"dtype": torch.bfloat16 if cuda else torch.float32}
    if s["load_in_4bit"]:
        from transformers import BitsAndBytesConfig
        model_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
    if cuda:
        model_kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(s["model"], **model_kwargs)

    # pre-rendered prompt strings: TRL then tokenizes exactly the text p2o would see
    dataset = datasets.Dataset.from_list(trl_prompts(tokenizer, s["data"], s["instruction"]))

    def reward(completions, gold, **kwargs):
        return [float(verify.score(c, g)[0]) for c, g in zip(completions, gold)]  # score: (reward, feedback)

    completions_per_step = s["group_size"] * s["prompts_per_step"]
    accumulation = completions_per_step // s["micro_batch_size"]
    config = GRPOConfig(
        output_dir=s["out"], max_steps=s["steps"], seed=s["seed"], learning_rate=s["lr"],
        # one generation batch of P*G completions feeds exactly one optimizer step
        per_device_train_batch_size=s["micro_batch_size"], gradient_accumulation_steps=accumulation,
        steps_per_generation=accumulation, num_generations=s["group_size"],
        max_completion_length=s["max_new_tokens"],
        generation_kwargs={"min_new_tokens": s["max_new_tokens"]},
        temperature=1.0, top_p=s["top_p"], beta=s["beta"], loss_type=s["loss_type"],
        epsilon=s["epsilon"], epsilon_high=s["epsilon_high"], scale_rewards=s["scale_rewards"],
        num_iterations=1, max_grad_norm=s["max_grad_norm"], lr_scheduler_type="cosine",
        warmup_steps=s["warmup_steps"], weight_decay=s["weight_decay"],
        gradient_checkpointing=s["gradient_checkpointing"], gradient_checkpointing_kwargs={"use_reentrant": False},
        bf16=cuda, use_cpu=not cuda, use_vllm=False,
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0,
    )
    peft_config = LoraConfig(r=s["lora_r"], lora_alpha=s["lora_alpha"], lora_dropout=s["lora_dropout"],
                             target_modules="all-linear", task_type="CAUSAL_LM")

    class StepTimer(TrainerCallback):
        """Wall time between consecutive optimizer-step ends: generation, reward, fwd/bwd, update."""

        def __init__(self):
            self.times, self.last = [], None

        def now(self):
            if cuda:
                torch.cuda.synchronize()
            return time.perf_counter()

        def on_train_begin(self, *a, **k):
            self.last = self.now()

        def on_step_end(self, *a, **k):
            t = self.now()
            self.times.append(t - self.last)
            self.last = t

    timer = StepTimer()
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=peft_config, callbacks=[timer])
    # time the rollout phase (generation + reward + advantages) to split step time like p2o does
    rollout_times, generate_and_score = [], trainer._generate_and_score_completions

    def timed_generate_and_score(*a, **k):
        t = timer.now()
        out = generate_and_score(*a, **k)
        rollout_times.append(timer.now() - t)
        return out

    trainer._generate_and_score_completions = timed_generate_and_score
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    result = {
        "step_times": timer.times,
        "rollout_times": rollout_times,
        "trl_logged_step_time": [h.get("step_time") for h in logs],
        "mean_lengths": [h.get("completions/mean_length") for h in logs],
        "rewards": [h.get("reward") for h in logs],
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "torch_threads": torch.get_num_threads(),
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "torch": torch.__version__},
    }
    with open(s["result"], "w") as f:
        json.dump(result, f, indent=1)


# --- report ---

def device_name(device):
    if device == "cuda":
        import torch
        return torch.cuda.get_device_name(0)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores"


TARGET = 0.6  # p2o's step time / TRL's (issue 8)


def report(args, p2o, trl_res):
    p2o_step, trl_step = median_after_warmup(p2o["step_times"]), median_after_warmup(trl_res["step_times"])
    mem_key = "peak_cuda_mb" if args.device == "cuda" else "peak_rss_mb"
    p2o_mem, trl_mem = p2o[mem_key], trl_res[mem_key]
    ratio = p2o_step / trl_step
    mem_ratio = p2o_mem / trl_mem if p2o_mem and trl_mem else None
    mem_label = "peak CUDA alloc MB" if args.device == "cuda" else "peak RSS MB"
    print()
    print(f"{'':22}{'p2o.py':>12}{'TRL':>12}{'p2o/TRL':>10}")
    print(f"{'median step s (2..N)':22}{p2o_step:12.2f}{trl_step:12.2f}{ratio:10.2f}")
    p2o_roll, trl_roll = median_after_warmup(p2o["rollout_times"]), median_after_warmup(trl_res["rollout_times"])
    print(f"{'  of which rollout s':22}{p2o_roll:12.2f}{trl_roll:12.2f}{p2o_roll / trl_roll:10.2f}")
    print(f"{'  of which update s':22}{p2o_step - p2o_roll:12.2f}{trl_step - trl_roll:12.2f}"
          f"{(p2o_step - p2o_roll) / (trl_step - trl_roll):10.2f}")
    print(f"{mem_label:22}{p2o_mem or float('nan'):12.0f}{trl_mem or float('nan'):12.0f}"
          f"{mem_ratio or float('nan'):10.2f}")
    if args.device == "cuda":
        print(f"{'peak RSS MB':22}{p2o['peak_rss_mb']:12.0f}{trl_res['peak_rss_mb']:12.0f}"
              f"{p2o['peak_rss_mb'] / trl_res['peak_rss_mb']:10.2f}")
    print(f"{'mean completion len':22}{statistics.mean(x for x in p2o['mean_lengths'] if x is not None):12.1f}"
          f"{statistics.mean(x for x in trl_res['mean_lengths'] if x is not None):12.1f}")
    print(f"p2o rollout engine: {p2o.get('engine')}; train/sampler mismatch (tokens with ratio outside "
          f"[0.9, 1.1]) per step: {p2o.get('mismatch_frac')}")
    print(f"target: ratio <= {TARGET} and lower peak memory -> "
          f"{'PASS' if ratio <= TARGET and mem_ratio is not None and mem_ratio < 1 else 'FAIL'}")
    return {
        "p2o_step_s": p2o_step, "trl_step_s": trl_step, "ratio": ratio,
        "p2o_peak_mb": p2o_mem, "trl_peak_mb": trl_mem, "mem_ratio": mem_ratio,
        "memory_measure": "torch.cuda.max_memory_allocated" if args.device == "cuda" else "peak RSS of the child process",
        "p2o_peak_rss_mb": p2o["peak_rss_mb"], "trl_peak_rss_mb": trl_res["peak_rss_mb"],
        "p2o_step_times": p2o["step_times"], "trl_step_times": trl_res["step_times"],
        "p2o_rollout_s": p2o_roll, "trl_rollout_s": trl_roll,
        "p2o_rollout_times": p2o["rollout_times"], "trl_rollout_times": trl_res["rollout_times"],
        "trl_logged_step_time": trl_res.get("trl_logged_step_time"),
        "p2o_mean_lengths": p2o["mean_lengths"], "trl_mean_lengths": trl_res["mean_lengths"],
        "p2o_wall_s": p2o["wall_s"], "trl_wall_s": trl_res["wall_s"],
        "p2o_rollout_engine": p2o.get("engine"), "p2o_mismatch_frac": p2o.get("mismatch_frac"),
        "target": {"ratio_max": TARGET, "pass": bool(ratio <= TARGET and mem_ratio is not None and mem_ratio < 1)},
        "device": device_name(args.device),
        "settings": {k: getattr(args, k) for k in ("model", "data", "steps", "group_size", "prompts_per_step",
                                                   "max_new_tokens", "micro_batch_size", "lora_r", "beta",
                                                   "loss_type", "device", "seed", "load_in_4bit", "gradient_checkpointing",
                                                   "threads", "rollout_engine")}
                    | {"min_new_tokens": args.max_new_tokens, "temperature": 1.0,
                       "shared_from_p2o_config": {k: trl_res["settings"][k] for k in SHARED_FROM_P2O}},
        "versions": trl_res["versions"] | {"python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def main():
    args = parse_args()
    if args.trl_child:
        trl_child(args.trl_child)
        return
    work = tempfile.mkdtemp(prefix="p2o_bench_")
    try:
        load_before = os.getloadavg()
        runs = []
        for i in range(args.repeats):
            p2o = run_p2o(args, work, tag=f"_{i}")
            runs.append((p2o, run_trl(args, work, p2o["config"], tag=f"_{i}")))
        # the fastest run of each side: other processes only ever make a run slower
        p2o = min((r[0] for r in runs), key=lambda r: median_after_warmup(r["step_times"]))
        trl_res = min((r[1] for r in runs), key=lambda r: median_after_warmup(r["step_times"]))
        result = report(args, p2o, trl_res)
        result["repeats"] = args.repeats
        result["all_runs_median_step_s"] = {
            "p2o": [median_after_warmup(r[0]["step_times"]) for r in runs],
            "trl": [median_after_warmup(r[1]["step_times"]) for r in runs]}
        result["loadavg_before_after"] = [load_before, os.getloadavg()]
        if load_before[0] > 0.5 and args.device == "cpu":
            print(f"note: load average was {load_before[0]:.2f} before the run; other processes share "
                  f"the CPU, so times may be inflated (use --repeats)")
        if args.json:
            write_results(args.json, result)
    finally:
        if args.keep:
            print(f"[bench] runs and logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
