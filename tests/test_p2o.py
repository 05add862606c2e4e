"""p2o.py part 1: the GRPO core on a tiny random Qwen2 model (built offline in conftest.py)."""
import copy
import json
import math

import pytest
import torch

import p2o
from conftest import assert_same_metrics

FAST = ["--steps", "3", "--group-size", "4", "--prompts-per-step", "2", "--max-new-tokens", "12",
        "--device", "cpu", "--micro-batch-size", "3"]


def cfg_for(model, data, out, *extra):
    cfg, _ = p2o.parse_config(["--model", str(model), "--data", str(data), "--out", str(out), *FAST, *extra])
    return cfg


def read_jsonl(path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


@pytest.fixture(scope="module")
def loaded(tiny_model):
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--device", "cpu", "--lora-r", "4"])
    model, tok = p2o.load_model(cfg, torch.device("cpu"))
    torch.manual_seed(1)
    for name, p in model.named_parameters():  # LoRA B starts at zero; make the adapter matter
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    return cfg, model, tok


def ragged_batch(tok, device="cpu"):
    prompts = [tok("<|im_start|>user\nWhat is 2+3?<|im_end|>\n", add_special_tokens=False)["input_ids"],
               tok("Hi", add_special_tokens=False)["input_ids"],
               tok("A longer prompt with more characters in it.", add_special_tokens=False)["input_ids"]]
    g = torch.Generator().manual_seed(0)
    comp = torch.randint(10, 60, (3, 9), generator=g)
    comp[0, 4] = tok.eos_token_id  # ends early: tokens after EOS are padding
    comp[0, 5:] = tok.pad_token_id
    mask = p2o.completion_mask(comp, [tok.eos_token_id])
    return prompts, comp, mask


def full_logit_logprobs(model, prompts, comp, mask, temperature=1.0):
    """Reference: one sequence at a time, no padding, full logits."""
    out = torch.zeros(mask.shape, dtype=next(model.parameters()).dtype)
    for i, p in enumerate(prompts):
        n = int(mask[i].sum())
        ids = torch.tensor([p + comp[i, :n].tolist()])
        logits = model(input_ids=ids).logits[0, len(p) - 1:-1] / temperature
        out[i, :n] = logits.log_softmax(-1).gather(-1, comp[i, :n, None]).squeeze(-1)
    return out


def test_chunked_logprobs_equal_full_logits(loaded):
    cfg, model, tok = loaded
    prompts, comp, mask = ragged_batch(tok)
    model.eval()
    with torch.no_grad():
        ref = full_logit_logprobs(model, prompts, comp, mask, temperature=0.7)
        for chunk in (1, 5, 4096):  # chunking must not change anything
            lp, ent = p2o.completion_logprobs(model, prompts, comp, mask, tok.pad_token_id, 0.7, chunk=chunk)
            assert torch.allclose(lp, ref, atol=1e-5), (chunk, (lp - ref).abs().max())
            assert (lp[mask == 0] == 0).all() and (ent[mask == 1] > 0).all()


def test_chunked_logprobs_gradient_matches(loaded):
    cfg, model, tok = loaded
    model = copy.deepcopy(model).double()  # float64: any difference left is a bug, not rounding
    prompts, comp, mask = ragged_batch(tok)
    lora = [p for n, p in model.named_parameters() if "lora_A" in n][0]
    grads = []
    for fn in (lambda: p2o.completion_logprobs(model, prompts, comp, mask, tok.pad_token_id, 1.0, chunk=2)[0],
               lambda: full_logit_logprobs(model, prompts, comp, mask)):
        model.zero_grad()
        fn().sum().backward()
        grads.append(lora.grad.clone())
    assert ((grads[0] - grads[1]).norm() / grads[1].norm()).item() < 1e-10
    assert grads[0].abs().sum() > 0


def test_adapter_disabled_equals_base_model(loaded, tiny_model):
    from transformers import AutoModelForCausalLM
    cfg, model, tok = loaded
    prompts, comp, mask = ragged_batch(tok)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    with torch.no_grad():
        want = full_logit_logprobs(base, prompts, comp, mask)
        with model.disable_adapter():
            off = p2o.completion_logprobs(model, prompts, comp, mask, tok.pad_token_id, 1.0)[0]
        on = p2o.completion_logprobs(model, prompts, comp, mask, tok.pad_token_id, 1.0)[0]
    assert torch.allclose(off, want, atol=1e-5)
    assert (on - want).abs().max() > 1e-3  # the adapter is really on outside the context


def test_completion_mask_counts_eos_when_pad_is_eos():
    eos = 7
    comp = torch.tensor([[3, 4, 7, 7, 7], [3, 7, 7, 7, 7], [1, 2, 3, 4, 5]])
    mask = p2o.completion_mask(comp, [eos])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_group_advantages_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    adv = p2o.group_advantages(r, 4, "group")
    std = 0.5  # unbiased std of [1, 0, 0, 0]: sqrt((0.75² + 3 · 0.25²) / 3)
    assert torch.allclose(adv[:4], torch.tensor([0.75, -0.25, -0.25, -0.25]) / (std + 1e-4))
    assert torch.equal(adv[4:], torch.zeros(4))  # all solved: no signal
    assert torch.allclose(p2o.group_advantages(r, 4, "none")[:4], torch.tensor([0.75, -0.25, -0.25, -0.25]))
    b = p2o.group_advantages(r, 4, "batch")
    assert torch.allclose(b[:4], torch.tensor([0.75, -0.25, -0.25, -0.25]) / (r.std() + 1e-4))


def loss_inputs():
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.2, 0.4, 0.0]]))
    old = torch.log(torch.tensor([[0.25, 0.5, 0.5], [0.4, 0.4, 1.0]]))
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return logp, old, adv, mask


@pytest.mark.parametrize("loss_type,expected", [
    # ratios: row 0 = [2, 1, 1] (A=+1, clipped at 1.2), row 1 = [0.5, 1] (A=-1, clipped at 0.8)
    # per-token losses: row 0 = [-1.2, -1, -1], row 1 = [0.8, 1]
    ("grpo", ((-3.2 / 3) + (1.8 / 2)) / 2),
    ("dr_grpo", (-3.2 + 1.8) / (2 * 4)),  # max_new_tokens = 4
    ("dapo", (-3.2 + 1.8) / 5),
])
def test_policy_loss_by_hand(loss_type, expected):
    cfg = p2o.Config(loss_type=loss_type, max_new_tokens=4, epsilon=0.2)
    logp, old, adv, mask = loss_inputs()
    loss, stats = p2o.policy_loss(logp, old, adv, mask, cfg)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["clip_high"] == 1 and stats["clip_low"] == 1 and stats["tokens"] == 5


def test_policy_loss_kl_and_epsilon_high():
    logp, old, adv, mask = loss_inputs()
    cfg = p2o.Config(loss_type="dapo", beta=0.5, epsilon=0.2, epsilon_high=1.5)
    ref = logp.clone()
    ref[0, 0] = math.log(0.25)  # one token differs from the reference
    loss, stats = p2o.policy_loss(logp, old, adv, mask, cfg, ref_logp=ref)
    d = math.log(0.25) - math.log(0.5)
    k3 = math.exp(d) - d - 1
    # epsilon_high 1.5: the ratio 2 is no longer clipped (-2 instead of -1.2)
    assert loss.item() == pytest.approx((-4.0 + 1.8 + 0.5 * k3) / 5, abs=1e-6)
    assert stats["kl"] == pytest.approx(k3, abs=1e-6)


def test_microbatched_update_equals_one_batch(loaded):
    """Gradient accumulation normalises by the whole batch: micro-batch size must not matter."""
    cfg, model, tok = loaded
    model = copy.deepcopy(model).double()
    prompts, comp, mask = ragged_batch(tok)
    batch = p2o.Rollouts(prompt_ids=prompts, completions=comp, mask=mask, loss_mask=mask,
                         advantages=torch.tensor([1.0, -0.5, 0.3]), pad_id=tok.pad_token_id)
    grads = []
    for mbs in (3, 1):
        for lt in ("grpo", "dapo"):
            c = p2o.Config(micro_batch_size=mbs, loss_type=lt, lr=0.0, warmup_steps=0, max_grad_norm=1e9)
            opt, sched = p2o.make_optimizer(model, c)
            p2o.update_policy(model, opt, sched, batch, c)
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]))
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()
    assert rel(grads[0], grads[2]) < 1e-10 and rel(grads[1], grads[3]) < 1e-10
    assert rel(grads[0], grads[1]) > 1e-2  # grpo and dapo weigh tokens differently


def test_three_step_run_writes_every_output(tiny_model, tiny_data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    out = tmp_path / "run"
    rc = p2o.main(["--model", str(tiny_model), "--data", str(tiny_data), "--out", str(out), *FAST,
                   "--eval", f"heldout={tiny_data}", "--sample-every", "1", "--no-p2o", "--beta", "0.1",
                   "--num-iterations", "2"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["steps"] == 3 and cfg["p2o"] is False
    rows = read_jsonl(out / "metrics.jsonl")
    steps = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "loss" not in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and [r["step"] for r in evals] == [0, 3]
    for key in ("loss", "reward", "reward_std", "frac_reward_zero_std", "kl", "entropy", "clip_ratio/low_mean",
                "clip_ratio/high_mean", "clip_ratio/region_mean", "completions/mean_length",
                "completions/clipped_ratio", "step_time", "num_tokens"):
        assert all(isinstance(r[key], (int, float)) and math.isfinite(r[key]) for r in steps), key
    assert steps[0]["num_tokens"] < steps[1]["num_tokens"] < steps[2]["num_tokens"]
    assert 0 <= evals[0]["eval/heldout/accuracy"] <= 1 and evals[0]["eval/heldout/n"] == 12
    for step in (0, 3):  # per-problem answers of each evaluation
        assert len(read_jsonl(out / "evals" / f"step_{step}.jsonl")) == 12
    samples = read_jsonl(out / "samples.jsonl")
    assert samples and {"step", "question", "completion", "reward", "feedback"} <= set(samples[0])
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    adapted = PeftModel.from_pretrained(base, out / "adapter")
    assert any("lora_A" in n for n, _ in adapted.named_parameters())
    assert (out / "checkpoint" / "state.pt").is_file() and (out / "checkpoint" / "adapter").is_dir()
    assert not (out / "checkpoint.tmp").exists()
    # the trained adapter evaluates on its own
    row = p2o.eval_only(p2o.parse_config(["--eval-only", "--model", str(tiny_model), "--adapter", str(out / "adapter"),
                                          "--eval", str(tiny_data), "--device", "cpu", "--max-new-tokens", "12"])[0])
    name = tiny_data.parent.name  # train.jsonl says nothing: named by its folder
    assert row[f"eval/{name}/n"] == 12 and 0 <= row[f"eval/{name}/accuracy"] <= 1


def parity_reward(monkeypatch):
    """The random model never solves a problem; a deterministic reward of the text gives GRPO signal."""
    monkeypatch.setattr(p2o, "reward_rollouts", lambda texts, golds: (
        [float(len(set(t)) % 2) for t in texts], ["fb"] * len(texts)))


def test_resume_equals_uninterrupted_run(tiny_model, tiny_data, tmp_path, monkeypatch):
    parity_reward(monkeypatch)
    args = ["--steps", "4", "--save-every", "2", "--no-p2o"]
    full = cfg_for(tiny_model, tiny_data, tmp_path / "full", *args)
    p2o.train(full)
    part = cfg_for(tiny_model, tiny_data, tmp_path / "part", *args)
    p2o.train(part, stop_after=3)  # "killed" after step 3: the checkpoint is from step 2
    assert json.loads(open(tmp_path / "part" / "metrics.jsonl").readlines()[-1])["step"] == 3
    assert p2o.main(["--out", str(tmp_path / "part"), "--resume"]) == 0
    b = assert_same_metrics(tmp_path / "full" / "metrics.jsonl", tmp_path / "part" / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    from safetensors.torch import load_file
    wa = load_file(str(tmp_path / "full" / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(tmp_path / "part" / "adapter" / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    assert any(v.abs().sum() > 0 for k, v in wa.items() if "lora_B" in k)  # it really trained


def test_bitsandbytes_cpu_lora_gradients_match_dequantized_reference(tiny_model):
    """4-bit on CPU: after a generate() call, LoRA gradients must equal those of the same model with
    the 4-bit weights dequantized to fp32 (bitsandbytes' CPU repack would break them silently)."""
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb
    import bitsandbytes.functional as bf
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--device", "cpu", "--load-in-4bit", "--lora-r", "4",
                               "--no-gradient-checkpointing", "--rollout-engine", "peft"])  # generate on the 4-bit model
    model, tok = p2o.load_model(cfg, torch.device("cpu"))
    ref, _ = p2o.load_model(dataclasses_replace(cfg, load_in_4bit=False), torch.device("cpu"))
    q = {n: m for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert q, "model did not load in 4-bit"
    with torch.no_grad():  # reference = dequantized 4-bit weights, same LoRA weights
        for n, m in ref.named_modules():
            if n in q:
                m.weight.copy_(bf.dequantize_4bit(q[n].weight.data, q[n].weight.quant_state).float())
        torch.manual_seed(2)
        for (n1, p1), (n2, p2) in zip(model.named_parameters(), ref.named_parameters()):
            if "lora_" in n1:
                p1.copy_(torch.randn_like(p1) * 0.3)
                p2.copy_(p1)
    p2o.HFEngine(model, tok, cfg).generate(p2o.token_ids(tok, ["Hello"]), 4)  # the call that used to trigger the repack
    prompts, comp, mask = ragged_batch(tok)
    grads = []
    for m in (model, ref):
        m.train()
        m.zero_grad()
        p2o.completion_logprobs(m, prompts, comp, mask, tok.pad_token_id, 1.0)[0].sum().backward()
        grads.append(torch.cat([p.grad.flatten() for n, p in m.named_parameters() if "lora_" in n]))
    rel = ((grads[0] - grads[1]).norm() / grads[1].norm()).item()
    assert rel < 1e-3, rel


def dataclasses_replace(cfg, **kw):
    import dataclasses
    return dataclasses.replace(cfg, **kw)


# --- bad input: one line on stderr, exit code 2, no traceback ------------------------------------

def run_main(capsys, *argv):
    rc = p2o.main([str(a) for a in argv])
    err = capsys.readouterr().err
    return rc, err


def test_missing_data_file(capsys, tiny_model, tmp_path):
    rc, err = run_main(capsys, "--model", tiny_model, "--data", tmp_path / "nope.jsonl", "--out", tmp_path / "o")
    assert rc == 2 and "data file not found" in err and "nope.jsonl" in err and "Traceback" not in err


def test_malformed_jsonl_names_the_line(capsys, tiny_model, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1", "answer": "2"}\n\n{"question": "2+2", "answer": \n')
    rc, err = run_main(capsys, "--model", tiny_model, "--data", bad, "--out", tmp_path / "o")
    assert rc == 2 and "bad.jsonl:3" in err


def test_row_without_gold_and_empty_dataset(capsys, tiny_model, tmp_path):
    nogold = tmp_path / "nogold.jsonl"  # rows without a gold are skipped; none left is an error
    nogold.write_text('{"question": "1+1", "answer": ""}\n{"question": "2+2"}\n')
    rc, err = run_main(capsys, "--model", tiny_model, "--data", nogold, "--out", tmp_path / "o")
    assert rc == 2 and "line 1" in err and "gold" in err and "no usable problem in 2 rows" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    rc, err = run_main(capsys, "--model", tiny_model, "--data", empty, "--out", tmp_path / "o2")
    assert rc == 2 and "no problems" in err


def test_gold_fields_are_extracted(tmp_path):
    f = tmp_path / "mixed.json"
    f.write_text(json.dumps([{"question": "q1", "answer": "She sold 48 clips.\n#### 72"},
                             {"problem": "q2", "solution": "Thus the answer is $\\boxed{\\frac{1}{2}}$."},
                             {"prompt": "q3", "final_answer": ["5"]}]))
    probs = p2o.load_problems(str(f))
    assert [p["answer"] for p in probs] == ["72", "\\frac{1}{2}", "5"]


def test_unknown_and_missing_model(capsys, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(p2o, "CACHE", tmp_path / "cache")
    rc, err = run_main(capsys, "--model", "no-such-model", "--data", tiny_data, "--out", tmp_path / "o")
    assert rc == 2 and "unknown model" in err and "tried" in err
    rc, err = run_main(capsys, "--model", "Qwen2.5-0.5B", "--data", tiny_data, "--out", tmp_path / "o2")
    assert rc == 2 and "Qwen/Qwen2.5-0.5B" in err and "unreachable" in err
    rc, err = run_main(capsys, "--model", tmp_path / "x.gguf", "--data", tiny_data, "--out", tmp_path / "o3")
    assert rc == 2 and "GGUF file not found" in err


@pytest.mark.parametrize("flags,msg", [
    (["--group-size", "1"], "--group-size"),
    (["--temperature", "0"], "--temperature"),
    (["--loss-type", "ppo"], "--loss-type"),
    (["--hard-threshold", "4", "--group-size", "4"], "--hard-threshold"),
    (["--eval-only"], "--eval-only needs"),
    (["--adapter", "x"], "--adapter is for --eval-only"),
    (["--min-new-tokens", "99", "--max-new-tokens", "8"], "--max-new-tokens"),
])
def test_unusable_flag_combinations(capsys, tiny_model, tiny_data, tmp_path, flags, msg):
    rc, err = run_main(capsys, "--model", tiny_model, "--data", tiny_data, "--out", tmp_path / "o", *flags)
    assert rc == 2 and msg in err and "Traceback" not in err


def test_existing_out_is_refused_and_resume_needs_a_checkpoint(capsys, tiny_model, tiny_data, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "something").write_text("x")
    rc, err = run_main(capsys, "--model", tiny_model, "--data", tiny_data, "--out", out)
    assert rc == 2 and "already exists" in err and "not a p2o run folder" in err
    (out / "config.json").write_text("{}")
    (out / "checkpoint").mkdir()
    (out / "checkpoint" / "state.pt").write_bytes(b"x")
    rc, err = run_main(capsys, "--model", tiny_model, "--data", tiny_data, "--out", out)
    assert rc == 2 and "holds a run with a checkpoint" in err and "--resume" in err
    rc, err = run_main(capsys, "--out", tmp_path / "fresh", "--resume")
    assert rc == 2 and "config.json not found" in err


def test_cuda_out_of_memory_names_the_flag(capsys, monkeypatch, tiny_model, tiny_data, tmp_path):
    def boom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(p2o, "update_policy", boom)
    rc, err = run_main(capsys, "--model", tiny_model, "--data", tiny_data, "--out", tmp_path / "o", *FAST)
    assert rc == 2 and "--micro-batch-size" in err


def test_help_documents_every_flag():
    """Each flag appears in --help as a whole word (--eval is not found inside --eval-every, nor --model
    inside --reflector-model), every Config field among them, each with its help text."""
    import dataclasses
    import re
    text = p2o.build_parser().format_help()
    words = set(re.findall(r"(?<![\w-])--[a-z0-9]+(?:-[a-z0-9]+)*(?![\w-])", text))
    fields = {"--" + ("no-" if f.type == "bool" and f.default else "") + f.name.replace("_", "-")
              for f in dataclasses.fields(p2o.Config)}
    for flag in ("--model", "--data", "--out", "--steps", "--group-size", "--prompts-per-step", "--max-new-tokens",
                 "--temperature", "--device", "--seed", "--resume", "--no-p2o", "--eval", "--eval-every",
                 "--save-every", "--lr", "--lora-r", "--beta", "--epsilon", "--epsilon-high", "--loss-type",
                 "--scale-rewards", "--num-iterations", "--no-load-in-4bit", "--eval-only", "--adapter",
                 "--replay-share", "--no-gepa-reuse-scores", *fields):
        assert flag in words, flag
    flat = " ".join(text.split())  # argparse wraps help lines
    for f in dataclasses.fields(p2o.Config):
        assert " ".join(f.metadata["help"].split()[:6]) in flat, f.name


def test_sampling_ignores_generation_config_filters(loaded):
    """Rollouts must come from softmax(logits / T), the distribution the log-probs assume, even when
    the model's generation_config carries top_k / repetition_penalty (Qwen2.5-Instruct ships both)."""
    cfg, model, tok = loaded
    gc = model.generation_config
    old = (gc.top_k, gc.repetition_penalty)
    gc.top_k, gc.repetition_penalty = 1, 50.0  # would make every sample the same greedy-like text
    try:
        torch.manual_seed(0)
        comp, _, _ = p2o.HFEngine(model, tok, cfg).generate(p2o.token_ids(tok, ["What is 1+1?"] * 6), 8, p2o.Sampling())
    finally:
        gc.top_k, gc.repetition_penalty = old
    assert len({tuple(c.tolist()) for c in comp}) > 1


def test_word_flags_are_checked_against_their_choices():
    """Flags that take one of a few words list them in the Config field (opt(..., choices)); check_config
    refuses anything else with one line naming the flag and the words, and every default is one of them."""
    import dataclasses
    fields = [f for f in dataclasses.fields(p2o.Config) if f.metadata["choices"]]
    assert {f.name for f in fields} >= {"loss_type", "scale_rewards", "device", "rollout_engine", "compile",
                                        "is_correction", "p2o_schedule", "report_to"}
    for f in fields:
        words = f.metadata["choices"]
        assert getattr(p2o.Config(), f.name) in words
        flag = "--" + f.name.replace("_", "-")
        with pytest.raises(p2o.UserError, match=f"^{flag} must be {', '.join(words[:-1])} or {words[-1]}$"):
            p2o.check_config(dataclasses.replace(p2o.Config(), **{f.name: "bogus"}))
