"""Does a vLLM server shared with another client still return the right log-probs? The kit's own requests
never overlap (one generate call at a time, one model name per call), but a server shared with another run
batches their requests together. Needs a running server (tests/vllm_server.sh start).

    python bench/vllm_shared_server.py --vllm-url http://127.0.0.1:8765/v1 --json bench/results/vllm_shared_server_cpu.json

Base-model requests (what the `self` reflector sends), 4 samples of one prompt at T=0.7, 16 tokens, compared
token by token with p2o's fp32 model (adapter off): first alone, then while a second client keeps sending
requests for a LoRA adapter to the same server. Reported: the largest |log-prob gap| of each call.
"""
import argparse
import os
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
from results_file import write_results  # noqa: E402
from results_file import cpu_name  # noqa: E402
from vllm_vs_twin import served_model  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vllm-url", default=os.environ.get("P2O_VLLM_URL", "http://127.0.0.1:8765/v1"))
    ap.add_argument("--calls", type=int, default=4)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import torch
    import p2o
    torch.set_num_threads(1)
    cfg, _ = p2o.parse_config(["--model", served_model(args.vllm_url), "--device", "cpu", "--rollout-engine", "vllm",
                               "--vllm-url", args.vllm_url, "--temperature", "0.7", "--max-new-tokens", "16",
                               "--out", os.path.join(ROOT, "runs", "bench-vllm-shared")])
    model, tok = p2o.load_model(cfg, torch.device("cpu"))
    engine = p2o.make_engine(model, tok, cfg, torch.device("cpu"))
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    engine.follow(1)
    pids = p2o.token_ids(tok, [p2o.chat_prompt(tok, "What is 12 + 7? Give the final answer in \\boxed{}.")] * 4)
    ids = pids[0]
    stop = threading.Event()

    def other_client():  # LoRA requests, back to back
        while not stop.is_set():
            engine.call("/v1/completions", {"model": engine.adapter, "prompt": ids, "n": 4, "max_tokens": 16,
                                            "temperature": 0.7, "top_k": 0, "top_p": 1.0})
    results = {}
    for case in ("alone", "with_another_clients_lora_requests"):
        thread = threading.Thread(target=other_client) if case != "alone" else None
        if thread:
            thread.start()
        gaps = []
        for _ in range(args.calls):
            with engine.adapter_off():
                comp, mask, slogp = engine.generate(pids, cfg.max_new_tokens, p2o.Sampling(cfg.temperature))
            with torch.no_grad(), model.disable_adapter():
                base = p2o.completion_logprobs(model, pids, comp, mask, tok.pad_token_id, cfg.temperature)[0]
            gaps.append(float(((base - slogp).abs() * mask).max()))
        stop.set()
        if thread:
            thread.join()
        stop.clear()
        results[case] = {"max_abs_logp_gap_per_call": gaps}
        print(f"{case}: largest |log-prob gap| per call {[f'{g:.2e}' for g in gaps]}", flush=True)
    results |= {"server": args.vllm_url, "device": f"{cpu_name()}, {os.cpu_count()} cores",
                "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if args.json:
        write_results(args.json, results)
    return results


if __name__ == "__main__":
    main()
