"""Peak GPU memory and rollout speed of p2o.py on Qwen2.5-0.5B / 1.5B / 3B-shaped models.

    python bench/gpu_memory.py                      # all sizes, on CUDA, writes bench/results/gpu_memory.json
    python bench/gpu_memory.py --sizes 0.5B,1.5B
    python bench/gpu_memory.py --dry-run            # CPU check of this script: a 2-layer model, 1 step

No download: each model is the real Qwen2.5 architecture (config written out below) with random
weights, saved in bf16 with a tokenizer to a temporary folder. Memory and speed do not depend on
the weight values, and every completion is forced to full length (--min-new-tokens), so random
weights cost exactly what real ones would. Each size runs
    p2o.py --steps 2 --group-size 8 --prompts-per-step 8 --max-new-tokens 512 --min-new-tokens 512 --no-p2o
in its own process (4-bit NF4 + LoRA, p2o's CUDA default) and reads memory/peak_mb
(torch.cuda.max_memory_allocated) and rollout/tokens_per_s from its metrics.jsonl. The GPU's
memory.used from nvidia-smi (CUDA context and allocator cache included) is recorded beside it.
Targets (issue 4): <= 3 GB for 0.5B and <= 4 GB for 1.5B.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from results_file import write_results  # bench/ is this script's folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Qwen2.5 base-model configs (Qwen/Qwen2.5-*/config.json); all three tie the input and output embeddings.
QWEN25 = {
    "0.5B": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2),
    "1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2),
    "3B": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
               num_attention_heads=16, num_key_value_heads=2),
}
QWEN25_SHARED = dict(vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768,
                     rope_theta=1000000.0, rms_norm_eps=1e-6, hidden_act="silu", use_sliding_window=False)
TARGET_MB = {"0.5B": 3 * 1024, "1.5B": 4 * 1024}  # issue 4: <= 3 GB / <= 4 GB
SMOLLM2_TOKENIZER = os.path.expanduser("~/.cache/p2o/SmolLM2-135M-Instruct")

# ChatML, the format Qwen2.5 uses; set on the offline-built tokenizer so p2o's chat prompt works
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def parse_args():
    ap = argparse.ArgumentParser(description="p2o.py peak GPU memory and rollout tokens/s on Qwen2.5 shapes")
    ap.add_argument("--sizes", default="0.5B,1.5B,3B", help=f"comma list of {', '.join(QWEN25)}")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--prompts-per-step", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "arith_train.jsonl"))
    ap.add_argument("--rollout-engine", default="auto", choices=["auto", "twin", "peft"],
                    help="passed to p2o.py (issue 8: a 1.5B step with the twin, and peak memory with peft)")
    ap.add_argument("--tokenizer", default="auto", choices=["auto", "smollm2", "built"],
                    help="auto: SmolLM2's tokenizer from the p2o cache if present, else build one offline")
    ap.add_argument("--json", default=None, help="default: bench/results/gpu_memory.json "
                                                 "(dry run: not written unless given)")
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU check: 2-layer models, 1 step, 8 new tokens, G=2, 2 prompts")
    ap.add_argument("--keep", action="store_true", help="keep the temporary model folders and runs")
    args = ap.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in QWEN25]
    if unknown or not sizes:
        ap.error(f"--sizes {args.sizes!r}: unknown {unknown}; choose from {', '.join(QWEN25)}")
    args.sizes = sizes
    if args.tokenizer == "smollm2" and not os.path.isdir(SMOLLM2_TOKENIZER):
        ap.error(f"--tokenizer smollm2: {SMOLLM2_TOKENIZER} not found (run p2o.py --model "
                 f"SmolLM2-135M-Instruct once, or use --tokenizer built)")
    if not os.path.exists(args.data):
        ap.error(f"--data {args.data}: not found (generate it with data/make_arith.py)")
    if args.dry_run:
        args.steps, args.group_size, args.prompts_per_step, args.max_new_tokens = 1, 2, 2, 8
    elif args.json is None:
        args.json = os.path.join(ROOT, "bench", "results", "gpu_memory.json")
    return args


def build_tokenizer(folder, which, data):
    """SmolLM2's tokenizer when cached, else a small byte-level BPE trained here (no hub needed).
    Token ids only have to fit the 151936-row embedding; the vocabulary's content does not matter."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    if which == "smollm2" or (which == "auto" and os.path.isdir(SMOLLM2_TOKENIZER)):
        tok = AutoTokenizer.from_pretrained(SMOLLM2_TOKENIZER)
        source = "SmolLM2-135M-Instruct"
    else:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        with open(data) as f:
            corpus = [json.loads(line)["question"] for line in f if line.strip()]
        corpus += ["Think step by step, then give the final answer in \\boxed{}.", "user", "assistant"]
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=2048, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        bpe.train_from_iterator(corpus, trainer)
        tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
        source = "byte-level BPE built offline"
    if not getattr(tok, "chat_template", None):
        tok.chat_template = CHATML
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.save_pretrained(folder)
    return tok, source


def build_model(folder, size, tok, dry_run):
    """Random-weight Qwen2.5-shaped model in bf16, saved with save_pretrained."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    layers = 2 if dry_run else QWEN25[size]["num_hidden_layers"]
    config = Qwen2Config(**(QWEN25[size] | QWEN25_SHARED | {"num_hidden_layers": layers}),
                         bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         dtype="bfloat16")
    device = "cuda" if torch.cuda.is_available() else "cpu"  # random init of 3B params is much faster on GPU
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    n_params = sum(p.numel() for p in model.parameters())
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return n_params


class GpuMemoryPoller:
    """Highest `nvidia-smi memory.used` (MiB, whole GPU) while a run is going; None without nvidia-smi."""

    def __init__(self, interval=0.2):
        self.interval, self.peak, self.stop = interval, None, threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    @staticmethod
    def read():
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                  "--id=0"], capture_output=True, text=True, timeout=10)
            return float(out.stdout.strip().splitlines()[0])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None

    def poll(self):
        while not self.stop.is_set():
            used = self.read()
            if used is not None:
                self.peak = used if self.peak is None else max(self.peak, used)
            self.stop.wait(self.interval)

    def __enter__(self):
        self.baseline = self.read()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def run_p2o(model_dir, out, args):
    device = "cpu" if args.dry_run else "cuda"
    cmd = [sys.executable, os.path.join(ROOT, "p2o.py"), "--model", model_dir, "--data", args.data,
           "--out", out, "--steps", str(args.steps), "--group-size", str(args.group_size),
           "--prompts-per-step", str(args.prompts_per_step), "--max-new-tokens", str(args.max_new_tokens),
           "--min-new-tokens", str(args.max_new_tokens), "--no-p2o", "--device", device,
           "--save-every", str(10 * args.steps), "--rollout-engine", args.rollout_engine]
    log_path = out + ".log"
    with GpuMemoryPoller() as smi, open(log_path, "w") as log:
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        wall = time.perf_counter() - t0
    if rc != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        return {"error": f"p2o.py exited with {rc}", "log_tail": tail, "cmd": " ".join(cmd)}
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [r for r in map(json.loads, f) if "loss" in r]
    return {
        "peak_mb": max(r["memory/peak_mb"] for r in rows),
        "tokens_per_s": [r["rollout/tokens_per_s"] for r in rows],
        "step_time_s": [r["step_time"] for r in rows],
        "rollout_s": [r.get("time/rollout_s") for r in rows],
        "update_s": [r.get("time/update_s") for r in rows],
        "rollout_engine": rows[-1].get("rollout/engine"), "compile_s": rows[-1].get("rollout/compile_s"),
        "mismatch_frac": [r.get("rollout/mismatch_frac") for r in rows],
        "smi_peak_mb": smi.peak, "smi_baseline_mb": smi.baseline,
        "wall_s": wall,
    }


def gpu_name():
    try:
        import torch
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:
        return "unknown"


def main():
    args = parse_args()
    work = tempfile.mkdtemp(prefix="p2o_gpumem_")
    results = []
    try:
        for size in args.sizes:
            model_dir = os.path.join(work, f"qwen2.5-{size}")
            print(f"[bench] building random-weight Qwen2.5-{size}{' (2 layers, dry run)' if args.dry_run else ''} ...",
                  flush=True)
            tok, tok_source = build_tokenizer(model_dir, args.tokenizer, args.data)
            n_params = build_model(model_dir, size, tok, args.dry_run)
            print(f"[bench] p2o.py on Qwen2.5-{size}: {args.steps} steps, G={args.group_size}, "
                  f"{args.prompts_per_step} prompts, {args.max_new_tokens} new tokens ...", flush=True)
            res = run_p2o(model_dir, os.path.join(work, f"run-{size}"), args)
            res |= {"size": size, "params": n_params, "tokenizer": tok_source}
            if "error" in res:
                print(f"[bench] {size}: {res['error']}\n{res['log_tail']}", flush=True)
            else:
                target = None if args.dry_run else TARGET_MB.get(size)  # a CPU dry run's RSS is no VRAM figure
                res["target_mb"] = target
                res["pass"] = None if target is None else res["peak_mb"] <= target
                res["pass_smi"] = (None if target is None or res["smi_peak_mb"] is None
                                   else res["smi_peak_mb"] - (res["smi_baseline_mb"] or 0) <= target)
            results.append(res)
            shutil.rmtree(model_dir, ignore_errors=True)  # a 3B model is 6 GB on disk
    finally:
        if args.keep:
            print(f"[bench] runs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"{'model':10}{'params':>9}{'peak alloc MB':>15}{'smi used MB':>13}{'target MB':>11}{'pass':>6}"
          f"{'rollout tok/s':>15}{'step s':>9}")
    for r in results:
        if "error" in r:
            print(f"{r['size']:10}  FAILED: {r['error']}")
            continue
        smi = "-" if r["smi_peak_mb"] is None else f"{r['smi_peak_mb'] - (r['smi_baseline_mb'] or 0):.0f}"
        print(f"{r['size']:10}{r['params'] / 1e9:8.2f}B{r['peak_mb']:15.0f}{smi:>13}"
              f"{r['target_mb'] or '-':>11}{'-' if r['pass'] is None else ('yes' if r['pass'] else 'NO'):>6}"
              f"{r['tokens_per_s'][-1]:15.0f}{r['step_time_s'][-1]:9.1f}")
    if args.dry_run:
        print("DRY RUN on CPU: 2-layer models, peak = process RSS; checks this script, not the targets")
    print("peak alloc = torch.cuda.max_memory_allocated in p2o.py (memory/peak_mb); smi used = nvidia-smi "
          "memory.used above the idle GPU (CUDA context and allocator cache included); tok/s and step s "
          "from the last step")
    if args.json:
        summary = {
            "device": gpu_name(), "dry_run": args.dry_run,
            "settings": {"steps": args.steps, "group_size": args.group_size,
                         "prompts_per_step": args.prompts_per_step, "max_new_tokens": args.max_new_tokens,
                         "min_new_tokens": args.max_new_tokens, "load_in_4bit": not args.dry_run,
                         "p2o": False},
            "targets_mb": TARGET_MB, "results": results, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        write_results(args.json, summary)
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
