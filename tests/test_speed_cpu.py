"""Speed-ups of the update path (issue 8, CPU step) that must not change what is computed:
the shared-prompt forward of a GRPO group, the lm-head chunks recomputed only under gradient
checkpointing, the sampler. Each is checked against the plain computation."""
import copy
import math

import pytest
import torch

import p2o
from conftest import load_engine


@pytest.fixture(scope="module")
def loaded(tiny_model):
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--device", "cpu", "--lora-r", "4",
                               "--rollout-engine", "peft"])
    model, tok = p2o.load_model(cfg, torch.device("cpu"))
    torch.manual_seed(1)
    for name, p in model.named_parameters():  # LoRA B starts at zero; make the adapter matter
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    return cfg, model.double(), tok  # float64: any difference left is a bug, not rounding


@pytest.fixture(autouse=True)
def float64_norms(loaded, monkeypatch):
    """transformers' RMSNorm computes in float32 whatever the model's dtype. Sharing a prompt sums
    the G rows' prompt gradients before that norm's backward instead of after, which moves float32
    rounding (~1e-7); in float64 throughout, the two computations agree to 1e-15."""
    norm = type(loaded[1].base_model.model.model.norm)
    monkeypatch.setattr(norm, "forward", lambda self, x: self.weight * (
        x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)))


def grouped_batch(tok):
    """Two groups of 3 rollouts, prompts of different lengths, ragged completions (EOS then padding)."""
    short = tok("Hi", add_special_tokens=False)["input_ids"]
    long = tok("<|im_start|>user\nWhat is 2+3?<|im_end|>\n", add_special_tokens=False)["input_ids"]
    prompts = [long] * 3 + [short] * 3
    g = torch.Generator().manual_seed(0)
    comp = torch.randint(10, 60, (6, 9), generator=g)
    comp[1, 3] = tok.eos_token_id
    comp[1, 4:] = tok.pad_token_id
    comp[4, 0] = tok.eos_token_id
    comp[4, 1:] = tok.pad_token_id
    return prompts, comp, p2o.completion_mask(comp, [tok.eos_token_id])


def reference_logprobs(model, prompts, comp, mask):
    """One sequence at a time, no padding, full logits."""
    out = torch.zeros(mask.shape, dtype=torch.float64)
    for i, p in enumerate(prompts):
        n = int(mask[i].sum())
        ids = torch.tensor([p + comp[i, :n].tolist()])
        out[i, :n] = model(input_ids=ids).logits[0, len(p) - 1:-1].log_softmax(-1).gather(
            -1, comp[i, :n, None]).squeeze(-1)
    return out


def spy_sharing(monkeypatch):
    """Records whether each completion_logprobs call took the shared-prompt path."""
    calls, real = [], p2o.shared_prompt_cache

    def spy(*a):
        h = real(*a)
        calls.append(h is not None)
        return h
    monkeypatch.setattr(p2o, "shared_prompt_cache", spy)
    return calls


def lora_grads(model):
    return torch.cat([p.grad.flatten() for n, p in model.named_parameters() if "lora_" in n])


def test_shared_prompt_logprobs_and_gradients_equal_full_forward(loaded, monkeypatch):
    cfg, model, tok = loaded
    prompts, comp, mask = grouped_batch(tok)
    calls = spy_sharing(monkeypatch)
    grads = []
    for fn in (lambda: p2o.completion_logprobs(model, prompts, comp, mask, tok.pad_token_id, 1.0, chunk=4)[0],
               lambda: reference_logprobs(model, prompts, comp, mask)):
        model.zero_grad()
        lp = fn()
        lp.sum().backward()
        grads.append((lp.detach(), lora_grads(model)))
    assert calls == [True]  # the groups' prompts really were run once
    (lp, g), (want, g_want) = grads
    assert (lp - want).abs().max().item() < 1e-10
    assert (lp[mask == 0] == 0).all()
    assert ((g - g_want).norm() / g_want.norm()).item() < 1e-10 and g_want.abs().sum() > 0


def test_distinct_prompts_take_the_full_forward(loaded, monkeypatch):
    cfg, model, tok = loaded
    prompts, comp, mask = grouped_batch(tok)
    prompts = [p + [20 + i] for i, p in enumerate(prompts)]  # no two alike
    calls = spy_sharing(monkeypatch)
    with torch.no_grad():
        lp = p2o.completion_logprobs(model, prompts, comp, mask, tok.pad_token_id, 1.0)[0]
        want = reference_logprobs(model, prompts, comp, mask)
    assert calls == [False]
    assert (lp - want).abs().max().item() < 1e-10


def test_gradient_checkpointing_keeps_the_full_forward_and_recomputes_head_chunks(loaded, monkeypatch):
    """transformers drops the KV cache inside checkpointed layers, so with checkpointing on (and
    gradients wanted) the prompt is not shared; the lm-head chunks are recomputed in backward only
    then (without checkpointing their logits are kept: CPU time over memory, like the backbone)."""
    cfg, model, tok = loaded
    prompts, comp, mask = grouped_batch(tok)
    calls = spy_sharing(monkeypatch)
    ckpt, real_ckpt = [], torch.utils.checkpoint.checkpoint

    def counting(*a, **k):
        ckpt.append(1)
        return real_ckpt(*a, **k)
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    results = []
    for checkpointing in (False, True):
        m = copy.deepcopy(model)
        if checkpointing:
            p2o.checkpoint_activations(m.base_model.model)
        m.train()
        ckpt.clear()
        lp = p2o.completion_logprobs(m, prompts, comp, mask, tok.pad_token_id, 1.0, chunk=10)[0]
        lp.sum().backward()
        results.append((lp.detach(), lora_grads(m), len(ckpt)))
        with torch.no_grad():  # no backward to replay: the cache is safe, the prompt is shared
            p2o.completion_logprobs(m, prompts, comp, mask, tok.pad_token_id, 1.0)
    assert calls == [True, True, True]  # four calls: the checkpointed one with gradients does not share
    n_chunks = -(-int(mask.sum()) // 10)
    assert results[0][2] == 0 and results[1][2] >= n_chunks  # (the layers' own checkpoints count too)
    assert (results[0][0] - results[1][0]).abs().max().item() < 1e-10
    assert ((results[0][1] - results[1][1]).norm() / results[1][1].norm()).item() < 1e-10


def test_update_policy_same_step_with_and_without_prompt_sharing(loaded, monkeypatch):
    """One optimizer step from the same state, shared-prompt forward vs full forward: same loss,
    same statistics, same new LoRA weights."""
    cfg, model, tok = loaded
    prompts, comp, mask = grouped_batch(tok)
    cfg = p2o.Config(**{**cfg.__dict__, "group_size": 3, "micro_batch_size": 4, "num_iterations": 2,
                        "beta": 0.05, "lr": 1e-2, "is_correction": "none"})
    batch = p2o.Rollouts(prompt_ids=prompts, completions=comp, mask=mask, loss_mask=mask.clone(),
                         pad_id=tok.pad_token_id, advantages=torch.tensor([1.0, -0.5, -0.5, 0.7, -1.2, 0.5],
                                                                          dtype=torch.float64))
    outs = []
    for shared in (True, False):
        if not shared:
            monkeypatch.setattr(p2o, "shared_prompt_cache", lambda *a: None)
        m = copy.deepcopy(model)
        opt, sched = p2o.make_optimizer(m, cfg)
        stats = p2o.update_policy(m, opt, sched, batch, cfg)
        outs.append((stats, torch.cat([p.detach().flatten() for n, p in m.named_parameters() if "lora_" in n])))
    (s1, w1), (s2, w2) = outs
    assert s1.keys() == s2.keys()
    for k in s1:
        assert s1[k] == pytest.approx(s2[k], rel=1e-9, abs=1e-12), k
    assert s1["kl"] > 0  # the reference pass (adapter off) ran and mattered
    w0 = torch.cat([p.detach().flatten() for n, p in model.named_parameters() if "lora_" in n])
    assert (w1 - w2).abs().max().item() < 1e-10 and (w1 - w0).abs().max().item() > 1e-4


@pytest.mark.parametrize("temperature,top_p", [(0.7, 1.0), (1.3, 0.8)])
def test_sampler_draws_from_the_softmax_and_records_its_logprob(temperature, top_p):
    """The Sampler replaces torch.multinomial: the drawn tokens follow softmax(scores / T) (after
    transformers' top-p filter), a -inf token is never drawn, the row handed back makes greedy pick
    the drawn token, and the recorded log-prob is the full softmax's at that token."""
    from transformers import TopPLogitsWarper
    scores = torch.tensor([2.0, 1.0, 0.5, -math.inf, 0.0, -1.0, 1.5]).repeat(40000, 1)
    ids = torch.zeros(len(scores), 1, dtype=torch.long)
    torch.manual_seed(0)
    s = p2o.Sampler(temperature, top_p)
    out = s(ids, scores)
    token = out.argmax(-1)
    assert (out.isinf().sum(-1) == scores.shape[1] - 1).all() and (out.gather(-1, token[:, None]) == 0).all()
    want = TopPLogitsWarper(top_p)(ids[:1], scores[:1] / temperature).softmax(-1)[0]
    freq = torch.bincount(token, minlength=scores.shape[1]).double() / len(token)
    sigma = (want * (1 - want) / len(token)).sqrt()
    assert ((freq - want).abs() <= 5 * sigma + 1e-12).all(), (freq, want)
    assert freq[3] == 0 and (top_p == 1.0 or (freq[want == 0] == 0).all())
    full = (scores[0] / temperature).log_softmax(-1)
    assert torch.allclose(s.result(len(token))[:, 0], full[token])
    torch.manual_seed(0)
    assert torch.equal(p2o.Sampler(temperature, top_p)(ids, scores).argmax(-1), token)  # seeded: reproducible


def test_generate_feeds_the_lm_head_contiguous_rows(tiny_model):
    """generate's prefill slices the last position out of [N, L, d]; torch's CPU bf16 matmul copies
    the head weight once per row for such a strided input (2 GB for 36 rows of SmolLM2). The kit's
    generate makes that slice contiguous, on the twin and on the policy, with one hook per model."""
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--device", "cpu", "--max-new-tokens", "3"])
    model, tok, twin = load_engine(cfg)
    ids = p2o.token_ids(tok, [p2o.chat_prompt(tok, f"What is {i} + {i * 7}?") for i in range(4)])  # different lengths
    for engine, gen_model in ((twin, twin.twin), (p2o.HFEngine(model, tok, cfg), model)):  # peft: the policy itself
        want = engine.generate(ids, 3)[0]
        seen = []
        head = gen_model.get_output_embeddings()
        head.register_forward_pre_hook(lambda m, args: seen.append((args[0].shape, args[0].is_contiguous())))
        got = engine.generate(ids, 3)[0]
        assert torch.equal(got, want)
        assert len(head._forward_pre_hooks) == 2  # ours (once) and the spy
        assert len(seen) == 3 and all(c for _, c in seen), seen


def test_prompts_that_differ_only_in_padding_are_not_shared(loaded, monkeypatch):
    """[pad, x] and [x] left-pad to the same ids; their masks differ, so they are two prompts."""
    cfg, model, tok = loaded
    prompts, comp, mask = grouped_batch(tok)
    x = prompts[3]  # the short prompt
    prompts = [[tok.pad_token_id] + x] * 3 + [x] * 3
    calls = spy_sharing(monkeypatch)
    with torch.no_grad():
        lp = p2o.completion_logprobs(model, prompts, comp, mask, tok.pad_token_id, 1.0)[0]
        want = reference_logprobs(model, prompts, comp, mask)
    assert calls == [True]  # still shared within each group
    assert (lp - want).abs().max().item() < 1e-10


def test_rollout_prefill_tells_prompts_apart_by_their_padding(tiny_model):
    """generate's shared prefill (twin engine): "<pad>Hi" and a left-padded "Hi" have the same ids
    and different masks. Each must be sampled from its own prompt: the fp32 sampler's log-probs
    equal the training forward's, which reads each prompt unpadded."""
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--device", "cpu", "--max-new-tokens", "5",
                               "--rollout-engine", "peft"])
    model, tok = p2o.load_model(cfg, torch.device("cpu"))
    torch.manual_seed(1)
    for name, p in model.named_parameters():  # a visible adapter
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    engine = p2o.HFEngine(model, tok, cfg, p2o.build_twin(model, torch.float32, torch.device("cpu")))
    pids = p2o.token_ids(tok, [tok.pad_token + "Hi"] * 2 + ["Hi"] * 2)
    comp, mask, slogp = engine.generate(pids, 5, p2o.Sampling(cfg.temperature))
    assert pids[0] == [tok.pad_token_id] + pids[2]  # same ids once left-padded
    lp, _ = p2o.completion_logprobs(model, pids, comp, mask, tok.pad_token_id, cfg.temperature)
    assert mask.sum() > 0 and torch.allclose(lp * mask, slogp * mask, atol=1e-4)
