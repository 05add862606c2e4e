"""What a new user meets: every completion logged, GEPA runs logged, optional trackers, a picture of a
run, no dead end after any stop, and one-line errors instead of tracebacks (issue 11)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

import p2o
from conftest import ROOT, assert_same_metrics, load_engine, spy_generate
from test_p2o_method import ARGS as P2O_ARGS, MAGIC, scripted, scripted_lm  # noqa: F401 (fixture)

FAST = ["--group-size", "4", "--prompts-per-step", "2", "--max-new-tokens", "12", "--device", "cpu",
        "--micro-batch-size", "4", "--no-p2o"]
COMPLETION_KEYS = {"step", "problem_id", "question", "answer", "template", "completion", "reward", "advantage",
                   "feedback", "length", "truncated", "rho_masked_frac"}


def read_jsonl(path):
    return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]


def run_main(capsys, *argv):
    rc = p2o.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def one_line_error(rc, err):
    lines = [l for l in err.splitlines() if l.strip() and not l.startswith("p2o: ")]
    errors = [l for l in err.splitlines() if "error" in l]
    return rc == 2 and len(errors) == 1 and not lines and "Traceback" not in err


def parity_reward(monkeypatch):
    """The random model never solves anything; a deterministic reward of the text gives advantages."""
    monkeypatch.setattr(p2o, "reward_rollouts", lambda texts, golds: (
        [float(len(set(t)) % 2) for t in texts], ["fb"] * len(texts)))


# --- completions.jsonl and gepa_runs.jsonl ---------------------------------------------------------

def test_completions_file_has_every_rollout_and_survives_resume(tiny_model, tiny_data, tmp_path, monkeypatch):
    parity_reward(monkeypatch)
    base = ["--model", tiny_model, "--data", tiny_data, *FAST, "--steps", "4", "--save-every", "2"]
    assert p2o.main([str(a) for a in [*base, "--out", tmp_path / "full"]]) == 0
    rows = read_jsonl(tmp_path / "full" / "completions.jsonl")
    assert len(rows) == 4 * 2 * 4  # steps x prompts x G
    assert all(set(r) == COMPLETION_KEYS for r in rows)
    assert [r["step"] for r in rows] == [s for s in (1, 2, 3, 4) for _ in range(8)]
    assert all(r["template"] == "" and r["rho_masked_frac"] is None for r in rows)
    metrics = [r for r in read_jsonl(tmp_path / "full" / "metrics.jsonl") if "loss" in r]
    for m in metrics:  # the rows are the rollouts the metrics were computed from
        step_rows = [r for r in rows if r["step"] == m["step"]]
        assert sum(r["reward"] for r in step_rows) / 8 == pytest.approx(m["reward"])
        assert sum(r["length"] for r in step_rows) / 8 == pytest.approx(m["completions/mean_length"])
        assert sum(r["truncated"] for r in step_rows) / 8 == pytest.approx(m["completions/clipped_ratio"])
    for g in range(0, len(rows), 4):  # advantages are group-normalised rewards
        grp = rows[g:g + 4]
        assert len({r["problem_id"] for r in grp}) == 1
        assert sum(r["advantage"] for r in grp) == pytest.approx(0, abs=1e-5)
        if len({r["reward"] for r in grp}) > 1:
            best = max(grp, key=lambda r: r["reward"])
            assert best["advantage"] > 0
    # killed after step 3 (checkpoint at 2), resumed: no duplicates, the same rows as the full run
    cfg, _ = p2o.parse_config([str(a) for a in [*base, "--out", tmp_path / "part"]])
    p2o.train(cfg, stop_after=3)
    assert len(read_jsonl(tmp_path / "part" / "completions.jsonl")) == 3 * 8
    assert p2o.main(["--out", str(tmp_path / "part"), "--resume"]) == 0
    assert read_jsonl(tmp_path / "part" / "completions.jsonl") == rows


def test_no_log_completions_writes_no_file(tiny_model, tiny_data, tmp_path):
    out = tmp_path / "run"
    assert p2o.main([str(a) for a in ["--model", tiny_model, "--data", tiny_data, "--out", out, *FAST,
                                      "--steps", "1", "--no-log-completions"]]) == 0
    assert (out / "metrics.jsonl").is_file() and not (out / "completions.jsonl").exists()


def test_guided_rollouts_and_gepa_runs_are_logged(scripted, tiny_model, tmp_path):  # noqa: F811
    from conftest import write_problems
    data = write_problems(tmp_path / "six.jsonl", 6)
    out = tmp_path / "run"
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--data", str(data), "--out", str(out), *P2O_ARGS])
    p2o.train(cfg, reflector_lm=scripted_lm)
    rows = read_jsonl(out / "completions.jsonl")
    metrics = {r["step"]: r for r in read_jsonl(out / "metrics.jsonl") if "loss" in r}
    # 4 steps x (3 new problems + the replayed ones on top) x G = 4
    assert len(rows) == sum(3 + m["p2o/replayed_groups"] for m in metrics.values()) * 4 > 4 * 3 * 4
    guided = [r for r in rows if r["template"]]
    assert guided and all(r["template"] == MAGIC and r["step"] > 2 for r in guided)
    assert all(isinstance(r["rho_masked_frac"], float) and 0 <= r["rho_masked_frac"] <= 1 for r in guided)
    assert all(r["rho_masked_frac"] is None for r in rows if not r["template"])
    # the scripted reward: guided rollouts alternate 1, 0
    assert [r["reward"] for r in guided[:4]] == [1.0, 0.0, 1.0, 0.0]
    for step in {r["step"] for r in guided}:
        g = [r for r in guided if r["step"] == step]
        assert metrics[step]["p2o/guided_groups"] == len(g) // 4
    runs = read_jsonl(out / "gepa_runs.jsonl")
    assert [r["step"] for r in runs] == [2] and runs[0]["run"] == 1  # GEPA ran after step 2, not after the last
    cands = runs[0]["candidates"]
    assert [c["template"] for c in cands] == ["", MAGIC]
    assert cands[0]["parents"] == [] and cands[1]["parents"] == [0]
    assert cands[0]["score_mean"] == 0.0 and cands[1]["score_mean"] == 1.0
    assert not cands[0]["on_front"] and cands[1]["on_front"]
    assert runs[0]["chosen"] == [MAGIC] and runs[0]["scoring_set"] >= 1


# --- --report-to --------------------------------------------------------------------------------

@pytest.mark.parametrize("tracker,module", [("wandb", "wandb"), ("trackio", "trackio"),
                                            ("tensorboard", "torch.utils.tensorboard")])
def test_missing_tracking_package_is_one_line(capsys, monkeypatch, tiny_model, tiny_data, tmp_path, tracker, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    monkeypatch.setattr(p2o, "load_model", lambda *a, **k: pytest.fail("the model loaded before the check"))
    rc, err = run_main(capsys, "--model", tiny_model, "--data", tiny_data, "--out", tmp_path / "o", *FAST,
                       "--report-to", tracker)
    assert one_line_error(rc, err) and f"pip install {tracker}" in err


def test_unknown_tracker_is_refused(capsys, tiny_model, tiny_data, tmp_path):
    rc, err = run_main(capsys, "--model", tiny_model, "--data", tiny_data, "--out", tmp_path / "o",
                       "--report-to", "mlflow")
    assert one_line_error(rc, err) and "--report-to" in err


@pytest.mark.parametrize("tracker", ["wandb", "trackio"])
def test_tracker_gets_every_metrics_row(tiny_model, tiny_data, tmp_path, monkeypatch, tracker):
    """wandb and trackio share init(project, name, config) / log(dict, step); a stand-in module records."""
    import types
    calls = []
    fake = types.SimpleNamespace(init=lambda **kw: calls.append(("init", kw)),
                                 log=lambda row, step: calls.append(("log", step, row)))
    monkeypatch.setitem(sys.modules, tracker, fake)
    out = tmp_path / "run"
    assert p2o.main([str(a) for a in ["--model", tiny_model, "--data", tiny_data, "--out", out, *FAST, "--steps", "2",
                                      "--report-to", tracker]]) == 0
    assert calls[0][0] == "init" and calls[0][1]["project"] == "p2o" and calls[0][1]["config"]["steps"] == 2
    logged = [(step, row) for kind, step, row in calls[1:]]
    metrics = read_jsonl(out / "metrics.jsonl")
    assert logged == [(m["step"], {k: v for k, v in m.items() if k != "step"}) for m in metrics]


def test_tensorboard_events_load_with_metrics_names(tiny_model, tiny_data, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    parity_reward(monkeypatch)
    out = tmp_path / "run"
    assert p2o.main([str(a) for a in ["--model", tiny_model, "--data", tiny_data, "--out", out, *FAST,
                                      "--steps", "3", "--eval", f"tiny={tiny_data}",
                                      "--report-to", "tensorboard"]]) == 0
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"reward", "loss", "kl", "completions/mean_length", "eval/tiny/accuracy"} <= tags
    metrics = [r for r in read_jsonl(out / "metrics.jsonl") if "loss" in r]
    events = acc.Scalars("reward")
    assert [e.step for e in events] == [1, 2, 3]
    assert [e.value for e in events] == pytest.approx([r["reward"] for r in metrics])
    assert [e.step for e in acc.Scalars("eval/tiny/accuracy")] == [0, 3]


# --- --plot ----------------------------------------------------------------------------------------

def test_plot_writes_an_svg_with_one_series_per_metric(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": 0, "eval/a/accuracy": 0.1, "eval/b/accuracy": 0.3}]
    for s in range(1, 7):
        rows.append({"step": s, "loss": 0.1, "reward": s / 10, "p2o/hard_frac": 1 - s / 10,
                     "p2o/guided_groups": s % 3, "p2o/guided_success": 0.5, "p2o/rho_masked_frac": 0.01 * s,
                     "p2o/gepa_runs": (s >= 2) + (s >= 4)})
    rows.append({"step": 6, "eval/a/accuracy": 0.2, "eval/b/accuracy": 0.35})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 7, "rew')
    rc, err = run_main(capsys, "--plot", run)
    assert rc == 0
    svg = ET.parse(run / "run.svg").getroot()  # parses as XML: a well-formed SVG
    ns = "{http://www.w3.org/2000/svg}"
    assert svg.tag == ns + "svg"
    lines = {p.get("data-metric"): p for p in svg.iter(ns + "polyline")}
    assert set(lines) == {"reward", "eval/a/accuracy", "eval/b/accuracy", "p2o/hard_frac", "p2o/guided_groups",
                          "p2o/guided_success", "p2o/rho_masked_frac"}
    assert len(lines["reward"].get("points").split()) == 6 and len(lines["eval/a/accuracy"].get("points").split()) == 2
    gepa_marks = [l for l in svg.iter(ns + "line") if l.get("class") == "gepa"]
    assert len(gepa_marks) == 2 * 6  # GEPA ran at steps 2 and 4; marked in each of the 6 panels
    assert len({l.get("x1") for l in gepa_marks}) == 2


def test_plot_of_a_folder_without_metrics_is_one_line(tmp_path, capsys):
    rc, err = run_main(capsys, "--plot", tmp_path)
    assert one_line_error(rc, err) and "metrics.jsonl" in err


# --- no dead end after any stop ----------------------------------------------------------------------

def test_a_run_stopped_before_its_first_checkpoint_starts_again(capsys, monkeypatch, tiny_model, tiny_data,
                                                                 tmp_path):
    real_load, real_update = p2o.load_model, p2o.update_policy
    argv = ["--model", tiny_model, "--data", tiny_data, *FAST, "--steps", "2", "--eval", tiny_data, "--eval-limit", "2"]

    def fail_load(*a, **k):
        raise p2o.UserError("model load failed")

    def killed(*a, **k):
        raise KeyboardInterrupt  # as if stopped during step 1, after the first evaluation
    for n, resume in enumerate((True, False)):  # both ways back into the folder work
        out = tmp_path / f"o{n}"
        monkeypatch.setattr(p2o, "load_model", fail_load)
        rc, err = run_main(capsys, *argv, "--out", out)
        assert rc == 2 and (out / "config.json").is_file()
        monkeypatch.setattr(p2o, "load_model", real_load)
        monkeypatch.setattr(p2o, "update_policy", killed)
        rc, err = run_main(capsys, *argv, "--out", out)
        assert rc == 130 and "nothing to resume" in err and "--resume" not in err
        assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [0]
        with open(out / "metrics.jsonl", "a") as f:
            f.write('{"step": 1, "loss": 0.')  # a line cut short by a kill
        monkeypatch.setattr(p2o, "update_policy", real_update)
        rc, err = run_main(capsys, *(["--out", out, "--resume"] if resume else [*argv, "--out", out]))
        assert rc == 0, err
        assert "starting it again" in err or "no checkpoint yet" in err
        rows = read_jsonl(out / "metrics.jsonl")
        assert [r["step"] for r in rows] == [0, 1, 2, 2]  # one eval at the start, steps, final eval


def test_ctrl_c_saves_the_running_step_and_resume_continues(capsys, monkeypatch, tiny_model, tiny_data, tmp_path):
    parity_reward(monkeypatch)
    real_update = p2o.update_policy
    calls = []

    def update(*a, **k):
        calls.append(1)
        if len(calls) == 2:  # Ctrl-C in the middle of step 2
            os.kill(os.getpid(), signal.SIGINT)
        return real_update(*a, **k)
    monkeypatch.setattr(p2o, "update_policy", update)
    base = ["--model", tiny_model, "--data", tiny_data, *FAST, "--steps", "4", "--save-every", "10"]
    before = signal.getsignal(signal.SIGINT)
    rc, err = run_main(capsys, *base, "--out", tmp_path / "part")
    assert rc == 130 and "--resume" in err and "stopping after this step" in err
    state = torch.load(tmp_path / "part" / "checkpoint" / "state.pt", weights_only=False)
    assert state["step"] == 2  # the step that was running when Ctrl-C came was finished and saved
    assert [r["step"] for r in read_jsonl(tmp_path / "part" / "metrics.jsonl")] == [1, 2]
    monkeypatch.setattr(p2o, "update_policy", real_update)
    assert p2o.main(["--out", str(tmp_path / "part"), "--resume"]) == 0
    assert p2o.main([str(a) for a in [*base, "--out", tmp_path / "full"]]) == 0
    assert_same_metrics(tmp_path / "full" / "metrics.jsonl", tmp_path / "part" / "metrics.jsonl")
    assert signal.getsignal(signal.SIGINT) is before  # main put the handler back


def test_ctrl_c_before_any_checkpoint_does_not_promise_a_resume(capsys, monkeypatch, tiny_model, tiny_data, tmp_path):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(p2o, "load_model", interrupted)
    out = tmp_path / "o"
    rc, err = run_main(capsys, "--model", tiny_model, "--data", tiny_data, "--out", out, *FAST)
    assert rc == 130 and "nothing to resume" in err and "--resume" not in err


def test_demo_resume_without_out_takes_the_newest_demo_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(p2o.UserError, match="--out"):
        p2o.latest_demo_run()
    for name in ("demo-20261101-090000", "demo-20261130-081500", "demo-20261120-120000"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "config.json").write_text("{}")
    (tmp_path / "runs" / "demo-20261201-000000").mkdir()  # no config.json: not a run
    assert p2o.latest_demo_run() == str(Path("runs") / "demo-20261130-081500")


def test_resume_ignores_config_keys_it_does_not_know(tiny_model, tiny_data, tmp_path):
    out = tmp_path / "o"
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--data", str(tiny_data), "--out", str(out), *FAST,
                               "--steps", "1"])
    p2o.train(cfg)
    saved = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**saved, "steps": 2, "a_flag_from_another_version": 1}))
    assert p2o.main(["--out", str(out), "--resume"]) == 0
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]


# --- one-line errors instead of tracebacks ----------------------------------------------------------

def test_data_file_that_is_not_utf8(capsys, tiny_model, tmp_path):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"question": "1+1", "answer": "2"}\n{"question": "caf\xe9", "answer": "2"}\n')
    rc, err = run_main(capsys, "--model", tiny_model, "--data", bad, "--out", tmp_path / "o")
    assert one_line_error(rc, err) and "latin1.jsonl:2" in err and "UTF-8" in err


def test_out_naming_an_existing_file(capsys, tiny_model, tiny_data, tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    rc, err = run_main(capsys, "--model", tiny_model, "--data", tiny_data, "--out", f)
    assert one_line_error(rc, err) and "is a file" in err


@pytest.mark.parametrize("flags,msg", [
    (["--eval-limit", "0"], "--eval-limit"),
    (["--save-every", "0"], "--save-every"),
    (["--eval-every", "-1"], "--eval-every"),
    (["--lora-r", "0"], "--lora-r"),
])
def test_zero_and_negative_counts(capsys, tiny_model, tiny_data, tmp_path, flags, msg):
    rc, err = run_main(capsys, "--model", tiny_model, "--data", tiny_data, "--out", tmp_path / "o", *flags)
    assert one_line_error(rc, err) and msg in err


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("reflector,msg", [
    ("htp://localhost:8000/v1", "not a valid URL"),
    ("http://", "not a valid URL"),
    ("http://localhost:notaport/v1", "not a valid URL"),
    ("http://127.0.0.1:{port}/v1", "no server answers"),
    ("./no-such-reflector", "--reflector"),
    ("no-such-model", "--reflector"),
])
def test_reflector_is_checked_at_start(capsys, monkeypatch, tiny_model, tiny_data, tmp_path, reflector, msg):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(p2o, "load_model", lambda *a, **k: pytest.fail("the model loaded before the check"))
    t0 = time.time()
    rc, err = run_main(capsys, "--model", tiny_model, "--data", tiny_data, "--out", tmp_path / "o",
                       "--reflector", reflector.format(port=free_port()))
    assert one_line_error(rc, err) and msg in err and "--reflector" in err and "--model" not in err
    assert time.time() - t0 < 15  # not minutes of retries


def test_reflector_values_that_need_no_check(tiny_model, monkeypatch):
    """self and none are words, not model names: they pass without a look-up; a model folder is looked
    up as --reflector (and found); none of them asks the hub or opens a connection."""
    looked_up = []
    real = p2o.resolve_model
    monkeypatch.setattr(p2o, "resolve_model", lambda name, flag="--model": looked_up.append((name, flag)) or real(name, flag))
    monkeypatch.setattr(p2o, "hub_reachable", lambda *a, **k: pytest.fail("the hub was asked"))
    monkeypatch.setattr(p2o.socket, "create_connection", lambda *a, **k: pytest.fail("a connection was opened"))
    for r in ("self", "none"):
        assert p2o.check_reflector(r) is None
    assert looked_up == []
    assert p2o.check_reflector(str(tiny_model)) is None
    assert looked_up == [(str(tiny_model), "--reflector")]


def test_verify_cli_exit_codes_and_no_sympy(tmp_path):
    run = lambda *a, env=None: subprocess.run([sys.executable, str(ROOT / "verify.py"), *a], capture_output=True,
                                             text=True, timeout=120, env=env)
    assert run("The answer is \\boxed{\\frac{1}{2}}", "0.5").returncode == 0
    assert run("\\boxed{3}", "4").returncode == 1
    assert run("only one argument").returncode == 2
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "sympy.py").write_text("raise ImportError('No module named sympy (test stub)')\n")
    r = run("\\boxed{\\sqrt{2}}", "2^{1/2}", env={**os.environ, "PYTHONPATH": str(stub)})
    assert r.returncode == 2 and "pip install sympy" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# --- what a run shows -------------------------------------------------------------------------------

def test_help_says_what_flags_do():
    text = " ".join(p2o.build_parser().format_help().split())
    assert text.count("(repeatable") == 1 and "(repeatable; default: none)" in text
    assert "--no-p2o turn off (on by default)" in text and "plain GRPO" in text
    assert "runs/demo-" in text and f"--steps {p2o.DEMO['steps']}" in text
    assert "--report-to" in text and "--plot" in text and "--no-log-completions" in text


def test_no_futurewarning_when_loading_the_model(tiny_model):
    cfg, _ = p2o.parse_config(["--model", str(tiny_model), "--device", "cpu"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_engine(cfg)
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]


def test_evaluation_shows_progress(capsys, tiny_model, tiny_data, tmp_path, monkeypatch):
    cfg, _ = p2o.parse_config(["--eval-only", "--model", str(tiny_model), "--eval", f"tiny={tiny_data}",
                               "--device", "cpu", "--max-new-tokens", "4", "--gen-batch-size", "5"])
    sizes = []
    spy_generate(monkeypatch, lambda prompts: sizes.append(len(prompts)))
    row = p2o.eval_only(cfg)
    err = capsys.readouterr().err
    assert "eval tiny (greedy):" in err and "/3 [" in err  # the bar (tqdm redraws at most every 0.1 s)
    assert sizes == [5, 5, 2] and row["eval/tiny/n"] == 12  # it advances after each generate batch


def test_bundled_data_is_found_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # e.g. python ~/p2o/p2o.py --demo, run from the home folder
    assert len(p2o.load_problems(p2o.Config().data)) == len(p2o.load_problems(str(ROOT / "data" / "arith_train.jsonl")))
    with pytest.raises(p2o.UserError, match="not found"):
        p2o.load_problems("data/no_such_file.jsonl")


def test_progress_clock_moves_during_one_long_batch(capsys):
    for _ in p2o.ticking(range(1), "eval slow"):
        time.sleep(2.5)  # one generate call of a whole evaluation, as on a CPU
    err = capsys.readouterr().err
    assert "0/1 [00:02<" in err and "1/1" in err


def test_eta_after_a_resume_counts_only_this_sessions_steps():
    """Resumed at step 20 of 24; one slow step (GEPA, 120 s), then 30 s steps: the rate shown is this
    session's average (ETA = steps left x average), not counting the 20 steps done before."""
    bar = p2o.step_bar(20, p2o.Config(steps=24))
    clock = [bar.start_t]
    bar._time = lambda: clock[0]
    shown = []
    for i, step in enumerate(bar):
        shown.append(bar.format_meter(**bar.format_dict))
        clock[0] += 120 if i == 0 else 30
    assert "21/24 [02:00<06:00, 120.00s/it]" in shown[1]
    assert "22/24 [02:30<02:30, 75.00s/it]" in shown[2]  # (120 + 30) / 2; an EMA would say 67 s/it
    assert "23/24 [03:00<01:00, 60.00s/it]" in shown[3]
