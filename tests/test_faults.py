"""Faults a long run meets: damaged checkpoints, a full disk, a kill mid-save, a non-finite loss, two runs on
one --out, a hanging or thinking reflector, prompts longer than the model's context. Each is one clear
line and, where the run cannot go on, exit 2; nothing already saved is lost."""
import builtins
import errno
import io
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

import p2o
from conftest import write_problems
from test_p2o_method import ARGS as P2O_ARGS, scripted  # noqa: F401 (fixture)

FAST = ["--group-size", "4", "--prompts-per-step", "2", "--max-new-tokens", "12", "--device", "cpu",
        "--micro-batch-size", "4", "--no-p2o"]


def args(model, data, out, *extra):
    return ["--model", str(model), "--data", str(data), "--out", str(out), *FAST, *extra]


def run_main(capsys, *argv):
    rc = p2o.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def one_error_line(rc, err):
    """Exit 2 and one line saying what went wrong (progress bars of the model loading aside)."""
    return rc == 2 and "Traceback" not in err and len([l for l in err.splitlines() if "error" in l]) == 1


def steps_logged(out):
    return [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]


def parity_reward(monkeypatch):
    """The random model never solves anything; a deterministic reward of the text gives advantages."""
    monkeypatch.setattr(p2o, "reward_rollouts", lambda texts, golds: (
        [float(len(set(t)) % 2) for t in texts], ["fb"] * len(texts)))


@pytest.fixture
def two_checkpoints(tiny_model, tiny_data, tmp_path):
    """A finished 2-step run saved every step: the checkpoint of step 2 and, before it, step 1."""
    out = tmp_path / "run"
    assert p2o.main(args(tiny_model, tiny_data, out, "--steps", "2", "--save-every", "1")) == 0
    return out


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# --- checkpoints ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["state.pt", "adapter/adapter_model.safetensors", "p2o.json"])
def test_damaged_checkpoint_is_named_and_the_previous_one_resumes(capsys, two_checkpoints, name):
    out = two_checkpoints
    truncate(out / "checkpoint" / name)
    rc, err = run_main(capsys, "--out", out, "--resume", "--steps", "3")
    assert rc == 0, err
    assert f"checkpoint/{name}" in err and "checkpoint.old" in err and "(step 1)" in err
    assert steps_logged(out) == [1, 2, 3]  # steps 2-3 trained again from step 1
    assert (out / "checkpoint.damaged" / name).is_file()  # kept for a look, out of the way
    step = torch.load(out / "checkpoint" / "state.pt", weights_only=False)["step"]
    assert step == 3 and torch.load(out / "checkpoint.old" / "state.pt", weights_only=False)["step"] == 2


def test_both_checkpoints_damaged_is_one_line(capsys, two_checkpoints):
    out = two_checkpoints
    truncate(out / "checkpoint" / "state.pt")
    truncate(out / "checkpoint.old" / "p2o.json")
    rc, err = run_main(capsys, "--out", out, "--resume", "--steps", "3")
    assert one_error_line(rc, err)
    assert "checkpoint/state.pt is damaged" in err and "another --out" in err


class Killed(BaseException):
    """A kill -9 at a chosen point: nothing after it runs."""


def test_a_kill_between_the_renames_always_leaves_a_checkpoint(capsys, monkeypatch, two_checkpoints):
    out = two_checkpoints
    # the state a kill between the two renames leaves: only checkpoint.old (step 2)
    shutil.rmtree(out / "checkpoint.old", ignore_errors=True)
    (out / "checkpoint").rename(out / "checkpoint.old")
    real_replace = p2o.os.replace

    def replace(src, dst):
        if Path(src).name == "checkpoint.tmp":
            raise Killed  # killed again, just before the new checkpoint is renamed into place
        real_replace(src, dst)
    monkeypatch.setattr(p2o.os, "replace", replace)
    with pytest.raises(Killed):
        p2o.main(["--out", str(out), "--resume", "--steps", "3"])
    monkeypatch.setattr(p2o.os, "replace", real_replace)
    assert p2o.has_checkpoint(out)
    rc, err = run_main(capsys, "--out", out, "--resume", "--steps", "3")
    assert rc == 0 and "resumed" in err and "at step 2" in err
    assert steps_logged(out) == [1, 2, 3]


class FullFile:
    """A file on a full disk: opening (and truncating) works, writing fails."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def __getattr__(self, name):
        return getattr(self.f, name)


def fill_disk(monkeypatch, name, after=0):
    """Writes of files called name (or name.tmp) fail with ENOSPC, from the (after+1)-th on."""
    real_open, seen = io.open, []

    def fake_open(file, mode="r", *a, **kw):
        f = real_open(file, mode, *a, **kw)
        if any(c in mode for c in "wax") and Path(str(file)).name in (name, name + ".tmp"):
            seen.append(file)
            if len(seen) > after:
                return FullFile(f)
        return f
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(builtins, "open", fake_open)


def test_disk_full_during_a_checkpoint_says_so_and_keeps_the_last_one(capsys, monkeypatch, tiny_model, tiny_data,
                                                                        tmp_path):
    out = tmp_path / "run"
    fill_disk(monkeypatch, "p2o.json", after=1)  # the step-1 checkpoint is written, step 2's fails
    rc, err = run_main(capsys, *args(tiny_model, tiny_data, out, "--steps", "3", "--save-every", "1"))
    monkeypatch.undo()
    assert one_error_line(rc, err)
    assert "disk is full" in err and "step-2 checkpoint" in err and "--resume" in err
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    state, _, _ = p2o.read_checkpoint(out / "checkpoint")
    assert state["step"] == 1
    rc, err = run_main(capsys, "--out", out, "--resume")
    assert rc == 0 and steps_logged(out) == [1, 2, 3]


def test_config_json_is_never_half_written(capsys, monkeypatch, two_checkpoints):
    out = two_checkpoints
    before = (out / "config.json").read_text()
    fill_disk(monkeypatch, "config.json")
    rc, err = run_main(capsys, "--out", out, "--resume", "--steps", "3")
    monkeypatch.undo()
    assert one_error_line(rc, err) and "disk is full" in err and "config.json" in err
    assert (out / "config.json").read_text() == before
    assert not (out / "config.json.tmp").exists()


def test_resume_loads_rng_and_optimizer_state_to_the_cpu_whatever_the_model_device(monkeypatch, two_checkpoints):
    # a model on another device (meta stands in for a GPU here): the RNG states must stay CPU
    # ByteTensors for torch.set_rng_state; the optimizer moves its own state to the parameters
    class Recorder:
        def load_state_dict(self, sd):
            self.sd = sd

    class ModelElsewhere:
        def parameters(self):
            yield torch.empty(1, device="meta")
    import peft
    monkeypatch.setattr(peft, "set_peft_model_state_dict", lambda model, sd: None)
    opt, sched = Recorder(), Recorder()
    step, _, _, rng = p2o.load_checkpoint(two_checkpoints, ModelElsewhere(), opt, sched)
    assert step == 2
    assert rng["torch"].device.type == "cpu" and rng["torch"].dtype == torch.uint8
    torch.set_rng_state(rng["torch"])  # raises for a tensor that is not a CPU ByteTensor
    tensors = [v for st in opt.sd["state"].values() for v in st.values() if torch.is_tensor(v)]
    assert tensors and all(t.device.type == "cpu" for t in tensors)


# --- a non-finite loss --------------------------------------------------------------------------------

def strict_json(line):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(line, parse_constant=refuse)


def test_non_finite_loss_skips_the_update_and_stops_the_run(capsys, monkeypatch, tiny_model, tiny_data, tmp_path):
    parity_reward(monkeypatch)
    out = tmp_path / "run"
    rc, err = run_main(capsys, *args(tiny_model, tiny_data, out, "--steps", "12", "--save-every", "1",
                                     "--lr", "1e30", "--warmup-steps", "0"))
    assert one_error_line(rc, err) and "non-finite loss or gradient" in err and "--lr" in err
    assert "this update is skipped" in err  # a warning for each skipped update before the stop
    rows = [strict_json(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    skipped = [r["train/skipped_steps"] for r in rows]
    assert skipped[-1] == p2o.MAX_SKIPPED_IN_A_ROW - 1 and len(rows) < 12  # the stopping step is not logged
    state, adapter, _ = p2o.read_checkpoint(out / "checkpoint")
    assert all(torch.isfinite(v).all() for v in adapter.values())
    moments = state["optimizer"]["state"]  # (empty if no update was ever taken: then all() says nothing)
    assert moments and all({"exp_avg", "exp_avg_sq"} <= set(st) for st in moments.values())
    assert all(torch.isfinite(t).all() for st in moments.values() for t in st.values())
    assert not (out / "checkpoint.tmp").exists()


# --- two runs on one --out ------------------------------------------------------------------------

def test_an_out_folder_in_use_is_refused_and_not_left_locked(capsys, monkeypatch, tiny_model, tiny_data, tmp_path):
    out = tmp_path / "run"
    started, go = threading.Event(), threading.Event()

    def reward(texts, golds):  # the first run waits in its first step while the others try
        if threading.current_thread() is not threading.main_thread():
            started.set()
            go.wait(60)
        return [0.0] * len(texts), ["fb"] * len(texts)
    monkeypatch.setattr(p2o, "reward_rollouts", reward)
    first = threading.Thread(target=p2o.train, args=(p2o.parse_config(args(tiny_model, tiny_data, out,
                                                                             "--steps", "2"))[0],))
    first.start()
    try:
        assert started.wait(60)
        for extra in (["--resume"], []):
            rc, err = run_main(capsys, *args(tiny_model, tiny_data, out, "--steps", "2", *extra))
            assert one_error_line(rc, err) and "in use by a running p2o" in err and "another --out" in err
    finally:
        go.set()
        first.join(60)
    assert steps_logged(out) == [1, 2]  # the first run's logs, whole and once
    # its lock file stays behind, and stops nobody
    rc, err = run_main(capsys, "--out", out, "--resume", "--steps", "3")
    assert rc == 0 and steps_logged(out) == [1, 2, 3]


# --- a reflector that accepts and never answers -------------------------------------------------------

def test_a_hanging_reflector_is_bounded_and_training_goes_on(capsys, scripted, tiny_model, tmp_path):  # noqa: F811
    with socket.socket() as server:  # accepts connections (the kernel's backlog), never answers
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/v1"
        data = write_problems(tmp_path / "train.jsonl", 12)
        t0 = time.time()
        rc = p2o.main([str(a) for a in ("--model", tiny_model, "--data", data, "--out", tmp_path / "run", *P2O_ARGS,
                                        "--reflector", url, "--reflector-timeout", "0.3", "--gepa-max-seconds", "1")])
    out, err = capsys.readouterr()
    err += out  # (GEPA's warnings are written above the progress bar)
    assert rc == 0, err
    assert time.time() - t0 < 40  # today: 60 s x 4 attempts x 5 reflections
    assert f"GEPA: waiting for {url}" in err  # a clock moved while it waited
    assert "no answer before the time limit" in err or "timed out" in err
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 4 and rows[-1]["p2o/gepa_runs"] == 1 and rows[-1]["p2o/reflector_failures"] >= 1
    assert rows[-1]["p2o/gepa_seconds"] < 1 + 2  # the cap, and the scoring around it


# --- prompts longer than the model's context ------------------------------------------------------------

def test_prompts_longer_than_the_context_are_skipped_with_one_line(capsys, tiny_model, tmp_path):
    data = write_problems(tmp_path / "train.jsonl", 12)
    # 2048 positions, 12 of them for the answer: 3000 one-byte tokens do not fit
    with open(data, "a") as f:
        f.write(json.dumps({"id": "long", "question": "7 " * 1500 + "?", "answer": "7"}) + "\n")
    rc, err = run_main(capsys, *args(tiny_model, data, tmp_path / "run", "--steps", "1", "--eval", data))
    assert rc == 0, err
    assert len([l for l in err.splitlines() if "does not fit" in l]) == 2  # the training file, the --eval file
    assert "skipped 1 of 13" in err and "id long" in err and str(data) in err and "--max-new-tokens 12" in err
    evals = [json.loads(l) for l in (tmp_path / "run" / "evals" / "step_0.jsonl").read_text().splitlines()]
    assert len(evals) == 12 and "long" not in {r["id"] for r in evals}


def test_a_huge_prompt_is_refused_without_tokenizing_it(capsys, monkeypatch, tiny_model, tmp_path):
    cfg = p2o.parse_config(["--model", str(tiny_model), "--device", "cpu"])[0]
    model, tok = p2o.load_model(cfg, torch.device("cpu"))
    problems = [{"id": "huge", "question": "x" * 5_000_000, "answer": "1"}]
    t0 = time.time()
    with pytest.raises(p2o.UserError, match="every prompt is longer than the model's context .2048 tokens"):
        p2o.fit_context(problems, p2o.HFEngine(model, tok, cfg), cfg, "big.jsonl", 512)
    assert time.time() - t0 < 2


def test_disk_full_while_logging_is_one_line_naming_the_file(capsys, monkeypatch, tiny_model, tiny_data, tmp_path):
    out = tmp_path / "run"
    fill_disk(monkeypatch, "metrics.jsonl")
    rc, err = run_main(capsys, *args(tiny_model, tiny_data, out, "--steps", "2"))
    monkeypatch.undo()
    assert one_error_line(rc, err) and "disk is full" in err and str(out / "metrics.jsonl") in err
