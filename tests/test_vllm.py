"""--rollout-engine vllm against a REAL vLLM server (no mock): tests/vllm_server.sh builds its virtualenv and starts
it on 127.0.0.1 serving SmolLM2-135M-Instruct (fp32, processed log-probs, runtime LoRA); P2O_VLLM_URL says where.
Without a server these tests skip, saying so; .ci/run starts one and sets P2O_VLLM_REQUIRED=1, under which a
missing server fails them instead. The flag checks at the end need no server."""
import gc
import json
import os
import socket
import threading
import urllib.request

import pytest
import torch

import p2o
from conftest import load_engine

CPU = torch.device("cpu")
URL = os.environ.get("P2O_VLLM_URL", "")


def served_model(url):
    """The folder the server serves (its base model card's root), or None when nothing answers there."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=5) as r:
            cards = json.loads(r.read())["data"]
        return next(c["root"] for c in cards if not c.get("parent"))
    except (OSError, ValueError, KeyError, StopIteration):
        return None


@pytest.fixture(scope="module")
def server():
    why = ("no vLLM server: set P2O_VLLM_URL (bash tests/vllm_server.sh install && bash tests/vllm_server.sh start "
           "prints it)") if not URL else None
    model = served_model(URL) if URL else None
    if URL and model is None:
        why = f"no vLLM server answers at P2O_VLLM_URL={URL}"
    if why:
        if os.environ.get("P2O_VLLM_REQUIRED"):
            pytest.fail(why)
        pytest.skip(why)
    return URL, model


def flags(server, *more, out=None):
    url, model = server
    return ["--model", model, "--device", "cpu", "--rollout-engine", "vllm", "--vllm-url", url,
            "--max-new-tokens", "16", "--temperature", "0.7", *(["--out", str(out)] if out else []), *more]


def loaded_models(url, under=None):
    """The adapters the server has loaded (those read from a folder under `under`, when given)."""
    with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=5) as r:
        return [c["id"] for c in json.loads(r.read())["data"] if c.get("parent")
                and (under is None or c["root"].startswith(str(under)))]


def nudge(model, seed, scale=0.02):
    """A visible adapter: LoRA B starts at zero."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, scale)


def gap(a, b, mask):
    """Mean |a - b| over the completion tokens."""
    return float(((a - b).abs() * mask).sum() / mask.sum())


@pytest.fixture(scope="module")
def policy(server, tmp_path_factory):
    cfg, _ = p2o.parse_config(flags(server, out=tmp_path_factory.mktemp("vllm") / "run"))
    p2o.check_config(cfg)
    model, tok, engine = load_engine(cfg)
    yield cfg, model, tok, engine
    if engine.adapter:  # leave the shared server as it was
        engine.call("/v1/unload_lora_adapter", {"lora_name": engine.adapter})


PROMPT = "What is 12 + 7? Give the final answer in \\boxed{}."


def test_adapters_load_under_new_names_and_the_old_ones_go(policy, server):
    cfg, model, tok, engine = policy
    assert engine.adapter.endswith("-step0") and loaded_models(server[0]).count(engine.adapter) == 1
    seen = [engine.adapter]
    for step in (1, 2, 2):  # the same step twice (a resumed run's first follow): still a new name
        engine.follow(step)
        seen.append(engine.adapter)
        ours = [m for m in loaded_models(server[0]) if m.startswith(engine.run_id)]
        assert ours == [engine.adapter]  # the previous one is unloaded
        assert sorted(p.name for p in engine.dir.iterdir()) == [engine.adapter]  # and its folder deleted
        assert (engine.dir / engine.adapter / "adapter_model.safetensors").is_file()
    assert len(set(seen)) == 4 and seen[3] != seen[2] and seen[2].endswith("-step2")
    # shapes: as the other engines, [N, max_new] each
    pids = p2o.token_ids(tok, [p2o.chat_prompt(tok, PROMPT)] * 3 + [p2o.chat_prompt(tok, "What is 2 + 2?")] * 2)
    comp, mask, logp = engine.generate(pids, 16, p2o.Sampling(cfg.temperature))
    assert comp.shape == mask.shape == logp.shape == (5, 16)
    assert ((logp <= 0) | (mask == 0)).all() and (logp * mask).sum() < -1 and mask[:, 0].all()
    comp, mask, logp = engine.generate(pids, 5)
    assert comp.shape == (5, 5) and torch.equal(comp[0], comp[2]) and logp is None  # greedy: one answer a prompt
    assert comp.shape == (5, 5) and torch.equal(comp[0], comp[2])  # greedy: one answer per prompt


def sample(engine, cfg, n, temperature=None):
    """n samples of PROMPT on the server: (prompt ids, completions, mask, the server's log-probs)."""
    pids = p2o.token_ids(engine.tok, [p2o.chat_prompt(engine.tok, PROMPT)] * n)
    return (pids, *engine.generate(pids, cfg.max_new_tokens, p2o.Sampling(temperature or cfg.temperature)))


def test_server_logprobs_match_the_kits_model_with_the_adapter_not_the_base(policy):
    cfg, model, tok, engine = policy
    nudge(model, 1)
    engine.follow(3)
    pids, comp, mask, slogp = sample(engine, cfg, 8)
    with torch.no_grad():
        mine = p2o.completion_logprobs(model, pids, comp, mask, tok.pad_token_id, cfg.temperature)[0]
        with model.disable_adapter():
            base = p2o.completion_logprobs(model, pids, comp, mask, tok.pad_token_id, cfg.temperature)[0]
    assert mask.sum() > 40
    assert float(((mine - slogp).abs() * mask).max()) < 1e-3  # fp32 server, fp32 trainer
    assert gap(base, slogp, mask) > 20 * gap(mine, slogp, mask) and gap(base, slogp, mask) > 0.01
    # adapter off (the `self` reflector) samples the server's base model
    with engine.adapter_off():
        pids, comp, mask, slogp = sample(engine, cfg, 4)
        assert engine.served == engine.base
    with torch.no_grad(), model.disable_adapter():
        base = p2o.completion_logprobs(model, pids, comp, mask, tok.pad_token_id, cfg.temperature)[0]
    assert float(((base - slogp).abs() * mask).max()) < 1e-3 and engine.served == engine.adapter


def test_no_staleness_across_two_adapters_on_the_same_prompt(policy):
    """The pitfall of a reloaded name: prefix-cache blocks of the old weights. Same prompt, same seed, new
    weights: the server's log-probs are the new adapter's, not the old one's."""
    cfg, model, tok, engine = policy
    results = []
    for seed in (2, 3):
        nudge(model, seed)
        engine.follow(10 + seed)
        torch.manual_seed(0)  # the same request seeds
        pids, comp, mask, slogp = sample(engine, cfg, 4)
        with torch.no_grad():
            mine = p2o.completion_logprobs(model, pids, comp, mask, tok.pad_token_id, cfg.temperature)[0]
        assert float(((mine - slogp).abs() * mask).max()) < 1e-3
        results.append((pids, comp, mask, slogp))
    nudge(model, 2)  # the first adapter again, in the trainer only: its log-probs of the second samples differ
    pids, comp, mask, slogp = results[1]
    with torch.no_grad():
        first = p2o.completion_logprobs(model, pids, comp, mask, tok.pad_token_id, cfg.temperature)[0]
    assert gap(first, slogp, mask) > 0.01
    engine.follow(14)  # server and trainer agree again, for the tests after this one


def test_temperature_reaches_the_server_and_its_logprobs(policy):
    cfg, model, tok, engine = policy
    engine.follow(20)  # (whatever the tests before left on the server)
    for t in (0.4, 1.3):
        pids, comp, mask, slogp = sample(engine, cfg, 8, t)
        with torch.no_grad():
            at_t = p2o.completion_logprobs(model, pids, comp, mask, tok.pad_token_id, t)[0]
            at_1 = p2o.completion_logprobs(model, pids, comp, mask, tok.pad_token_id, 1.0)[0]
        assert float(((at_t - slogp).abs() * mask).max()) < 1e-3 and gap(at_1, slogp, mask) > 0.05
    # a server returning the unscaled distribution's log-probs (vLLM's default logprobs mode) is refused
    # at start: here the probe's request goes out at temperature 1 while the run says 0.7
    real = engine.generate

    def unscaled(ids, max_new, sampling, *a, **k):
        return real(ids, max_new, p2o.Sampling(1.0), *a, **k)
    engine.generate = unscaled
    try:
        ids = tok(p2o.chat_prompt(tok, PROMPT), add_special_tokens=False)["input_ids"]
        with pytest.raises(p2o.UserError, match="unscaled distribution.*--logprobs-mode processed_logprobs"):
            engine.probe(ids)
    finally:
        del engine.generate
    engine.probe(ids)  # the real one passes


def test_start_checks_each_say_what_to_do(server, tiny_model, tmp_path):
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    url, model = server
    cfg, _ = p2o.parse_config(flags(server, out=tmp_path / "a"))
    cfg.vllm_url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(p2o.UserError) as e:
        load_engine(cfg)
    assert "no vLLM server answers" in str(e.value) and (
        f"VLLM_ALLOW_RUNTIME_LORA_UPDATING=1 python -m vllm.entrypoints.openai.api_server --model {model} "
        f"--host 127.0.0.1 --port {port} --dtype float32 --enable-lora --max-lora-rank 16 "
        "--logprobs-mode processed_logprobs") in str(e.value)
    cfg, _ = p2o.parse_config(flags(server, "--model", str(tiny_model), out=tmp_path / "b"))
    with pytest.raises(p2o.UserError, match="whose tokenizer is not --model"):
        load_engine(cfg)
    cfg, _ = p2o.parse_config(flags(server, "--lora-r", "32", out=tmp_path / "c"))  # the server takes rank <= 16
    with pytest.raises(p2o.UserError, match="LoRA rank 32 is greater than max_lora_rank 16.*--max-lora-rank"):
        load_engine(cfg)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "2"}) + "\n")
    cfg, _ = p2o.parse_config(flags(server, "--max-new-tokens", "2040", "--data", str(data), out=tmp_path / "e"))
    with pytest.raises(p2o.UserError, match=r"more than the vLLM server's context \(2048\).*--max-model-len"):
        p2o.train(cfg)


def small_run(server, out, *more):
    """A 3-step GRPO run on the server, a checkpoint every step; returns its command line."""
    return flags(server, "--steps", "3", "--group-size", "4", "--prompts-per-step", "2", "--gen-batch-size", "8",
                 "--micro-batch-size", "8", "--lr", "1e-3", "--save-every", "1", "--no-p2o", "--warmup-steps", "0",
                 "--data", str(p2o.HERE / "data" / "demo_train_240.jsonl"), "--out", str(out), *more)


def rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_training_steps_on_the_server_then_resume(server, tmp_path):
    out = tmp_path / "run"
    cfg, given = p2o.parse_config(small_run(server, out))
    p2o.train(cfg, given, stop_after=2)
    steps = [r for r in rows(out) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(r["rollout/engine"] == "vllm" for r in steps)
    assert all(r["rollout/mismatch_frac"] < 0.02 for r in steps)  # the server sampled what the trainer scores
    cfg, given = p2o.parse_config(["--out", str(out), "--resume"])
    p2o.train(cfg, given)
    steps = [r for r in rows(out) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and steps[2]["rollout/mismatch_frac"] < 0.02
    kept = [p.name for p in (out / "vllm_adapters").iterdir()]
    assert len(kept) == 1 and kept[0].endswith("-step3")  # only the last adapter's folder is kept
    gc.collect()  # both runs are over: their adapters have left the server
    assert loaded_models(server[0], under=out.resolve()) == []


class Proxy:
    """A TCP forwarder in front of the real server: stopping it is, for p2o, the server gone (connections
    refused, requests in flight dropped); starting it again on the same port brings the server back."""

    def __init__(self, target_port: int, port: int = 0):
        self.target, self.sock = target_port, socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.port, self.conns, self.open = self.sock.getsockname()[1], [], True
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while self.open:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        self.open = False
        for s in [self.sock, *self.conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_server_gone_mid_run_saves_the_steps_done_and_resume_continues(server, tmp_path, monkeypatch, capsys):
    from urllib.parse import urlsplit
    proxy = Proxy(urlsplit(server[0]).port)
    out = tmp_path / "run"
    monkeypatch.setattr(p2o, "VLLM_TRIES", 2)  # (1 s between tries instead of 7 s over four)
    real, calls = p2o.VllmEngine.generate, []

    def gen(engine, *a, **k):
        calls.append(1)
        if len(calls) == 3:  # step 2's rollouts (after the start probe's and step 1's): the server goes away
            proxy.stop()
        return real(engine, *a, **k)
    monkeypatch.setattr(p2o.VllmEngine, "generate", gen)
    argv = small_run(server, out, "--save-every", "5", "--vllm-url", f"http://127.0.0.1:{proxy.port}/v1")
    assert p2o.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("p2o: error:") == 1 and "stopped answering" in err
    assert "saved the 1 steps done as a checkpoint" in err and f"--out {out} --resume" in err
    assert p2o.has_checkpoint(out) and [r["step"] for r in rows(out) if "loss" in r] == [1]
    monkeypatch.setattr(p2o.VllmEngine, "generate", real)
    proxy = Proxy(urlsplit(server[0]).port, port=proxy.port)  # the server is back
    try:
        assert p2o.main(["--out", str(out), "--resume"]) == 0
    finally:
        proxy.stop()
    assert [r["step"] for r in rows(out) if "loss" in r] == [1, 2, 3]
    assert "resumed" in capsys.readouterr().err


def test_a_stale_adapter_is_warned_about_once(server, tmp_path, monkeypatch, capsys):
    """verl sampled the initial policy for months: the server's log-probs drift away from the trainer's.
    Here no adapter reaches the server after the first: rollout/mismatch_frac jumps, and that is said once."""
    out = tmp_path / "run"
    real = p2o.VllmEngine.follow

    def stale(self, step=0, stats=None):
        if self.adapter is None:
            return real(self, step, stats)
        self.watch(stats, step)
    monkeypatch.setattr(p2o.VllmEngine, "follow", stale)
    cfg, given = p2o.parse_config(small_run(server, out, "--lr", "2e-2", "--steps", "4", "--max-new-tokens", "24"))
    p2o.train(cfg, given)
    fracs = [r["rollout/mismatch_frac"] for r in rows(out) if "loss" in r]
    err = capsys.readouterr().err
    assert fracs[0] < 0.02 and max(fracs[1:]) > 0.1, fracs
    assert err.count("rollout/mismatch_frac jumped") == 1 and "stale or missing adapter" in err


def test_watch_warns_on_a_jump_not_on_noise(capsys):
    engine = p2o.VllmEngine(None, None, p2o.Config(vllm_url="http://127.0.0.1:1/v1"))
    for step, frac in enumerate([0.03, 0.02, 0.05, 0.06, 0.04, 0.30, 0.5], 1):
        engine.watch({"rollout/mismatch_frac": frac}, step)
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "step 6" in err and "0.300" in err


@pytest.mark.parametrize("argv,message", [
    (["--rollout-engine", "vllm"], "--rollout-engine vllm needs --vllm-url"),
    (["--vllm-url", "http://127.0.0.1:8000/v1"], "--vllm-url needs --rollout-engine vllm"),
    (["--rollout-engine", "vllm", "--vllm-url", "127.0.0.1:8000"], "not an http"),
    (["--rollout-engine", "vllm", "--vllm-url", "http://h:1/v1", "--top-p", "0.9"], "--top-p below 1 with"),
    (["--rollout-engine", "vllm", "--vllm-url", "http://h:1/v1", "--vllm-timeout", "0"], "--vllm-timeout must be"),
])
def test_vllm_flags_are_checked_before_anything_loads(argv, message):
    cfg, _ = p2o.parse_config(argv)
    with pytest.raises(p2o.UserError, match=message.replace("(", r"\(")):
        p2o.check_config(cfg)


def test_the_bench_runs_against_the_server(server, tmp_path):
    """bench/vllm_vs_twin.py, as small as it goes: the same batch on the fp32 twin and on the server, and
    the server's log-probs as close to the trainer's as the twin's."""
    import sys
    sys.path.insert(0, str(p2o.HERE / "bench"))
    from vllm_vs_twin import main
    got = main(["--vllm-url", server[0], "--prompts", "1", "--new-tokens", "8", "--rounds", "1", "--steps", "0",
                "--engines", "twin_fp32,vllm", "--json", str(tmp_path / "b.json")])
    assert json.loads((tmp_path / "b.json").read_text())["generate"].keys() == {"twin_fp32", "vllm"}
    for engine in ("twin_fp32", "vllm"):
        assert got["generate"][engine]["tokens"] > 4 and got["generate"][engine]["max_abs_logp_gap"] < 1e-3
