"""The compiled rollout path (p2o.py, "The compiled twin"; --compile on forces it on CPU): fixed shapes
per run, each compiled once; greedy tokens equal to the eager path's; and every way it can fail
(no compiler, a compile that raises, torch's recompile limit, no memory) ends in eager generation,
said once and counted in rollout/eager_calls, never in a dead run. The two tests marked `slow`
compile for real (about 30 s together on a 2-core CPU with a cold inductor cache); `-m "not slow"` skips them."""
import json

import pytest
import torch

import p2o
from conftest import load_engine, write_problems

CPU = torch.device("cpu")


def rows(out):
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]


def eager_greedy(twin, tok, prompt_ids, max_new):
    """transformers' own eager generate on the twin (dynamic cache, nothing compiled): the reference."""
    ids, attn = p2o.left_pad(prompt_ids, tok.pad_token_id, "cpu")
    out = twin.generate(input_ids=ids, attention_mask=attn, do_sample=False, max_new_tokens=max_new, min_new_tokens=0,
                        repetition_penalty=1.0, pad_token_id=tok.pad_token_id,
                        eos_token_id=twin.generation_config.eos_token_id)
    return out[:, ids.shape[1]:]


def same_tokens(a, b, pad):
    """Equal up to the right padding generate adds when every row stopped early."""
    t = max(a.shape[1], b.shape[1])
    a = torch.nn.functional.pad(a, (0, t - a.shape[1]), value=pad)
    b = torch.nn.functional.pad(b, (0, t - b.shape[1]), value=pad)
    return torch.equal(a, b)


@pytest.fixture
def fp32_twin(monkeypatch):
    """An fp32 twin wherever the tests run: compiled and eager then agree to the last bit of argmax."""
    monkeypatch.setattr(p2o, "twin_dtype", lambda device: torch.float32)


@pytest.mark.slow
def test_p2o_run_compiles_each_shape_once_with_eager_greedy_tokens(tiny_model, tmp_path, monkeypatch, capsys,
                                                                    fp32_twin):
    data = write_problems(tmp_path / "train.jsonl", 6)
    evals = write_problems(tmp_path / "test.jsonl", 5)
    out = tmp_path / "run"
    cfg, _ = p2o.parse_config([
        "--model", str(tiny_model), "--data", str(data), "--out", str(out), "--device", "cpu", "--compile", "on",
        "--steps", "5", "--group-size", "2", "--prompts-per-step", "2", "--max-new-tokens", "8",
        "--gen-batch-size", "8", "--gepa-every", "2", "--gepa-min-hard", "2", "--gepa-budget", "12",
        "--reflector", "self", "--reflector-max-new-tokens", "8", "--eval", str(evals), "--eval-every", "2",
        "--eval-limit", "5", "--micro-batch-size", "4", "--save-every", "5", "--lr", "1e-3"])
    from torch._dynamo.utils import counters
    seen = {"greedy": 0, "reflections": 0, "graphs_after_gepa": []}
    real_gen, real_gepa, real_off = p2o.HFEngine.generate, p2o.run_gepa, p2o.HFEngine.adapter_off

    def gen(engine, prompt_ids, max_new, sampling=None):
        result = real_gen(engine, prompt_ids, max_new, sampling)
        if sampling is None:  # every greedy answer of the run (evaluation, GEPA's scoring) against eager generate
            assert same_tokens(result[0], eager_greedy(engine.twin, engine.tok, prompt_ids, max_new),
                               engine.tok.pad_token_id)
            seen["greedy"] += 1
        return result

    def gepa(*a, **k):
        result = real_gepa(*a, **k)
        seen["graphs_after_gepa"].append(counters["stats"]["unique_graphs"])
        return result

    def off(engine):
        seen["reflections"] += 1
        return real_off(engine)
    monkeypatch.setattr(p2o.HFEngine, "generate", gen)
    monkeypatch.setattr(p2o, "run_gepa", gepa)
    monkeypatch.setattr(p2o.HFEngine, "adapter_off", off)
    p2o.train(cfg)
    steps = [r for r in rows(out) if "loss" in r]
    assert len(steps) == 5 and seen["greedy"] >= 4 and seen["reflections"] >= 1  # evals, GEPA scoring, `self`
    assert len(seen["graphs_after_gepa"]) == 2  # after steps 2 and 4
    plan = p2o.cache_plan(cfg)
    graphs = [r["rollout/graphs"] for r in steps]
    assert 1 <= graphs[-1] <= len(plan) and graphs[1:] == [graphs[-1]] * 4  # stable from the first GEPA run on
    # and torch compiled nothing more after the first GEPA run (evaluations, a second GEPA run, rollouts)
    assert seen["graphs_after_gepa"][0] == counters["stats"]["unique_graphs"]
    assert all(r["rollout/eager_calls"] == 0 for r in steps) and steps[-1]["rollout/compile_s"] > 0
    err = capsys.readouterr().err
    assert "compiled" in err and "warning" not in err


@pytest.mark.slow
def test_compiled_generate_buckets_caches_and_a_recompile_limit_hit(tiny_model, monkeypatch, capsys, fp32_twin):
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--device", "cpu", "--compile", "on", "--lora-r", "4",
                               "--max-new-tokens", "10", "--gen-batch-size", "32", "--temperature", "0.7"])
    model, tok, engine = load_engine(cfg)
    entry = engine.compiled
    assert entry.plan == {1: 3072, 8: 768, 32: 768}  # 512 + 10 -> 768; the 1-row cache also holds a reflection
    prompts = p2o.token_ids(tok, [p2o.chat_prompt(tok, f"What is {i} + 1?") for i in range(5)])
    comp = engine.generate(prompts, 10)[0]
    assert same_tokens(comp, eager_greedy(engine.twin, tok, prompts, 10), tok.pad_token_id)
    assert entry.shapes == {8} and entry.compile_s > 0 and entry.eager_calls == 0
    cache, big = entry.caches[8], entry.caches[32]
    ptrs = [layer.keys.data_ptr() for layer in cache.layers]
    assert ptrs == [layer.keys.data_ptr() for layer in big.layers]  # 8 rows: the first rows of the 32-row cache
    # sampled, in the same bucket: the same cache object, reset, nothing recompiled; padded rows dropped
    pids = prompts[:3]
    comp, mask, slogp = engine.generate(pids, 10, p2o.Sampling(cfg.temperature))
    assert comp.shape == slogp.shape == (3, 10)
    assert entry.caches[8] is cache and [layer.keys.data_ptr() for layer in cache.layers] == ptrs
    lp, _ = p2o.completion_logprobs(model, pids, comp, mask, tok.pad_token_id, cfg.temperature)
    assert torch.allclose(lp * mask, slogp * mask, atol=1e-4)
    assert entry.shapes == {8} and entry.eager_calls == 0
    # what the memory check counts is what the cache holds
    held = sum(layer.keys.nbytes + layer.values.nbytes for layer in big.layers)
    assert held == p2o.kv_cache_bytes(engine.twin.config, {8: 768, 32: 768}, torch.float32)
    # a new shape past torch's recompile limit would run uncompiled without a word: here it is said and counted
    monkeypatch.setattr(p2o, "RECOMPILE_MARGIN", 1 - len(entry.plan))
    capsys.readouterr()
    with torch._dynamo.config.patch(recompile_limit=1):
        comp = engine.generate(prompts[:1], 10)[0]
    assert same_tokens(comp, eager_greedy(engine.twin, tok, prompts[:1], 10), tok.pad_token_id)
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "compiling failed" in err and "Recompile" in err
    assert entry.eager_calls == 1 and engine.stats()["rollout/eager_calls"] == 1
    engine.generate(prompts, 10)  # from then on eager, counted, not said again
    assert entry.eager_calls == 2 and "warning" not in capsys.readouterr().err


def small_run(tiny_model, tmp_path, *flags):
    data = write_problems(tmp_path / "train.jsonl", 4)
    out = tmp_path / "run"
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--data", str(data), "--out", str(out), "--device", "cpu",
                               "--steps", "2", "--group-size", "2", "--prompts-per-step", "2", "--max-new-tokens",
                               "6", "--no-p2o", "--eval", str(data), "--eval-limit", "2", *flags])
    p2o.train(cfg)
    return [r for r in rows(out) if "loss" in r]


def test_a_compile_that_raises_falls_back_to_eager_once(tiny_model, tmp_path, monkeypatch, capsys):
    def broken_compile(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found\n(long inductor traceback)")
        return run
    monkeypatch.setattr(torch, "compile", broken_compile)
    steps = small_run(tiny_model, tmp_path, "--compile", "on")
    assert len(steps) == 2  # training finished
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "compiling failed (RuntimeError: InvalidCxxCompiler" in err
    assert "long inductor traceback" not in err
    # every generate call ran eagerly and was counted: by step 2's row, the first evaluation and 2 rollouts
    assert steps[-1]["rollout/graphs"] == 0 and steps[-1]["rollout/eager_calls"] == 3


def test_compile_on_without_a_compiler_says_why_and_generates_eagerly(tiny_model, tmp_path, monkeypatch, capsys):
    import torch._inductor.config as inductor
    with inductor.patch({"cpp.cxx": ("/nonexistent/c++",)}):
        steps = small_run(tiny_model, tmp_path, "--compile", "on")
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if "cannot compile" in l]
    assert len(lines) == 1 and "no C++ compiler" in lines[0] and err.count("warning") == 1
    assert "compiled" not in err.split("rollout engine:")[1].splitlines()[0]
    assert steps[-1]["rollout/graphs"] == 0 and steps[-1]["rollout/eager_calls"] == 3


def test_compile_flag_is_checked(tiny_model, tiny_data, tmp_path, capsys):
    rc = p2o.main(["--model", str(tiny_model), "--data", str(tiny_data), "--out", str(tmp_path / "x"),
                   "--device", "cpu", "--compile", "yes"])
    err = capsys.readouterr().err
    assert rc == 2 and "--compile must be auto, on or off" in err and len(err.strip().splitlines()) == 1


def test_t4_and_v100_get_an_fp16_twin(monkeypatch):
    """They emulate bf16 (torch counts emulation unless told not to), and inductor will not compile it."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert p2o.twin_dtype(torch.device("cuda")) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # A100, H100
    assert p2o.twin_dtype(torch.device("cuda")) == torch.bfloat16


def policy(tiny_model, *flags):
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--device", "cpu", "--rollout-engine", "peft", *flags])
    model, tok = p2o.load_model(cfg, CPU)
    return cfg, model, tok


def test_auto_on_a_gpu_counts_kv_cache_and_update(tiny_model, monkeypatch, capsys):
    """The twin's weights fit with a quarter of the card spare (the old rule), but not beside its KV
    caches and an update's peak: auto takes peft."""
    cfg, model, tok = policy(tiny_model, "--max-new-tokens", "512", "--gen-batch-size", "64")
    cfg = p2o.dataclasses.replace(cfg, rollout_engine="auto", compile="auto")
    twin = p2o.model_params(model) * 2
    kv = p2o.kv_cache_bytes(model.config, p2o.cache_plan(cfg), torch.bfloat16)
    train = p2o.train_peak_bytes(model, cfg, torch.device("cuda"))
    assert kv > twin and train > twin  # at this size the cache and the update dominate
    total = 40 * twin
    monkeypatch.setattr(p2o, "twin_dtype", lambda device: torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (total // 4 + 2 * twin, total))
    engine = p2o.make_engine(model, tok, cfg, torch.device("cuda"))
    assert engine.name == "peft" and engine.twin is None and "KV cache" in capsys.readouterr().err
    # with room for all of it: the twin (not built here: there is no GPU)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (twin + kv + train + total // 10, total))
    assert p2o.choose_engine(model, cfg, torch.device("cuda"), torch.bfloat16, True)[0] == "twin"


def test_out_of_memory_building_the_twin_under_auto_falls_back_to_peft(tiny_model, monkeypatch, capsys):
    cfg, model, tok = policy(tiny_model)
    capsys.readouterr()

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(p2o, "build_twin", oom)
    engine = p2o.make_engine(model, tok, p2o.dataclasses.replace(cfg, rollout_engine="auto"), CPU)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "out of memory while building the twin" in err[0] and "engine: peft" in err[1]
    assert engine.name == "peft" and engine.twin is None
    with pytest.raises(torch.OutOfMemoryError):  # asked for by name: the user should know
        p2o.make_engine(model, tok, p2o.dataclasses.replace(cfg, rollout_engine="twin"), CPU)


def test_transformers_declining_to_compile_is_counted(tiny_model, tmp_path, monkeypatch, capsys):
    from transformers.generation.utils import GenerationMixin
    monkeypatch.setattr(GenerationMixin, "_valid_auto_compile_criteria", lambda self, *a, **k: False)
    steps = small_run(tiny_model, tmp_path, "--compile", "on")
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "transformers did not use the compiled forward" in err
    assert steps[-1]["rollout/graphs"] == 0 and steps[-1]["rollout/eager_calls"] == 3


def test_a_prompt_beyond_the_static_cache_generates_eagerly(tiny_model, capsys):
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--device", "cpu", "--compile", "on",
                               "--max-new-tokens", "10", "--gen-batch-size", "8", "--no-p2o"])
    model, tok, engine = load_engine(cfg)
    entry = engine.compiled
    assert entry.plan == {1: 768, 8: 768}
    long = p2o.token_ids(tok, [p2o.chat_prompt(tok, "What is 1 + 1? " + "x" * 800)])  # a token a byte: over 768
    capsys.readouterr()
    for _ in range(2):
        comp = engine.generate(long, 10)[0]
    assert same_tokens(comp, eager_greedy(engine.twin, tok, long, 10), tok.pad_token_id)
    err = capsys.readouterr().err
    assert err.count("do not fit the static caches") == 1 and "warning" not in err
    assert entry.eager_calls == 2 and entry.shapes == set() and not entry.broken
