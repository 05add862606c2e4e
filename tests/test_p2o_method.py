"""p2o.py part 2: P²O itself (hard buffer -> GEPA -> guided rollouts -> distillation under the original
prompt) on the tiny random model. The random model never solves anything, so the tests script the two
places where skill would show: GEPA's metric (a template "solves" problems) and the rollout reward
(guided rollouts succeed half the time). Everything in between is the real code."""
import dataclasses
import http.server
import json
import threading

import pytest
import torch

import gepa
import p2o
from conftest import assert_same_metrics, load_engine, spy_generate, write_problems

MAGIC = "Work digit by digit and check the result."
ARGS = ["--steps", "4", "--group-size", "4", "--prompts-per-step", "3", "--max-new-tokens", "10", "--device", "cpu",
        "--gepa-every", "2", "--gepa-min-hard", "2", "--gepa-budget", "40", "--micro-batch-size", "4",
        "--save-every", "2", "--lr", "1e-3"]


ASKED = []  # every request the scripted reflector got (cleared by the `scripted` fixture)


def scripted_lm(text):
    # no assert here: gepa.optimize catches what the reflector raises; tests check ASKED instead
    ASKED.append(text)
    return f"A better instruction:\n```\n{MAGIC}\n```"


def assert_reflector_saw_hard_problems():
    assert ASKED and all("What is" in text for text in ASKED), ASKED[:1]


@pytest.fixture
def scripted(monkeypatch):
    """GEPA's metric: a template containing MAGIC solves everything. Rollout reward: guided rollouts
    with MAGIC alternate 1, 0; everything else fails (so every plain problem is hard)."""
    seen = {"batches": [], "updates": []}
    ASKED.clear()

    def evaluator(engine, cfg):
        def evaluate(template, batch):
            return [(1.0 if MAGIC in template else 0.0, "out", "fb: expected " + ex["answer"]) for ex in batch]
        return evaluate, lambda jobs: [evaluate(t, b) for t, b in jobs]

    real_sample, real_update = p2o.sample_rollouts, p2o.update_policy

    def sample(*a, **k):
        batch = real_sample(*a, **k)
        seen["batches"].append(batch)
        return batch

    def reward(texts, golds):
        tmpl = seen["batches"][-1].templates
        rs = [1.0 if MAGIC in t and i % 2 == 0 else 0.0 for i, t in enumerate(tmpl)]
        return rs, ["correct" if r else "answer 3 differs from the expected value (wrong value)" for r in rs]

    def update(model, optimizer, scheduler, batch, cfg):
        seen["updates"].append((model, batch))
        return real_update(model, optimizer, scheduler, batch, cfg)

    monkeypatch.setattr(p2o, "make_evaluator", evaluator)
    monkeypatch.setattr(p2o, "sample_rollouts", sample)
    monkeypatch.setattr(p2o, "reward_rollouts", reward)
    monkeypatch.setattr(p2o, "update_policy", update)
    return seen


@pytest.fixture
def tiny_data(tmp_path):
    """Six problems, three per step: from step 3 on, every problem comes round again."""
    return write_problems(tmp_path / "six.jsonl", 6)


def rows(out):
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]


def test_full_p2o_run_guides_hard_problems_and_distils(scripted, tiny_model, tiny_data, tmp_path):
    out = tmp_path / "run"
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--data", str(tiny_data), "--out", str(out), *ARGS])
    p2o.train(cfg, reflector_lm=scripted_lm)
    steps = [r for r in rows(out) if "loss" in r]
    # steps 1-2: everything fails -> hard buffer; GEPA runs after step 2 and finds the MAGIC template
    assert steps[0]["p2o/hard_frac"] == 1.0 and steps[1]["p2o/hard_buffer"] == 6
    assert steps[1]["p2o/gepa_runs"] == 1 and steps[1]["p2o/templates"] == 1
    assert steps[1]["p2o/gepa_candidates"] == 2 and steps[1]["p2o/gepa_metric_calls"] > 0
    state = gepa.State.from_json((out / "gepa_state.json").read_text())
    assert state.candidates == ["", MAGIC]
    assert_reflector_saw_hard_problems()
    # steps 3-4: hard problems that come round again are sampled with the template
    guided = [s for s in steps[2:] if s["p2o/guided_groups"] > 0]
    assert guided, steps[2:]
    assert all(s["p2o/guided_success"] == 0.5 and s["p2o/guided_nonzero_adv_frac"] == 1.0 for s in guided)
    assert all(s["grad_norm"] > 0 for s in guided)  # (the loss value itself is 0 when lengths are equal)
    batch = next(b for b in scripted["batches"] if any(b.templates))
    assert all(t in ("", MAGIC) for t in batch.templates)
    table = p2o.demo_table(out)  # the demo's report: where the templates came from, the best one
    assert "| GEPA candidates kept: from the seed file / from reflection | - | 0 / 1 |" in table
    assert "| templates in use: from the seed file / from reflection | - | 0 / 1 |" in table
    assert "original prompt / best template | - | 0 / 3 solved |" in table
    assert table.endswith(f"best template (from the reflection):\n\n    {MAGIC}")
    guided_total = sum(s["p2o/guided_groups"] for s in steps)
    assert f"| guided groups / with nonzero advantage | - | {guided_total} / {guided_total} (100%) |" in table


def test_loss_uses_the_original_prompt(scripted, tiny_model, tiny_data, tmp_path, monkeypatch):
    """The distillation step's log-probs are π(y | original prompt), not π(y | template + prompt)."""
    out = tmp_path / "run"
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--data", str(tiny_data), "--out", str(out), *ARGS,
                               "--micro-batch-size", "24"])  # one micro-batch: 3 new + up to 2 replayed groups
    recorded = []
    real_lp = p2o.completion_logprobs

    def spy(model, prompt_ids, completions, mask, *a, **k):
        res = real_lp(model, prompt_ids, completions, mask, *a, **k)
        if torch.is_grad_enabled():  # the calls that build the loss
            recorded.append((prompt_ids, completions.clone(), mask.clone(), res[0].detach().clone()))
        return res
    monkeypatch.setattr(p2o, "completion_logprobs", spy)
    p2o.train(cfg, reflector_lm=scripted_lm, stop_after=3)
    model, batch = scripted["updates"][2]  # step 3: the first step after GEPA
    guided = [i for i, t in enumerate(batch.templates) if t]
    assert guided
    tok = p2o.load_model(cfg, torch.device("cpu"))[1]
    prompt_ids, comp, mask, logp_loss = recorded[-1]
    for i in guided:
        q = batch.problems[i // cfg.group_size]["question"]
        original = tok(p2o.chat_prompt(tok, p2o.user_message(q, cfg.instruction)), add_special_tokens=False)["input_ids"]
        assert prompt_ids[i] == original and MAGIC not in tok.decode(prompt_ids[i])
        assert MAGIC in tok.decode(batch.sample_ids[i])  # ... though it was sampled with the template
    # a direct computation under the original prompt, with the weights the update started from
    step2_state = p2o.load_model(cfg, torch.device("cpu"), adapter=str(out / "checkpoint" / "adapter"))[0]
    with torch.no_grad():
        T = comp.shape[1]
        direct = real_lp(step2_state, prompt_ids, comp, mask, tok.pad_token_id, cfg.temperature)[0]
    assert torch.allclose(direct[:, :T], logp_loss, atol=1e-5)


def test_rho_mask_by_hand():
    lp_orig = torch.log(torch.tensor([[0.5, 0.001, 0.9, 0.2], [0.3, 0.3, 0.3, 0.3]]))
    lp_tmpl = torch.log(torch.tensor([[0.5, 0.5, 0.05, 0.2], [0.3, 0.00002, 0.3, 0.3]]))
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    # ratios: [1, 0.002 (<0.01), 18 (>10), 1] and [1, 15000 (>10), 1, masked]
    assert p2o.rho_mask(lp_orig, lp_tmpl, mask).tolist() == [[1, 0, 0, 1], [1, 0, 1, 0]]
    # the bounds are inclusive and configurable
    edge = torch.log(torch.tensor([[0.01, 10.0, 0.5]]))
    assert p2o.rho_mask(edge, torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.long)).tolist() == [[1, 1, 1]]
    assert p2o.rho_mask(edge, torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.long), 0.6, 2).tolist() == [[0, 0, 0]]


@pytest.fixture(scope="module")
def double_policy(tiny_model):
    """The tiny model with a LoRA that matters, in float64: a difference left is a bug, not rounding."""
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--device", "cpu", "--lora-r", "4"])
    model, tok = p2o.load_model(cfg, torch.device("cpu"))
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    return model.double(), tok


def guided_batch(model, tok, cfg):
    """Rows 0-1 sampled with a template, row 2 plain, one original prompt. The sampler's recorded
    log-probs put ρ = π(y|x)/π(y|t+x) outside [0.01, 10] at three tokens of the guided rows (e^5 at row 0,
    tokens 1 and 3; e^-6 at row 1, token 2), and far off at every token of the plain row."""
    q = "What is 2+3?"
    orig = tok(p2o.chat_prompt(tok, p2o.user_message(q, cfg.instruction)), add_special_tokens=False)["input_ids"]
    tmpl = tok(p2o.chat_prompt(tok, p2o.user_message(q, cfg.instruction, "T")), add_special_tokens=False)["input_ids"]
    comp = torch.randint(10, 60, (3, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(comp)
    batch = p2o.Rollouts(prompt_ids=[orig] * 3, completions=comp, mask=mask, pad_id=tok.pad_token_id,
                         templates=["T", "T", ""], sample_ids=[tmpl, tmpl, orig],
                         advantages=torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64))
    with torch.no_grad():
        lp = p2o.completion_logprobs(model, batch.prompt_ids, comp, mask, tok.pad_token_id, cfg.temperature)[0]
    shift = torch.zeros_like(lp)
    shift[0, [1, 3]], shift[1, 2], shift[2] = -5.0, 6.0, -5.0
    batch.sample_logp = lp + shift
    return batch, torch.tensor([[1, 0, 1, 0, 1, 1], [1, 1, 0, 1, 1, 1], [1] * 6])


def test_rho_mask_is_applied_to_the_loss(double_policy):
    """The update drops exactly the ρ-filtered tokens of guided rows from the loss: its gradient is the
    surrogate's over the tokens the ρ mask keeps (ρ from the sampler's recorded log-probs and the
    update's own), and differs from the gradient over all tokens."""
    model, tok = double_policy
    cfg = p2o.Config(lr=0.0, warmup_steps=0, micro_batch_size=2, is_correction="none", max_grad_norm=1e9)
    batch, kept = guided_batch(model, tok, cfg)
    opt, sched = p2o.make_optimizer(model, cfg)
    p2o.update_policy(model, opt, sched, batch, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    got = torch.cat([p.grad.flatten() for p in params])
    assert batch.loss_mask.tolist() == kept.tolist()  # plain rows are never ρ-filtered
    assert p2o.rho_masked_frac(batch) == pytest.approx(3 / 12)

    def grad_with(loss_mask):  # the batch's loss by hand, in one piece
        model.zero_grad()
        logp = p2o.completion_logprobs(model, batch.prompt_ids, batch.completions, batch.mask, batch.pad_id,
                                       cfg.temperature)[0]
        norm = {"seqs": 3, "tokens": batch.mask.sum().item()}
        p2o.policy_loss(logp, logp.detach(), batch.advantages, loss_mask, cfg, norm=norm,
                        response_mask=batch.mask)[0].backward()
        return torch.cat([p.grad.flatten() for p in params])
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()
    # (1e-6: micro-batches of 2 run rows 0-1 on a shared prompt cache, whose backward differs from one
    # full forward's by ~1e-7 even in float64)
    assert rel(got, grad_with(kept)) < 1e-6
    assert rel(got, grad_with(batch.mask)) > 1e-2  # (the masked tokens do matter to this gradient)


def test_rho_mask_without_recorded_logprobs_runs_the_template_forward(double_policy):
    """An engine that records no sampler log-probs: π(y|t+x) comes from a forward under the template
    prompt; the micro-batch's rows are found by their index in the batch."""
    model, tok = double_policy
    cfg = p2o.Config()
    batch, _ = guided_batch(model, tok, cfg)
    batch.sample_logp = None
    with torch.no_grad():
        lp_t = p2o.completion_logprobs(model, batch.sample_ids, batch.completions, batch.mask, batch.pad_id, 1.0)[0]
    logp_orig = lp_t.clone()
    logp_orig[0, 4] -= 7.0  # ρ = e^-7
    logp_orig[1, 1] += 3.0  # ρ = e^3 = 20
    logp_orig[2] -= 9.0     # a plain row: never filtered
    want = [[1, 1, 1, 1, 0, 1], [1, 0, 1, 1, 1, 1], [1] * 6]
    assert p2o.p2o_token_mask(model, batch, [0, 1, 2], logp_orig, batch.mask, cfg).tolist() == want
    assert p2o.p2o_token_mask(model, batch, [1, 2], logp_orig[1:], batch.mask[1:], cfg).tolist() == want[1:]


def test_hard_buffer_and_split():
    cfg = p2o.Config(group_size=4, hard_threshold=1, hard_buffer_size=3)
    state = p2o.P2OState()
    probs = [{"id": f"p{i}", "question": f"q{i}", "answer": "1"} for i in range(4)]
    rewards = [1, 0, 0, 0] + [1, 1, 0, 0] + [0, 0, 0, 0] + [0, 0, 0, 0]
    hard = p2o.collect_hard(state, probs, rewards, [f"out{i}" for i in range(16)], ["fb"] * 16, cfg)
    assert hard == [True, False, True, True] and list(state.hard) == ["p0", "p2", "p3"]
    assert state.hard["p0"]["failures"] == [("out1", "fb"), ("out2", "fb")]
    hard = p2o.collect_hard(state, probs[:1], [1, 1, 1, 0], ["x"] * 4, ["fb"] * 4, cfg)  # p0 solved now
    assert hard == [False] and list(state.hard) == ["p2", "p3"]
    p2o.collect_hard(state, probs[1:2] + probs[:1], [0] * 8, ["x"] * 8, ["fb"] * 8, cfg)
    assert list(state.hard) == ["p3", "p1", "p0"]  # full: the oldest (p2) left


def test_scoring_set_is_a_seeded_random_split():
    hard = [{"id": str(i)} for i in range(10)]
    val, train = p2o.split_hard(hard, seed=3)
    assert len(val) == 5 and len(train) == 5 and not {v["id"] for v in val} & {t["id"] for t in train}
    assert (val, train) == p2o.split_hard(hard, seed=3)  # reproducible (a resumed run splits alike)
    splits = {tuple(v["id"] for v in p2o.split_hard(hard, seed=s)[0]) for s in range(20)}
    assert len(splits) > 10
    assert sum(tuple(v["id"] for v in p2o.split_hard(hard, seed=s)[0]) == ("5", "6", "7", "8", "9")
               for s in range(20)) < 3  # not "the newest half"
    val, train = p2o.split_hard([{"id": str(i)} for i in range(700)], seed=0)
    assert len(val) == 300 and len(train) == 400
    val, train = p2o.split_hard([{"id": "only"}], seed=0)
    assert val == train == [{"id": "only"}]


def test_without_reflection_the_whole_buffer_is_scored():
    hard = [{"id": str(i)} for i in range(10)]
    val, _ = p2o.split_hard(hard, seed=3, reflect=False)
    assert [v["id"] for v in val] == [str(i) for i in range(10)]  # no trainset needed: every problem gets scores
    val, _ = p2o.split_hard(hard, cap=4, seed=3, reflect=False)  # capped by the budget: a seeded draw
    assert len({v["id"] for v in val}) == 4 and all(v in hard for v in val)


def test_assign_templates_uses_weights():
    state = p2o.P2OState()
    state.hard = {"a": {}, "b": {}}
    state.templates = ["", "T1", "T2"]
    state.weights = {"a": [0.0, 1.0, 0.0], "b": [0.0, 0.5, 0.5]}
    import random
    rng = random.Random(0)
    assert p2o.assign_templates(state, {"id": "a"}, 6, rng) == ["T1"] * 6
    drawn = p2o.assign_templates(state, {"id": "b"}, 200, rng)
    assert set(drawn) == {"T1", "T2"}
    assert p2o.assign_templates(state, {"id": "zzz"}, 4, rng) is None  # not hard: plain rollouts


class StubChat(http.server.BaseHTTPRequestHandler):
    requests, reply = [], None

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        StubChat.requests.append((self.path, self.headers.get("Authorization"), body))
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": StubChat.reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture
def stub_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StubChat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    StubChat.requests.clear()
    StubChat.reply = f"Try this:\n```\n{MAGIC}\n```"
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_http_reflector_against_stub_server(scripted, stub_server, tiny_model, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    cfg = p2o.Config(model=str(tiny_model), reflector=stub_server, reflector_model="qwen-reflector",
                     gepa_budget=30, max_new_tokens=8, device="cpu")
    state = p2o.P2OState()
    state.hard = {f"h{i}": {"id": f"h{i}", "question": f"What is {i}*{i}?", "answer": str(i * i),
                               "failures": []} for i in range(6)}
    p2o.run_gepa(state, None, cfg)
    assert state.templates == [MAGIC] and state.runs == 1
    path, auth, body = StubChat.requests[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test" and body["model"] == "qwen-reflector"
    assert "What is" in body["messages"][-1]["content"]


@pytest.mark.parametrize("reflector", ["down", "garbage", "raises"])
def test_broken_reflector_does_not_stop_training(scripted, reflector, tiny_model, tiny_data, tmp_path, monkeypatch,
                                                 capsys):
    real = gepa.OpenAILM  # retry quickly
    monkeypatch.setattr(p2o.gepa, "OpenAILM", lambda *a, **k: real(*a, **{**k, "retries": 1, "backoff": 0.01, "timeout": 2}))
    lm = None
    extra = []
    if reflector == "down":
        extra = ["--reflector", "http://127.0.0.1:9/v1"]  # nothing listens on the discard port
        monkeypatch.setattr(p2o, "check_reflector", lambda r: None)  # as if it went down after the start check
    elif reflector == "garbage":
        lm = lambda text: "I am not sure what you mean."
    else:
        def lm(text):
            raise ConnectionError("reflector crashed")
    out = tmp_path / "run"
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--data", str(tiny_data), "--out", str(out), *ARGS, *extra,
                               "--steps", "5"])
    p2o.train(cfg, reflector_lm=lm)
    printed = capsys.readouterr()
    assert "p2o: warning: GEPA: gepa: the reflection LM" in printed.out  # said, not swallowed
    assert ("the reflector failed" in printed.err) == (reflector != "garbage")  # and summed up at the end
    steps = [r for r in rows(out) if "loss" in r]
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5]  # GEPA ran after steps 2 and 4
    assert steps[-1]["p2o/gepa_runs"] == 2 and steps[-1]["p2o/templates"] == 0
    assert steps[-1]["p2o/guided_groups"] == 0
    if reflector != "garbage":
        assert steps[-1]["p2o/reflector_failures"] > 0


def test_resume_restores_gepa_state_and_hard_buffer(scripted, tiny_model, tiny_data, tmp_path):
    base = ["--model", str(tiny_model), "--data", str(tiny_data), *ARGS, "--steps", "5"]
    full, _ = p2o.parse_config([*base, "--out", str(tmp_path / "full")])
    p2o.train(full, reflector_lm=scripted_lm)
    part, _ = p2o.parse_config([*base, "--out", str(tmp_path / "part")])
    p2o.train(part, reflector_lm=scripted_lm, stop_after=3)  # checkpoint at step 2, right after GEPA
    saved = json.loads((tmp_path / "part" / "checkpoint" / "p2o.json").read_text())
    assert saved["runs"] == 1 and len(saved["hard"]) == 6 and saved["templates"] == [MAGIC]
    resumed, given = p2o.parse_config(["--out", str(tmp_path / "part"), "--resume"])
    p2o.train(resumed, given, reflector_lm=scripted_lm)
    b = assert_same_metrics(tmp_path / "full" / "metrics.jsonl", tmp_path / "part" / "metrics.jsonl")
    assert len(b) == 5
    assert (tmp_path / "full" / "gepa_state.json").read_text() == (tmp_path / "part" / "gepa_state.json").read_text()


# p2o.json's keys, in order, as the dict-based state wrote them (kept_by_sampling once GEPA has run)
OLD_P2O_KEYS = ["hard", "gepa", "templates", "weights", "replays", "replay_carry", "tally", "runs", "seconds",
                "failures", "seeds", "last"]


def test_p2o_json_keeps_its_format():
    """P2OState reads a p2o.json of the old format and writes it back unchanged; a file from before a
    key existed loads with that key's default."""
    before = {"hard": {"p1": {"id": "p1", "question": "q", "answer": "1", "failures": [["out", "fb"]]}},
              "gepa": None, "templates": [], "weights": {}, "replays": {}, "replay_carry": 0.5, "tally": {},
              "runs": 0, "seconds": 0.0, "failures": 0, "seeds": [], "last": {}}
    after = {**before, "gepa": "{}", "templates": ["T"], "weights": {"p1": [1.0]}, "tally": {"T": [1, 2]},
             "runs": 1, "seconds": 3.5, "seeds": ["T"], "last": {"candidates": 2, "front": 1, "metric_calls": 9},
             "kept_by_sampling": 0}
    assert list(before) == OLD_P2O_KEYS and list(p2o.P2OState().to_dict()) == OLD_P2O_KEYS
    for old in (before, after):
        text = json.dumps(old)
        assert json.dumps(p2o.P2OState.from_dict(json.loads(text)).to_dict()) == text
    older = p2o.P2OState.from_dict({k: v for k, v in before.items() if k not in ("tally", "seeds", "last")})
    assert older.tally == {} and older.seeds == [] and older.last == {} and older.replay_carry == 0.5


def test_resume_from_an_old_format_p2o_json(scripted, tiny_model, tiny_data, tmp_path):
    """A checkpoint whose p2o.json lacks keys added later (seeds, kept_by_sampling) resumes, and the
    run goes on exactly as the uninterrupted one."""
    base = ["--model", str(tiny_model), "--data", str(tiny_data), *ARGS, "--steps", "4"]
    full, _ = p2o.parse_config([*base, "--out", str(tmp_path / "full")])
    p2o.train(full, reflector_lm=scripted_lm)
    part, _ = p2o.parse_config([*base, "--out", str(tmp_path / "part")])
    p2o.train(part, reflector_lm=scripted_lm, stop_after=3)  # checkpoint at step 2, right after GEPA
    path = tmp_path / "part" / "checkpoint" / "p2o.json"
    saved = json.loads(path.read_text())
    assert list(saved) == OLD_P2O_KEYS + ["kept_by_sampling", "scores"] and saved["runs"] == 1
    path.write_text(json.dumps({k: v for k, v in saved.items() if k not in ("seeds", "kept_by_sampling")}))
    resumed, given = p2o.parse_config(["--out", str(tmp_path / "part"), "--resume"])
    p2o.train(resumed, given, reflector_lm=scripted_lm)
    steps = assert_same_metrics(tmp_path / "full" / "metrics.jsonl", tmp_path / "part" / "metrics.jsonl")
    assert len(steps) == 4
    assert_reflector_saw_hard_problems()  # GEPA reflected on the hard buffer before the checkpoint ...
    assert saved["templates"] == [MAGIC] and all(s["p2o/guided_groups"] > 0 for s in steps[2:])  # ... and the
    # resumed steps sampled with what the old-format file held


def test_local_model_reflector_is_loaded_and_used(scripted, tiny_model, monkeypatch):
    """--reflector PATH: a second model is loaded on demand, asked for instructions, then released."""
    cfg = p2o.Config(model=str(tiny_model), reflector=str(tiny_model), reflector_max_new_tokens=6,
                     gepa_budget=20, max_new_tokens=8, device="cpu")
    engine = load_engine(cfg)[2]
    asked = []
    real_reflect = gepa.reflect

    def spy(prompt, records, lm):
        return real_reflect(prompt, records, lambda text: asked.append(text) or lm(text))
    monkeypatch.setattr(gepa, "reflect", spy)
    state = p2o.P2OState()
    state.hard = {f"h{i}": {"id": f"h{i}", "question": f"What is {i}*3?", "answer": str(3 * i), "failures": []}
                     for i in range(6)}
    p2o.run_gepa(state, engine, cfg)
    assert asked and "What is" in asked[0]  # the local model got the reflection request
    saved = gepa.State.from_json(state.gepa)
    assert saved.iterations >= 1 and saved.metric_calls <= 20 and state.runs == 1


def test_gepa_scoring_set_always_fits_the_budget(scripted, tiny_model):
    """After the hard set changed, the old candidates must be re-scored on the new scoring set; the
    set is sized from --gepa-budget so that this fits even a tiny budget (gepa raises otherwise)."""
    cfg = p2o.Config(model=str(tiny_model), gepa_budget=30, max_new_tokens=8, device="cpu")
    state = p2o.P2OState()
    state.hard = {f"h{i}": {"id": f"h{i}", "question": f"What is {i}*3?", "answer": str(3 * i), "failures": []}
                     for i in range(6)}
    p2o.run_gepa(state, None, cfg, lm=scripted_lm)
    assert state.templates == [MAGIC]
    state.hard = {f"n{i}": {"id": f"n{i}", "question": f"What is {i}+9?", "answer": str(i + 9), "failures": []}
                     for i in range(6)}
    for budget in (2, 5):
        p2o.run_gepa(state, None, dataclasses.replace(cfg, gepa_budget=budget), lm=scripted_lm)
    saved = gepa.State.from_json(state.gepa)
    assert state.runs == 3 and saved.valset_ids and all(i.startswith("id:n") for i in saved.valset_ids)
    assert state.templates == [MAGIC]  # the best candidate survived the re-scoring
    assert saved.candidates[0] == ""  # ... and so did the original prompt


# ---------------------------------------------------------------------------------------------
# The recipe as the authors run it (issue 9): each test fails on the code before the fix


def test_guided_groups_are_mined_again(scripted, tiny_model, tiny_data, tmp_path):
    """A guided group that succeeds more than --hard-threshold times sends its problem back to plain
    rollouts: it leaves the hard buffer (guided MAGIC rollouts succeed 2 of 4 here)."""
    out = tmp_path / "run"
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--data", str(tiny_data), "--out", str(out), *ARGS,
                               "--steps", "3"])
    p2o.train(cfg, reflector_lm=scripted_lm)
    steps = [r for r in rows(out) if "loss" in r]
    assert steps[1]["p2o/hard_buffer"] == 6 and steps[2]["p2o/guided_groups"] > 0
    assert steps[2]["p2o/hard_buffer"] == 6 - steps[2]["p2o/guided_groups"]
    saved = json.loads((out / "checkpoint" / "p2o.json").read_text())
    guided_ids = [p["id"] for p, t in zip(scripted["batches"][2].problems, scripted["batches"][2].templates[::4])
                  if t]
    assert guided_ids and not set(guided_ids) & set(saved["hard"])


def test_every_problem_gepa_saw_gets_templates_later_arrivals_wait(scripted, tiny_model):
    """The authors' rule: scoring-set problems draw among the templates that solved them,
    reflection-pool problems among the whole set; a problem that joined after the run waits."""
    cfg = p2o.Config(model=str(tiny_model), gepa_budget=40, max_new_tokens=8, device="cpu")
    state = p2o.P2OState()
    state.hard = {f"h{i}": {"id": f"h{i}", "question": f"What is {i}*3?", "answer": str(3 * i), "failures": []}
                     for i in range(6)}
    p2o.run_gepa(state, None, cfg, lm=scripted_lm)
    scored = gepa.State.from_json(state.gepa).valset_ids
    assert state.templates == [MAGIC] and 0 < len(scored) < 6  # half scored, half fed reflection
    assert set(state.weights) == set(state.hard)  # ... and all of them get templates
    import random
    rng = random.Random(0)
    for pid in state.hard:
        assert p2o.assign_templates(state, {"id": pid}, 4, rng) == [MAGIC] * 4
    state.hard["late"] = {"id": "late", "question": "What is 1+1?", "answer": "2", "failures": []}
    assert p2o.assign_templates(state, {"id": "late"}, 4, rng) is None  # joined after the GEPA run


def test_pool_problems_draw_from_the_whole_set_by_scoring_set_mean():
    state = gepa.State(candidates=["", "A", "B"], parents=[[], [], []],
                       val_scores=[[0.0, 0.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], valset_ids=["v0", "v1", "v2"])
    p2o_state = p2o.P2OState()
    val = [{"id": f"v{i}"} for i in range(3)]
    pool = [{"id": "p0"}, {"id": "gone"}]
    p2o_state.hard = {i: {"id": i} for i in ("v0", "v1", "v2", "p0")}
    p2o.give_templates(p2o_state, state, val, pool, hard_rate=0.25)
    assert p2o_state.templates == ["A", "B"]
    assert p2o_state.weights["v0"] == [pytest.approx(2 / 3), 0.0]  # only A solved it
    assert p2o_state.weights["v1"] == [0.0, pytest.approx(1 / 3)]
    assert p2o_state.weights["p0"] == [pytest.approx(2 / 3), pytest.approx(1 / 3)]  # whole set, by mean
    assert "gone" not in p2o_state.weights  # left the buffer meanwhile (solved)


def test_gepa_feedback_always_carries_the_gold_answer_and_answers_are_batched(tiny_model, monkeypatch):
    cfg = p2o.Config(model=str(tiny_model), max_new_tokens=6, device="cpu")
    engine = load_engine(cfg)[2]
    calls = []
    spy_generate(monkeypatch, calls.append)
    evaluate, evaluate_many = p2o.make_evaluator(engine, cfg)
    batch = [{"id": "a", "question": "What is 2+2?", "answer": "4"}, {"id": "b", "question": "What is 3+3?", "answer": "6"}]
    res = evaluate_many([("T1", batch), ("T2", batch[:1])])
    assert len(calls) == 1 and len(calls[0]) == 3  # one generate call for every job
    assert "T1" in calls[0][0] and "T2" in calls[0][2]
    assert [len(r) for r in res] == [2, 1]
    for (score, _, feedback), gold in zip(res[0] + res[1], ["4", "6", "4"]):
        assert score == 0.0 and f"The correct answer is {gold}." in feedback  # (random model: no answer)
    assert evaluate("T1", batch)[1][2] == res[0][1][2]


def test_run_gepa_mutates_k_parents_with_batched_answers(tiny_model, tmp_path, monkeypatch):
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("Add carefully.\n---\nWork digit by digit.\n\n---\nCheck the result.\n")
    cfg = p2o.Config(model=str(tiny_model), max_new_tokens=4, device="cpu", gepa_budget=60, templates=str(seeds),
                     gepa_parents=16, gepa_minibatch=2)
    engine = load_engine(cfg)[2]
    calls = []
    spy_generate(monkeypatch, lambda prompts: calls.append(len(prompts)))
    asked = []
    lm = lambda text: asked.append(text) or f"```\nNew idea {len(asked)}.\n```"
    state = p2o.P2OState()
    state.hard = {f"h{i}": {"id": f"h{i}", "question": f"What is {i}*3?", "answer": str(3 * i), "failures": []}
                     for i in range(10)}
    p2o.run_gepa(state, engine, cfg, lm=lm)
    saved = gepa.State.from_json(state.gepa)
    n_val = len(saved.valset_ids)
    assert saved.candidates[:4] == ["", "Add carefully.", "Work digit by digit.", "Check the result."]
    assert n_val == 5  # half of the 10 hard problems (under the cap 60 // 5 that leaves room for 4 seeds)
    # the random model solves nothing: all four are on the front, so the first iteration mutates
    # all four (later ones fewer: k is cut to the budget left)
    firsts = [next(i for i, t in enumerate(asked[:4]) if "```\n" + text + "\n```" in t)
              for text in ("(empty: the assistant was given no instruction)", *saved.candidates[1:4])]
    assert sorted(firsts) == [0, 1, 2, 3]
    # seeds scored in one call; then the 4 parents' minibatches in one, the 4 children's in one
    assert calls[:3] == [4 * n_val, 4 * 2, 4 * 2]
    assert saved.metric_calls == sum(calls) <= 60
    assert state.seeds == saved.candidates[1:4]


def test_reflector_none_scores_the_seed_templates_only(scripted, tiny_model, tmp_path):
    seeds = tmp_path / "seeds.txt"
    seeds.write_text(f"{MAGIC}\n---\nSomething else.\n")
    cfg = p2o.Config(model=str(tiny_model), gepa_budget=40, max_new_tokens=8, device="cpu", reflector="none",
                     templates=str(seeds))
    state = p2o.P2OState()
    state.hard = {f"h{i}": {"id": f"h{i}", "question": f"What is {i}*3?", "answer": str(3 * i), "failures": []}
                     for i in range(6)}
    p2o.run_gepa(state, None, cfg)
    saved = gepa.State.from_json(state.gepa)
    assert saved.candidates == ["", MAGIC, "Something else."] and saved.iterations == 0
    assert state.templates == [MAGIC] and state.seeds == [MAGIC, "Something else."]
    # nothing to reflect on, so no trainset: all 6 hard problems were scored and get templates
    assert len(saved.valset_ids) == 6 and set(state.weights) == {f"h{i}" for i in range(6)}


def test_gepa_runs_answer_only_problems_new_to_the_scoring_set(tiny_model, tmp_path, monkeypatch):
    """--gepa-reuse-scores (default): a hard problem is scored by each candidate once while it stays in the
    scoring set; a later run answers only the problems that joined since, and a run with none answers
    nothing. Off, every run answers the whole scoring set again."""
    asked = []

    def evaluator(engine, cfg):
        def many(jobs):
            asked.extend((t, ex["id"]) for t, batch in jobs for ex in batch)
            return [[(1.0 if t == "T" else 0.0, "out", "fb") for _ in batch] for t, batch in jobs]
        return (lambda t, batch: many([(t, batch)])[0]), many
    monkeypatch.setattr(p2o, "make_evaluator", evaluator)
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("T\n")
    cfg = p2o.Config(model=str(tiny_model), reflector="none", templates=str(seeds), gepa_budget=80, device="cpu")
    hard = lambda i: {"id": f"h{i}", "question": f"What is {i}*3?", "answer": str(3 * i), "failures": []}
    state = p2o.P2OState()
    state.hard = {f"h{i}": hard(i) for i in range(4)}
    p2o.run_gepa(state, None, cfg)
    assert sorted(asked) == sorted((t, f"h{i}") for t in ("", "T") for i in range(4))
    state.hard.pop("h0")
    state.hard["h4"] = hard(4)
    asked.clear()
    p2o.run_gepa(state, None, cfg)
    assert sorted(asked) == [("", "h4"), ("T", "h4")] and state.last["run_metric_calls"] == 2
    assert set(state.weights) == {"h1", "h2", "h3", "h4"} and state.templates == ["T"]
    asked.clear()
    p2o.run_gepa(state, None, cfg)
    assert asked == [] and state.last["run_metric_calls"] == 0 and state.runs == 3
    # a problem scored two runs ago, outside the last run's scoring set, is not answered again ...
    state.hard = {f"h{i}": hard(i) for i in range(1, 4)}
    p2o.run_gepa(state, None, dataclasses.replace(cfg, gepa_budget=2 * 4))  # (a scoring set of 2)
    assert len(gepa.State.from_json(state.gepa).valset_ids) == 2
    p2o.run_gepa(state, None, cfg)  # (all 3)
    assert asked == [] and {c: set(row) for c, row in state.scores.items()} == {c: {"h1", "h2", "h3"} for c in ("", "T")}
    # ... but one that was solved (left the buffer) and is hard again is
    cfg4 = dataclasses.replace(cfg, group_size=4)
    p2o.collect_hard(state, [hard(1)], [1.0, 1.0, 0.0, 0.0], ["x"] * 4, ["fb"] * 4, cfg4)
    p2o.collect_hard(state, [hard(1)], [0.0] * 4, ["x"] * 4, ["fb"] * 4, cfg4)
    asked.clear()
    p2o.run_gepa(state, None, cfg)
    assert sorted(asked) == [("", "h1"), ("T", "h1")]
    state.hard["h5"] = hard(5)
    asked.clear()
    p2o.run_gepa(state, None, dataclasses.replace(cfg, gepa_reuse_scores=False))
    assert sorted(asked) == sorted((t, f"h{i}") for t in ("", "T") for i in (1, 2, 3, 5))


@pytest.mark.parametrize("text, match", [("", "no template"), ("\n---\n  \n---\n", "no template")])
def test_templates_file_errors_name_the_file(tmp_path, text, match):
    f = tmp_path / "t.txt"
    f.write_text(text)
    with pytest.raises(p2o.UserError, match=match) as e:
        p2o.load_templates(str(f))
    assert str(f) in str(e.value)
    with pytest.raises(p2o.UserError, match="not found"):
        p2o.load_templates(str(tmp_path / "missing.txt"))
    f.write_text("First line\nsecond line\n---\n\nSecond template\n--- \n")
    assert p2o.load_templates(str(f)) == ["First line\nsecond line", "Second template"]


def test_local_reflector_reply_without_closing_fence_is_rejected(tiny_model, monkeypatch):
    """The self/local reflector prefills an opening fence; a reply that never closes it is not adopted."""
    cfg = p2o.Config(model=str(tiny_model), reflector="self", reflector_max_new_tokens=4, device="cpu")
    lm, release = p2o.make_reflector(cfg, load_engine(cfg)[2])
    records = [{"input": "q", "output": "o", "feedback": "f"}]
    monkeypatch.setattr(p2o, "decode", lambda *a: ["Add the numbers with care and then"])
    assert gepa.reflect("", records, lm) is None
    monkeypatch.setattr(p2o, "decode", lambda *a: ["Add the numbers with care.\n```\nmore words"])
    assert gepa.reflect("", records, lm) == "Add the numbers with care."


def test_greedy_is_argmax_whatever_the_generation_config(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM
    path = tmp_path / "penalised"
    m = AutoModelForCausalLM.from_pretrained(tiny_model)
    m.generation_config.update(do_sample=True, temperature=0.7, top_k=3, repetition_penalty=50.0, no_repeat_ngram_size=1)
    m.save_pretrained(path)
    import shutil
    for f in tiny_model.iterdir():
        if f.name.startswith(("tokenizer", "special", "chat")):
            shutil.copy(f, path / f.name)
    cfg = p2o.Config(model=str(path), max_new_tokens=12, device="cpu")
    model, tok, engine = load_engine(cfg)
    prompt = p2o.chat_prompt(tok, "What is 2 + 2?")
    comp = engine.generate(p2o.token_ids(tok, [prompt]), 12)[0]
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        for _ in range(12):  # plain argmax, by hand
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
    want = ids[0, -12:]
    eos = p2o.eos_ids(model, tok)
    n = next((i + 1 for i, t in enumerate(want.tolist()) if t in eos), 12)
    assert comp[0, :n].tolist() == want[:n].tolist()


def test_eval_only_with_a_template(tiny_model, tmp_path, monkeypatch, capsys):
    data = write_problems(tmp_path / "ev.jsonl", 3)
    seen = []
    spy_generate(monkeypatch, seen.append)
    base = ["--eval-only", "--model", str(tiny_model), "--eval", str(data), "--max-new-tokens", "4", "--device", "cpu"]
    assert p2o.main(base + ["--template", "Carry the ones.", "--out", str(tmp_path / "e1")]) == 0
    assert all("Carry the ones.\n\nWhat is" in p for p in seen[-1])
    f = tmp_path / "tmpl.txt"
    f.write_text("From a file.\n")
    assert p2o.main(base + ["--template", str(f), "--out", str(tmp_path / "e2")]) == 0
    assert all("From a file.\n\nWhat is" in p for p in seen[-1])
    assert p2o.main(base + ["--out", str(tmp_path / "e3")]) == 0 and not any("From a file" in p for p in seen[-1])
    assert p2o.main(["--model", str(tiny_model), "--template", "x", "--device", "cpu"]) == 2
    assert "--template is for --eval-only" in capsys.readouterr().err


# Templates reach training at any run length: replay of buffered hard problems, the authors'
# per-epoch schedule as an option, and a note when P²O cannot act. Each fails on the code before.

def test_templates_reach_rollouts_when_no_problem_comes_round_twice(scripted, tiny_model, tmp_path):
    """40 problems, 6 steps x 3 prompts = 18 draws: the data walk never repeats a problem, so only
    replay can bring a problem GEPA gave templates back; it does from the first GEPA run on."""
    data = write_problems(tmp_path / "big.jsonl", 40)
    out = tmp_path / "run"
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--data", str(data), "--out", str(out), *ARGS,
                               "--steps", "6"])
    p2o.train(cfg, reflector_lm=scripted_lm)
    steps = [r for r in rows(out) if "loss" in r]
    first_gepa = next(i for i, r in enumerate(steps) if r["p2o/gepa_runs"] == 1)
    after = steps[first_gepa + 1:]
    assert after and all(r["p2o/guided_groups"] >= 1 for r in after)
    assert all(r["p2o/replayed_groups"] == r["p2o/guided_groups"] for r in steps)  # guided = replayed here
    # the share is kept exactly: 0.5 x 3 prompts = 1.5 a step, carried over (1, 2, 1, 2 ...)
    assert [r["p2o/replayed_groups"] for r in after] == [1, 2, 1, 2][:len(after)] or \
        sum(r["p2o/replayed_groups"] for r in after) == int(1.5 * len(after))
    new = [p["id"] for b in scripted["batches"] for p, t in zip(b.problems, b.templates[::4]) if not t]
    assert len(set(new)) == len(new)  # fresh draws never repeat: every guided group was a replay
    # replays come on top: every step still draws its 3 new problems, 18 in all, as plain GRPO would
    assert [len(b.problems) for b in scripted["batches"]] == [3 + r["p2o/replayed_groups"] for r in steps]
    assert new == [p["id"] for p in p2o.next_problems(p2o.load_problems(str(data)), {"epoch": 0, "index": 0}, 18, 0)]


def test_draw_problems_share_queue_order_and_one_problem_file():
    cfg = p2o.Config(prompts_per_step=4, replay_share=0.25, replay_max=2, seed=0)
    problems = [{"id": f"d{i}", "question": "q", "answer": "1"} for i in range(100)]
    state = p2o.P2OState()
    state.templates = ["T"]
    state.hard = {i: {"id": i, "question": "q", "answer": "1", "failures": []} for i in ("a", "b", "c")}
    state.weights = {"a": [1.0], "b": [1.0], "c": [1.0]}
    pos = {"epoch": 0, "index": 0}
    got = [p2o.draw_problems(problems, pos, state, cfg) for _ in range(8)]
    assert [n for _, n in got] == [1] * 6 + [0, 0]  # 3 problems x --replay-max 2, then the queue is empty
    assert [b[-1]["id"] for b, n in got if n] == ["a", "b", "c", "a", "b", "c"]  # least replayed first
    # on top of the step's 4 new problems, which are plain GRPO's: the walk moves 4 a step, replay or not
    assert [len(b) for b, _ in got] == [5] * 6 + [4, 4] and pos["index"] == 8 * 4
    grpo = p2o.next_problems(problems, {"epoch": 0, "index": 0}, 32, cfg.seed)
    assert [p for b, n in got for p in b[:4]] == grpo
    assert "failures" not in got[0][0][-1]
    # a share of 0.5 of 4 prompts: 2 replayed a step, on top (the queue refilled)
    state.replays = {}
    assert [n for _, n in (p2o.draw_problems(problems, pos, state, dataclasses.replace(cfg, replay_share=0.5))
                           for _ in range(2))] == [2, 2]
    # --no-replay-on-top: in new problems' places, the walk moving on by what is left
    state.replays, pos = {}, {"epoch": 0, "index": 0}
    in_place = dataclasses.replace(cfg, replay_share=0.5, replay_on_top=False)
    got = [p2o.draw_problems(problems, pos, state, in_place) for _ in range(4)]
    assert [n for _, n in got] == [2, 2, 2, 0] and [len(b) for b, _ in got] == [4] * 4 and pos["index"] == 2 * 3 + 4
    assert [p for b, n in got for p in b[:4 - n]] == grpo[:10]
    # a solved problem leaves the buffer, and with it the queue
    state.replays = {}
    state.hard.pop("b")
    assert [p["id"] for p in p2o.replay_queue(state, cfg)] == ["a", "c"]
    # one problem: never a division by zero, the batch stays full
    one = [{"id": "a", "question": "q", "answer": "1"}]
    cfg1 = dataclasses.replace(cfg, prompts_per_step=1, replay_share=0.5)
    state.replays, pos = {}, {"epoch": 0, "index": 0}
    state.hard, state.weights = {"a": {**one[0], "failures": []}}, {"a": [1.0]}
    batches = [p2o.draw_problems(one, pos, state, cfg1)[0] for _ in range(4)]
    assert all(len(b) == 1 and b[0]["id"] == "a" for b in batches)


def test_epoch_schedule_runs_gepa_at_the_end_of_each_pass(scripted, tiny_model, tmp_path):
    data = write_problems(tmp_path / "d.jsonl", 6)
    out = tmp_path / "run"
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--data", str(data), "--out", str(out), *ARGS,
                               "--steps", "5", "--p2o-schedule", "epoch", "--gepa-every", "1"])
    p2o.train(cfg, reflector_lm=scripted_lm)
    steps = [r for r in rows(out) if "loss" in r]
    # 3 prompts a step over 6 problems: the first pass ends after step 2, and GEPA runs then, not
    # every step (--gepa-every is not used); in the next pass the walk brings every problem back
    # with templates, they are solved (2 of 4 > --hard-threshold 1) and leave the buffer: no GEPA
    # at the end of pass 2 (fewer than --gepa-min-hard buffered)
    assert [r["p2o/gepa_runs"] for r in steps] == [0, 1, 1, 1, 1]
    assert [r["p2o/guided_groups"] for r in steps] == [0, 0, 3, 3, 0]
    assert all(r["p2o/replayed_groups"] == 0 for r in steps)


@pytest.mark.parametrize("extra, says", [
    (["--steps", "3", "--gepa-every", "3"], "lower --gepa-every"),
    (["--steps", "3", "--p2o-schedule", "epoch"], "within the first pass over --data"),
    (["--steps", "3", "--replay-share", "0"], "raise --replay-share"),
])
def test_a_run_where_p2o_cannot_act_says_so_at_start(tiny_model, tmp_path, capsys, extra, says):
    data = write_problems(tmp_path / "d.jsonl", 40)
    argv = ["--model", str(tiny_model), "--data", str(data), "--out", str(tmp_path / "r"), *ARGS, *extra,
            "--reflector", "none"]
    cfg, given = p2o.parse_config(argv)
    p2o.train(cfg, given, stop_after=1)
    err = capsys.readouterr().err
    assert err.count("P²O cannot guide any rollout") == 1 and says in err


def test_epoch_schedule_with_a_buffer_smaller_than_a_pass_says_so_at_start(tiny_model, tmp_path, capsys):
    """Under the epoch schedule a problem returns a pass later; a smaller buffer may drop it first."""
    assert p2o.epoch_buffer_note(p2o.Config(p2o_schedule="epoch", hard_buffer_size=600), 600) is None
    assert p2o.epoch_buffer_note(p2o.Config(p2o_schedule="replay", hard_buffer_size=10), 2000) is None
    data = write_problems(tmp_path / "d.jsonl", 40)
    argv = ["--model", str(tiny_model), "--data", str(data), "--out", str(tmp_path / "r"), *ARGS,
            "--steps", "30", "--p2o-schedule", "epoch", "--hard-buffer-size", "12", "--reflector", "none"]
    cfg, given = p2o.parse_config(argv)
    p2o.train(cfg, given, stop_after=1)
    err = capsys.readouterr().err
    assert err.count("--hard-buffer-size 12 keeps only the newest 12") == 1
    assert "Raise --hard-buffer-size to 40" in err and "cannot guide any rollout" not in err


@pytest.mark.parametrize("flag, value, says", [("--replay-share", "1.5", "--replay-share"),
                                               ("--replay-share", "-0.1", "--replay-share"),
                                               ("--replay-max", "0", "--replay-max"),
                                               ("--p2o-schedule", "daily", "--p2o-schedule"),
                                               ("--gepa-min-hard", "700", "--gepa-min-hard")])
def test_replay_settings_that_cannot_work_exit_2(tiny_model, tiny_data, tmp_path, capsys, flag, value, says):
    rc = p2o.main(["--model", str(tiny_model), "--data", str(tiny_data), "--out", str(tmp_path / "r"), flag, value])
    err = capsys.readouterr().err
    assert rc == 2 and says in err and len(err.strip().splitlines()) == 1


def test_grpo_loss_divides_a_guided_sequence_by_all_its_response_tokens():
    """The ρ mask removes tokens from the sum, not from the sequence's length (authors)."""
    cfg = p2o.Config(loss_type="grpo", epsilon=0.2)
    logp = torch.zeros(1, 4)
    adv = torch.tensor([1.0])
    response = torch.tensor([[1, 1, 1, 1]])
    kept = torch.tensor([[1, 0, 1, 0]])  # two tokens masked by ρ
    loss, _ = p2o.policy_loss(logp, logp, adv, kept, cfg, response_mask=response)
    assert loss.item() == pytest.approx(-2 / 4)
    loss, _ = p2o.policy_loss(logp, logp, adv, kept, cfg)  # without it: the mask is the response
    assert loss.item() == pytest.approx(-2 / 2)


def test_templates_that_still_lift_sampled_success_stay_when_greedy_scoring_finds_none():
    state = gepa.State(candidates=["", "A"], parents=[[], []], val_scores=[[0.0, 0.0], [0.0, 0.0]],
                       valset_ids=["v0", "v1"])
    val = [{"id": "v0"}, {"id": "v1"}]
    s = p2o.P2OState()
    s.hard = {"v0": {"id": "v0"}, "v1": {"id": "v1"}}
    s.templates = ["A"]
    p2o.tally_templates(s, ["A", "A", "", "A"] * 2, [1.0, 0.0, 1.0, 1.0] * 2)  # A: 4 of 6 sampled right
    p2o.give_templates(s, state, val, [], hard_rate=0.25)
    assert s.templates == ["A"] and s.weights == {"v0": [pytest.approx(4 / 6)], "v1": [pytest.approx(4 / 6)]}
    assert s.kept_by_sampling == 1 and s.tally == {}
    p2o.tally_templates(s, ["A"] * 8, [1.0] + [0.0] * 7)  # 1 of 8: no better than a hard problem's rollouts
    p2o.give_templates(s, state, val, [], hard_rate=0.25)
    assert s.templates == [] and s.weights == {}
