"""The rollout twin (p2o.py, "Rollout engines"): a plain copy of the policy with LoRA folded in,
rebuilt in place from the policy after every step; and the train/sampler mismatch correction."""
import contextlib
import dataclasses
import inspect
import json

import pytest
import torch

import p2o

CPU = torch.device("cpu")


def load(tiny_model, *flags, seed=1):
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--device", "cpu", "--lora-r", "4",
                               "--max-new-tokens", "10", *flags])
    model, tok = p2o.load_model(cfg, CPU)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # LoRA B starts at zero; make the adapter matter
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return cfg, model, tok


def twin_engine(cfg, model, tok, dtype):
    return p2o.HFEngine(model, tok, cfg, p2o.build_twin(model, dtype, CPU))


def hand_built_weights(model, lora=True):
    """Reference written without p2o's helpers: for each LoRA module, the (dequantized) base weight
    plus scaling * B @ A, in fp32, keyed by the plain model's parameter names."""
    out = {}
    base = model.get_base_model()
    for name, p in base.named_parameters():
        if "lora_" in name:
            continue
        key = name.replace(".base_layer", "")
        w = p.detach().float()
        if p.__class__.__name__ == "Params4bit":
            import bitsandbytes.functional as bf
            w = bf.dequantize_4bit(p.data, p.quant_state).float()
        if ".base_layer.weight" in name and lora:
            mod = base.get_submodule(name[: -len(".base_layer.weight")])
            w = w + mod.lora_B["default"].weight.float() @ mod.lora_A["default"].weight.float() * mod.scaling["default"]
        out[key] = w
    return out


def twin_state(twin):
    return {k: v.clone() for k, v in twin.state_dict().items()}


IDS = torch.tensor([[5, 17, 42, 9, 30, 77, 12, 3], [8, 8, 61, 70, 2, 19, 33, 45]])


def logits(m):
    with torch.no_grad():
        return m(input_ids=IDS).logits.float()


def policy_with_twin(tiny_model, four_bit, dtype):
    """The tiny policy (4-bit base or not) and a twin of `dtype` built from it."""
    if four_bit:
        pytest.importorskip("bitsandbytes")
    _, model, _ = load(tiny_model, "--load-in-4bit" if four_bit else "--no-load-in-4bit")
    return model, p2o.build_twin(model, dtype, CPU)


@pytest.mark.parametrize("four_bit", [False, True])
def test_twin_equals_hand_built_reference_in_bf16(tiny_model, four_bit):
    model, twin = policy_with_twin(tiny_model, four_bit, torch.bfloat16)
    ref = hand_built_weights(model)
    got = dict(twin.named_parameters())
    assert got.keys() == ref.keys()
    for k, w in ref.items():  # the twin's weight is the reference rounded once to bf16
        assert got[k].dtype == torch.bfloat16
        assert torch.equal(got[k], w.to(torch.bfloat16)), k
    # and a plain bf16 model holding the reference weights gives exactly the twin's logits
    plain = type(twin)._from_config(twin.config, dtype=torch.bfloat16).eval()  # rotary buffers stay fp32
    with torch.no_grad():
        for k, p in plain.named_parameters():
            p.copy_(ref[k])
    assert torch.equal(logits(plain), logits(twin))
    # bf16 rounding apart, the twin is the policy: much closer to it than the adapter-free base is
    with model.disable_adapter():
        base = logits(model)
    assert (logits(twin) - logits(model)).abs().max() < 0.5 * (base - logits(model)).abs().max()


@pytest.mark.parametrize("four_bit", [False, True])
def test_fp32_twin_has_the_policys_logits(tiny_model, four_bit):
    model, twin = policy_with_twin(tiny_model, four_bit, torch.float32)
    a, b = logits(model), logits(twin)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()  # fp32 summation order only
    # the adapter really changes the logits, so the comparison above means something
    with model.disable_adapter():
        assert (logits(model) - a).abs().max() > 1e-2


def test_twin_follows_an_optimizer_step_only_when_refreshed(tiny_model):
    cfg, model, tok = load(tiny_model)
    engine = twin_engine(cfg, model, tok, torch.float32)
    before = logits(engine.twin)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    loss = model(input_ids=IDS).logits.float().pow(2).mean()
    loss.backward()
    opt.step()
    model.eval()
    policy = logits(model)
    assert torch.equal(logits(engine.twin), before)  # stale until refreshed
    assert (policy - before).abs().max() > 1e-3
    engine.follow(1)
    assert torch.allclose(logits(engine.twin), policy, atol=1e-4, rtol=1e-4)


def test_hundred_refreshes_equal_one_fresh_build_bit_for_bit(tiny_model):
    cfg, model, tok = load(tiny_model)
    twin = p2o.build_twin(model, torch.bfloat16, CPU)
    ptrs = {k: v.data_ptr() for k, v in twin.state_dict().items()}
    for i in range(100):
        p2o.refresh_twin(twin, model, lora=i % 7 != 3)  # with the self reflector's base-only refreshes mixed in
    p2o.refresh_twin(twin, model)
    after = twin_state(twin)
    # refreshed in place: the same storage (compiled graphs hold these addresses)
    assert {k: v.data_ptr() for k, v in twin.state_dict().items()} == ptrs
    fresh = twin_state(p2o.build_twin(model, torch.bfloat16, CPU))
    assert after.keys() == fresh.keys() and all(torch.equal(after[k], fresh[k]) for k in fresh)


def test_greedy_answers_from_fp32_twin_equal_the_peft_path(tiny_model):
    cfg, model, tok = load(tiny_model)
    # 3 problems x 4 rollouts: identical rows take the shared-prompt prefill
    prompts = [p2o.chat_prompt(tok, f"What is {i} + {2 * i}?") for i in range(3) for _ in range(4)]
    ids = p2o.token_ids(tok, prompts + [p2o.chat_prompt(tok, "A lone, longer prompt: 17 * 3?")])
    twin_out, twin_mask, _ = twin_engine(cfg, model, tok, torch.float32).generate(ids, 10)
    peft_out, peft_mask, _ = p2o.HFEngine(model, tok, cfg).generate(ids, 10)
    assert torch.equal(twin_out, peft_out) and torch.equal(twin_mask, peft_mask)
    assert twin_mask.sum() > 0


def test_self_reflector_generates_from_the_base(tiny_model, monkeypatch):
    cfg, model, tok = load(tiny_model)
    engine = twin_engine(cfg, model, tok, torch.bfloat16)
    with_lora = twin_state(engine.twin)
    base = {k: w.to(torch.bfloat16) for k, w in hand_built_weights(model, lora=False).items()}
    seen = []
    real = engine.generate

    def spy(*a, **kw):
        seen.append({k: torch.equal(v, base[k]) for k, v in engine.twin.named_parameters()})
        return real(*a, **kw)
    engine.generate = spy
    lm, release = p2o.make_reflector(dataclasses.replace(cfg, reflector="self", reflector_max_new_tokens=4), engine)
    lm("Improve this instruction.")
    release()
    assert len(seen) == 1 and all(seen[0].values())  # the twin held the base weights while generating
    after = twin_state(engine.twin)  # and the LoRA-folded weights again afterwards, bit for bit
    assert all(torch.equal(after[k], with_lora[k]) for k in with_lora)
    assert any(not torch.equal(with_lora[k], base[k]) for k in base)


@pytest.mark.parametrize("engine", ["peft", "twin"])
def test_adapter_off_samples_the_base_model(tiny_model, engine):
    """adapter_off (the `self` reflector's base model) on either in-process engine: the tokens sampled
    under it have the base model's log-probs (peft's disable_adapter() forward, not through any engine),
    and those sampled with the adapter on have the adapter's."""
    cfg, model, tok = load(tiny_model, "--rollout-engine", engine)  # LoRA B non-zero: the adapter matters
    # (the twin in fp32: its log-probs match the policy's to ~1e-5)
    engine = twin_engine(cfg, model, tok, torch.float32) if engine == "twin" else p2o.HFEngine(model, tok, cfg)
    pids = p2o.token_ids(tok, [p2o.chat_prompt(tok, f"What is {i} + {2 * i}?") for i in range(3) for _ in range(2)])

    def sample():
        torch.manual_seed(0)
        return (pids, *engine.generate(pids, cfg.max_new_tokens, p2o.Sampling(cfg.temperature)))

    @torch.no_grad()
    def recomputed(pids, comp, mask, slogp):
        """The sampler's log-probs, the base model's and the adapter's of the same tokens, masked."""
        assert mask.sum() > 0
        with model.disable_adapter():
            base = p2o.completion_logprobs(model, pids, comp, mask, tok.pad_token_id, cfg.temperature)[0]
        lora = p2o.completion_logprobs(model, pids, comp, mask, tok.pad_token_id, cfg.temperature)[0]
        return slogp * mask, base * mask, lora * mask
    with engine.adapter_off():
        sampled = sample()
    off, base, lora = recomputed(*sampled)
    assert torch.allclose(off, base, atol=1e-4), (off - base).abs().max()
    assert (off - lora).abs().max() > 1e-2  # the adapter matters here, so the match above means something
    on, base, lora = recomputed(*sample())  # and after adapter_off the adapter is on again
    assert torch.allclose(on, lora, atol=1e-4), (on - lora).abs().max()
    assert (on - base).abs().max() > 1e-2


def test_sampler_logprobs_match_training_logprobs_in_fp32(tiny_model):
    cfg, model, tok = load(tiny_model)
    engine = twin_engine(cfg, model, tok, torch.float32)
    pids = p2o.token_ids(tok, [p2o.chat_prompt(tok, f"What is {i} + 1?") for i in range(2) for _ in range(3)])
    cfg = dataclasses.replace(cfg, temperature=0.7)
    torch.manual_seed(0)
    comp, mask, slogp = engine.generate(pids, cfg.max_new_tokens, p2o.Sampling(cfg.temperature))
    lp, _ = p2o.completion_logprobs(model, pids, comp, mask, tok.pad_token_id, cfg.temperature)
    assert slogp.shape == comp.shape and mask.sum() > 0
    assert torch.allclose(lp * mask, slogp * mask, atol=1e-4)
    # the IS weights are then ~1 and nothing counts as mismatched
    batch = p2o.Rollouts(prompt_ids=pids, sample_logp=slogp, templates=[""] * len(pids))
    w, off, n = p2o.is_weights(lp, batch, list(range(len(pids))), mask, cfg)
    assert off == 0 and n == mask.sum().item()
    assert torch.allclose(w, torch.ones_like(w), atol=1e-3)
    assert engine.generate(pids[:1], cfg.max_new_tokens)[2] is None  # greedy: nothing sampled, nothing recorded


def test_importance_weights_by_hand():
    train = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]))
    sample = torch.log(torch.tensor([[0.5, 0.1, 0.5], [0.5, 0.48, 0.5], [0.5, 0.9, 0.5]]))
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]])
    batch = p2o.Rollouts(prompt_ids=[[1]] * 4, sample_logp=torch.cat([sample, sample[:1]]), templates=["", "", "", "t"])
    cfg = p2o.Config(is_correction="token_truncate", is_clip=3.0)
    w, off, n = p2o.is_weights(train, batch, [0, 1, 2], mask, cfg)
    expected = torch.tensor([[1.0, 3.0, 1.0], [1.0, 0.5 / 0.48, 1.0], [1.0, 0.5 / 0.9, 1.0]])
    assert torch.allclose(w, expected)  # ratio 5 truncated to C=3; the padded token keeps 1
    assert (off, n) == (2, 8)  # 5.0 and 0.556 are outside [0.9, 1.1]
    w = p2o.is_weights(train, batch, [0, 1, 2], mask, dataclasses.replace(cfg, is_correction="sequence_mask"))[0]
    # TRL's sequence_mask: the product of a rollout's token ratios; row 0's (5) leaves [1/3, 3] and is
    # dropped, the others weigh their tokens by it (a padded token keeps 1)
    r1, r2 = 0.5 / 0.48, 0.5 / 0.9
    assert torch.allclose(w, torch.tensor([[0.0] * 3, [r1, r1, 1.0], [r2] * 3]))
    assert p2o.is_weights(train, batch, [0, 1, 2], mask, dataclasses.replace(cfg, is_correction="none")) == (None, 2, 8)
    # a template-guided rollout is left to rho_mask: weight 1, not counted
    w, off, n = p2o.is_weights(train[:1], batch, [3], mask[:1], cfg)
    assert torch.equal(w, torch.ones(1, 3)) and (off, n) == (0, 0)


def test_policy_loss_applies_the_weights_to_the_surrogate_only():
    logp = torch.log(torch.tensor([[0.5, 0.25]]))
    mask, adv = torch.ones(1, 2), torch.tensor([2.0])
    cfg = p2o.Config(beta=0.1)
    ref = torch.log(torch.tensor([[0.4, 0.25]]))
    plain, _ = p2o.policy_loss(logp, logp, adv, mask, cfg, ref)
    weighted, _ = p2o.policy_loss(logp, logp, adv, mask, cfg, ref, is_weight=torch.tensor([[3.0, 0.5]]))
    kl0 = torch.exp(ref[0, 0] - logp[0, 0]) - (ref[0, 0] - logp[0, 0]) - 1
    # dapo: mean over tokens of (-w * A + beta * kl)
    assert plain.item() == pytest.approx(((-2.0) + (-2.0) + 0.1 * kl0.item()) / 2, rel=1e-6)
    assert weighted.item() == pytest.approx(((-6.0) + (-1.0) + 0.1 * kl0.item()) / 2, rel=1e-6)


def test_engine_choice_and_logged_metrics(tiny_model, tiny_data, tmp_path, capsys):
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--device", "cpu", "--rollout-engine", "peft"])
    model, tok = p2o.load_model(cfg, CPU)
    engine = p2o.make_engine(model, tok, cfg, CPU)
    assert engine.twin is None and engine.name == "peft" and "rollout engine: peft" in capsys.readouterr().err
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--data", str(tiny_data), "--out", str(tmp_path / "r"),
                               "--steps", "2", "--group-size", "2", "--prompts-per-step", "2", "--max-new-tokens",
                               "6", "--device", "cpu", "--no-p2o", "--rollout-engine", "twin"])
    p2o.train(cfg)
    assert "rollout engine: twin" in capsys.readouterr().err
    rows = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["rollout/engine"] for r in rows] == ["twin", "twin"]
    for r in rows:
        assert 0 <= r["rollout/mismatch_frac"] <= 1 and r["rollout/tokens_per_s"] > 0
        assert r["rollout/compile_s"] == 0.0 and r["rollout/graphs"] == 0  # --compile auto: nothing compiles on CPU
        assert r["rollout/eager_calls"] == 0  # eager as asked: nothing to count


def test_bad_engine_flags_are_one_line_errors(capsys, tiny_model, tiny_data, tmp_path):
    for flags, msg in ((["--rollout-engine", "vllm"], "--rollout-engine"), (["--is-correction", "clip"], "--is-correction"),
                       (["--is-clip", "1.0"], "--is-clip")):
        rc = p2o.main(["--model", str(tiny_model), "--data", str(tiny_data), "--out", str(tmp_path / "x"),
                       "--device", "cpu", *flags])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1


def test_resume_rebuilds_the_twin_from_the_checkpoint(tiny_model, tmp_path):
    """As a resumed run's start does: the checkpoint's adapter loaded, then the engine follows it."""
    cfg, model, tok = load(tiny_model, seed=3)
    opt, sched = p2o.make_optimizer(model, cfg)
    p2o.save_checkpoint(tmp_path, model, opt, sched, 1, {"epoch": 0, "index": 0}, p2o.P2OState(), p2o.rng_state())
    saved = twin_state(twin_engine(cfg, model, tok, torch.bfloat16).twin)
    cfg2, model2, tok2 = load(tiny_model, seed=4)  # a different adapter, then the checkpoint's
    engine2 = twin_engine(cfg2, model2, tok2, torch.bfloat16)
    assert any(not torch.equal(twin_state(engine2.twin)[k], saved[k]) for k in saved)
    opt2, sched2 = p2o.make_optimizer(model2, cfg2)
    step = p2o.load_checkpoint(tmp_path, model2, opt2, sched2)[0]
    engine2.follow(step)
    loaded = twin_state(engine2.twin)
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)


def test_one_engine_serves_the_whole_run(tiny_model, tmp_path, monkeypatch):
    """The run's start builds one engine, and all that generates goes through it: the rollouts (sampled, with
    the sampler's log-probs), GEPA's scoring (greedy), the `self` reflector (sampled, adapter off) and the
    evaluations (greedy); after every update it follows the policy."""
    from conftest import write_problems
    data = write_problems(tmp_path / "train.jsonl", 6)
    built, seen, follows = [], set(), []
    real_make = p2o.make_engine

    def make_engine(*a, **k):
        engine = real_make(*a, **k)
        built.append(engine)
        gen, off, follow = engine.generate, engine.adapter_off, engine.follow
        state = {"off": False}

        def generate(ids, max_new, sampling=None):
            comp, mask, logp = gen(ids, max_new, sampling)
            callers = {frame.function for frame in inspect.stack(0)}
            phase = "gepa" if "run_gepa" in callers else "eval" if "run_evals" in callers else "rollout"
            seen.add((phase, "base" if state["off"] else "policy", "sampled" if sampling else "greedy",
                      logp is not None))
            return comp, mask, logp

        @contextlib.contextmanager
        def adapter_off():
            with off():
                state["off"] = True
                yield
            state["off"] = False
        engine.generate, engine.adapter_off = generate, adapter_off
        engine.follow = lambda step, stats=None: follows.append(step) or follow(step, stats)
        return engine
    monkeypatch.setattr(p2o, "make_engine", make_engine)
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--data", str(data), "--out", str(tmp_path / "run"),
                               "--device", "cpu", "--steps", "3", "--group-size", "2", "--prompts-per-step", "2",
                               "--max-new-tokens", "6", "--gepa-every", "2", "--gepa-min-hard", "2", "--gepa-budget",
                               "12", "--reflector", "self", "--reflector-max-new-tokens", "6", "--eval", str(data),
                               "--eval-limit", "2", "--rollout-engine", "twin"])
    p2o.train(cfg)
    assert len(built) == 1 and follows == [1, 2, 3]
    assert seen == {("rollout", "policy", "sampled", True), ("gepa", "policy", "greedy", False),
                    ("gepa", "base", "sampled", True), ("eval", "policy", "greedy", False)}
