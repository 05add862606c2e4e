"""Tests for gepa.py: front and selection, budget, acceptance, failures, state, P²O helpers, OpenAILM."""

import http.server
import json
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import gepa  # noqa: E402

# ---------------------------------------------------------------------------------------------
# A toy task: an example with tag t is solved when the prompt contains "[t]". The scripted
# reflector is stateless (a function of its request only), so resumed runs can be compared.

TAGS = "abcdef"


def toy_examples(n, offset=0):
    return [{"id": offset + i, "input": f"task {offset + i}", "tag": TAGS[(offset + i) % len(TAGS)]}
            for i in range(n)]


class Counter:
    """An evaluate that counts every example it is asked to score."""

    def __init__(self):
        self.seen = 0

    def __call__(self, prompt, batch):
        self.seen += len(batch)
        out = []
        for ex in batch:
            ok = f"[{ex['tag']}]" in prompt
            feedback = "correct" if ok else f"needs [{ex['tag']}]"
            out.append((1.0 if ok else 0.0, "done" if ok else "wrong", feedback))
        return out


def toy_lm(request):
    current = re.search(r"```\n(.*?)\n```", request, re.DOTALL).group(1)
    missing = [t for t in re.findall(r"needs (\[\w\])", request) if t not in current]
    if not missing:
        return "nothing to add"
    return f"Better:\n```\n{current} {missing[0]}\n```"


def assert_valid(state):
    n = len(state.candidates)
    assert len(state.parents) == n == len(state.val_scores)
    assert all(len(row) == len(state.valset_ids) for row in state.val_scores)
    assert all(p < i for i, ps in enumerate(state.parents) for p in ps)
    assert gepa.State.from_json(state.to_json()) == state


# ---------------------------------------------------------------------------------------------
# Pareto front and parent selection


def test_front_keeps_specialists_and_drops_rows_best_nowhere():
    assert gepa.pareto_front([[1, 0], [0, 1], [0.5, 0.5]]) == [0, 1]


def test_front_drops_dominated_row_even_when_it_ties_best():
    assert gepa.pareto_front([[1, 1], [1, 0]]) == [0]
    assert gepa.pareto_front([[1, 1, 0], [1, 0, 0], [0, 0, 1]]) == [0, 2]


def test_front_keeps_identical_rows_and_all_zero_columns():
    assert gepa.pareto_front([[1, 0], [1, 0], [0, 1]]) == [0, 1, 2]
    assert gepa.pareto_front([[0, 0], [0, 0]]) == [0, 1]
    assert gepa.pareto_front([]) == []


def test_select_parent_in_proportion_to_instances_won():
    scores = [[1, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5]]  # row 2 is best nowhere
    rng = random.Random(0)
    draws = [gepa.select_parents(scores, 1, rng)[0] for _ in range(6000)]
    assert set(draws) == {0, 1}
    assert abs(draws.count(0) / len(draws) - 2 / 3) < 0.03


def test_select_parent_never_draws_dominated_row():
    rng = random.Random(1)
    assert {gepa.select_parents([[1, 0], [0, 0]], 1, rng)[0] for _ in range(200)} == {0}
    with pytest.raises(ValueError):
        gepa.select_parents([], 1, rng)


# ---------------------------------------------------------------------------------------------
# Reflection request and parsing


def test_request_shows_everything_and_truncates_long_fields():
    long_output = "x" * 20000 + "THE END"
    records = [{"input": "what is 2+2", "output": long_output, "feedback": "expected 4", "score": 0.0}]
    seen = []
    gepa.reflect("Be careful.", records, lambda text: seen.append(text) or "```\nBe very careful.\n```")
    text = seen[0]
    for part in ("Be careful.", "what is 2+2", "expected 4", "Score: 0.0", "THE END", "characters cut"):
        assert part in text
    assert len(text) < 2 * gepa.MAX_FIELD_CHARS
    empty = []
    gepa.reflect("", records, lambda text: empty.append(text) or "")
    assert "(empty" in empty[0]


@pytest.mark.parametrize("answer, expected", [
    ("```\nA\n``` then ```markdown\nB\n```", "B"),
    ("Sure:\n```text\n  New rule.\n```", "New rule."),
    ("```Be brief.\nUse units.\n```", "Be brief.\nUse units."),
    ("no block at all", None),
    ("```\n   \n```", None),
    ("```\nOld prompt\n```", None),
    (None, None),
    (42, None),
])
def test_reflect_parses_last_block_or_returns_none(answer, expected):
    records = [{"input": "q", "output": "o", "feedback": "f"}]
    assert gepa.reflect("Old prompt", records, lambda text: answer) == expected


def test_reflect_lets_lm_errors_through():
    def broken(text):
        raise ConnectionError("down")
    with pytest.raises(ConnectionError):
        gepa.reflect("p", [{"input": "q", "output": "o", "feedback": "f"}], broken)


# ---------------------------------------------------------------------------------------------
# The loop: budget, acceptance, failures


@pytest.mark.parametrize("budget", [12, 13, 25, 40, 77, 150])
@pytest.mark.parametrize("minibatch_size", [1, 3, 5])
@pytest.mark.parametrize("merge", [False, True])
def test_budget_is_never_exceeded_and_counted_exactly(budget, minibatch_size, merge):
    evaluate = Counter()
    train, val = toy_examples(9), toy_examples(12, offset=100)
    state = gepa.optimize("Solve.", train, val, evaluate, toy_lm, budget,
                          minibatch_size=minibatch_size, merge=merge)
    assert state.metric_calls == evaluate.seen <= budget
    # it stops only when the next iteration's worst case no longer fits
    assert budget - state.metric_calls < 2 * minibatch_size + len(val)
    assert_valid(state)


def test_budget_per_call_when_continuing():
    evaluate = Counter()
    train, val = toy_examples(6), toy_examples(6, offset=50)
    state = gepa.optimize("Solve.", train, val, evaluate, toy_lm, 30)
    first = state.metric_calls
    state = gepa.optimize("ignored", train, val, evaluate, toy_lm, 40, state=state)
    assert first <= 30 and state.metric_calls - first <= 40
    assert state.metric_calls == evaluate.seen
    assert state.candidates[0] == "Solve."


def test_budget_too_small_for_seed_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot score the seed"):
        gepa.optimize("s", toy_examples(3), toy_examples(10), Counter(), toy_lm, 9)


def test_search_finds_a_prompt_solving_everything():
    state = gepa.optimize("Solve.", toy_examples(12), toy_examples(12, offset=100), Counter(), toy_lm, 400)
    assert gepa.mean(state.val_scores[state.best]) == 1.0
    assert all(f"[{t}]" in state.candidates[state.best] for t in TAGS)


def test_acceptance_is_strict():
    # minibatch = whole trainset = one 'a' and one 'b' example; the parent solves 'a'
    train = [{"id": 1, "input": "x", "tag": "a"}, {"id": 2, "input": "y", "tag": "b"}]
    val = toy_examples(6, offset=10)
    children = {"[a]": "[b]",              # fixes b, breaks a: equal sum -> rejected
                "[b]": "[a] [b]"}          # never reached
    swap = lambda req: "```\n" + children[re.search(r"```\n(.*?)\n```", req, re.DOTALL).group(1)] + "\n```"
    evaluate = Counter()
    state = gepa.optimize("[a]", train, val, evaluate, swap, 60, minibatch_size=2)
    assert state.candidates == ["[a]"] and state.iterations > 0
    assert state.metric_calls == len(val) + 4 * state.iterations  # parent + child on each minibatch

    better = lambda req: "```\n[a] [b]\n```"
    state = gepa.optimize("[a]", train, val, Counter(), better, 60, minibatch_size=2)
    assert state.candidates[:2] == ["[a]", "[a] [b]"] and state.parents[1] == [0]


def test_perfect_minibatch_is_skipped_without_reflecting():
    calls = []
    lm = lambda text: calls.append(text) or "```\nX\n```"
    state = gepa.optimize("[a] [b] [c] [d] [e] [f]", toy_examples(6), toy_examples(6), Counter(), lm, 30)
    assert calls == [] and state.iterations > 0 and len(state.candidates) == 1


def test_on_candidate_sees_each_scored_candidate():
    seen = []

    def hook(state, idx):
        seen.append((idx, len(state.candidates), len(state.val_scores[idx])))

    val = toy_examples(6, offset=30)
    state = gepa.optimize("Solve.", toy_examples(6), val, Counter(), toy_lm, 120, on_candidate=hook)
    assert len(state.candidates) > 1
    assert seen == [(i, i + 1, len(val)) for i in range(len(state.candidates))]


@pytest.mark.parametrize("reply", ["no block here", "```\nSolve.\n```", "```\n\n```", None])
def test_garbage_reflector_leaves_state_valid(reply):
    with pytest.warns(RuntimeWarning) as caught:
        state = gepa.optimize("Solve.", toy_examples(6), toy_examples(6), Counter(), lambda t: reply, 10_000)
    messages = [str(w.message) for w in caught]
    assert sum("no new prompt" in m for m in messages) == gepa.MAX_REFLECTION_FAILURES
    assert "stopped after 5 reflections" in messages[-1]
    assert state.candidates == ["Solve."]
    assert state.unusable_reflections == state.iterations == gepa.MAX_REFLECTION_FAILURES
    assert_valid(state)


def test_raising_reflector_is_counted_warned_and_bounded():
    def down(text):
        raise RuntimeError("server down")
    evaluate = Counter()
    with pytest.warns(RuntimeWarning) as caught:
        state = gepa.optimize("Solve.", toy_examples(6), toy_examples(6), evaluate, down, 10_000)
    assert "server down" in str(caught[0].message) and "stopped after" in str(caught[-1].message)
    assert state.reflection_failures == state.iterations == gepa.MAX_REFLECTION_FAILURES
    assert state.metric_calls == evaluate.seen == 6 + 3 * gepa.MAX_REFLECTION_FAILURES
    assert_valid(state)


def test_flaky_reflector_does_not_stop_the_search():
    calls = [0]

    def flaky(text):
        calls[0] += 1
        if calls[0] % 2:
            raise TimeoutError("slow")
        return toy_lm(text)
    with pytest.warns(RuntimeWarning):
        state = gepa.optimize("Solve.", toy_examples(12), toy_examples(12), Counter(), flaky, 400)
    assert state.reflection_failures > gepa.MAX_REFLECTION_FAILURES
    assert gepa.mean(state.val_scores[state.best]) == 1.0


def test_evaluate_errors_propagate():
    def broken(prompt, batch):
        raise KeyError("answer")
    with pytest.raises(KeyError):
        gepa.optimize("s", toy_examples(3), toy_examples(3), broken, toy_lm, 50)
    with pytest.raises(ValueError, match="2 results for 3 examples"):
        gepa.optimize("s", toy_examples(3), toy_examples(3), lambda p, b: [(1, "", "")] * 2, toy_lm, 50)
    with pytest.raises(ValueError, match=r"scores must lie in \[0, 1\]"):
        gepa.optimize("s", toy_examples(3), toy_examples(3), lambda p, b: [(2, "", "")] * 3, toy_lm, 50)


# ---------------------------------------------------------------------------------------------
# State: save, load, resume, valset changes


def test_state_json_round_trip_and_best():
    state = gepa.optimize("Solve.", toy_examples(8), toy_examples(8), Counter(), toy_lm, 200, merge=True)
    text = state.to_json()
    again = gepa.State.from_json(text)
    assert again == state and again.to_json() == text
    assert json.loads(text)["best"] == state.best
    ties = gepa.State(candidates=["a", "b", "c"], parents=[[], [0], [0]],
                      val_scores=[[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]], valset_ids=["x", "y"])
    assert ties.best == 0 and gepa.State().best is None


@pytest.mark.parametrize("text, match", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"candidates": [], "colour": 1}', "unknown keys"),
    ('{"candidates": ["a"], "parents": [], "val_scores": [[1.0]], "valset_ids": ["x"]}', "inconsistent"),
])
def test_state_from_bad_json_is_a_clear_error(text, match):
    with pytest.raises(ValueError, match=match):
        gepa.State.from_json(text)


@pytest.mark.parametrize("merge", [False, True])
@pytest.mark.parametrize("first", [9, 35, 61])
def test_resumed_run_equals_uninterrupted_run(merge, first):
    train, val = toy_examples(10), toy_examples(8, offset=40)
    total = 220
    straight = gepa.optimize("Solve.", train, val, Counter(), toy_lm, total, seed=7, merge=merge)
    part = gepa.optimize("Solve.", train, val, Counter(), toy_lm, first, seed=7, merge=merge)
    saved = gepa.State.from_json(part.to_json())
    resumed = gepa.optimize("Solve.", train, val, Counter(), toy_lm, total - saved.metric_calls,
                            seed=7, merge=merge, state=saved)
    assert resumed.to_json() == straight.to_json()
    assert len(straight.candidates) > 2


def test_changed_valset_rescores_every_candidate_when_budget_allows():
    train, old_val, new_val = toy_examples(8), toy_examples(6, offset=20), toy_examples(5, offset=70)
    state = gepa.optimize("Solve.", train, old_val, Counter(), toy_lm, 80)
    n, before = len(state.candidates), state.metric_calls
    texts = list(state.candidates)
    evaluate = Counter()
    state = gepa.optimize("Solve.", train, new_val, evaluate, toy_lm, 2 * n * len(new_val), state=state)
    assert state.candidates[:n] == texts
    assert state.valset_ids == [gepa.example_id(ex) for ex in new_val]
    fresh = Counter()
    for i in range(n):
        assert state.val_scores[i] == [s for s, _, _ in fresh(texts[i], new_val)]
    assert state.metric_calls - before == evaluate.seen >= n * len(new_val)
    assert_valid(state)


def test_changed_valset_with_small_budget_keeps_the_seed_and_the_best():
    train, old_val, new_val = toy_examples(8), toy_examples(6, offset=20), toy_examples(5, offset=70)
    state = gepa.optimize("Solve.", train, old_val, Counter(), toy_lm, 80)
    before_calls, best_text = state.metric_calls, state.candidates[state.best]
    assert len(state.candidates) > 2 and best_text != "Solve."
    evaluate = Counter()
    state = gepa.optimize("Solve.", train, new_val, evaluate, toy_lm, 2 * len(new_val), state=state)
    # the seed is the baseline (in P²O: the original prompt) and survives even though it scores worst
    assert state.candidates == ["Solve.", best_text] and state.parents == [[], [0]]
    assert evaluate.seen == 2 * len(new_val) == state.metric_calls - before_calls
    state = gepa.optimize("Solve.", train, old_val, Counter(), toy_lm, len(old_val), state=state)
    assert state.candidates == ["Solve."]  # room for one: the baseline
    with pytest.raises(ValueError, match="cannot re-score"):
        gepa.optimize("Solve.", train, new_val, Counter(), toy_lm, 3, state=state)


def test_rescore_always_keeps_the_seed():
    state = gepa.State(candidates=["", "a", "b", "c"], parents=[[], [0], [0], [0]],
                       val_scores=[[0.0], [0.5], [0.7], [1.0]], valset_ids=["old"])
    gepa.rescore(state, toy_examples(2), many(Counter()), 8)  # half the budget: 2 candidates
    assert state.candidates == ["", "c"] and state.parents == [[], [0]]
    state = gepa.State(candidates=["", "a", "b", "c"], parents=[[], [0], [0], [0]],
                       val_scores=[[0.0], [0.5], [0.7], [1.0]], valset_ids=["old"])
    gepa.rescore(state, toy_examples(2), many(Counter()), 12)  # 3
    assert state.candidates == ["", "b", "c"]


def many(evaluate):
    return lambda jobs: [evaluate(p, b) for p, b in jobs]


def test_rescore_keeps_pareto_front_members_before_higher_means():
    # a is best on one instance (on the front) with the lowest mean; b is dominated by c
    state = gepa.State(candidates=["", "a", "b", "c"], parents=[[], [0], [0], [0]],
                       val_scores=[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.6, 0.6], [0.0, 0.7, 0.7]],
                       valset_ids=["x", "y", "z"])
    gepa.rescore(state, toy_examples(2), many(Counter()), 12)  # room for 3
    assert state.candidates == ["", "a", "c"]


def test_rescore_without_reflection_keeps_every_seed_that_fits():
    """lm=None: nothing will evolve, so re-scoring may spend the whole budget instead of half of it
    (P²O's demo: budget 80, 16 hard problems, 4 seeds -> all 4 kept for 64 calls)."""
    seeds = ["", "tA", "tB", "tC"]
    old_val, new_val = toy_examples(16, offset=0), toy_examples(16, offset=40)
    state = gepa.optimize(seeds, old_val, old_val, Counter(), None, 80)
    evaluate = Counter()
    state = gepa.optimize(seeds, new_val, new_val, evaluate, None, 80, state=state)
    assert state.candidates == seeds and evaluate.seen == 64
    # with a reflector half of the budget is kept for evolution: 40 // 16 = 2 candidates
    state = gepa.optimize(seeds, old_val, old_val, Counter(), None, 80)
    state = gepa.optimize(seeds, new_val, new_val, Counter(), toy_lm, 0 + 2 * 16 + 16, state=state)
    assert len(state.candidates) == 2 and state.candidates[0] == ""


def test_rescore_passes_parent_links_to_kept_ancestors():
    state = gepa.State(candidates=["s", "a", "b", "c"], parents=[[], [0], [1], [2]],
                       val_scores=[[0.9], [0.1], [0.2], [1.0]], valset_ids=["old"])
    evaluate = Counter()
    gepa.rescore(state, toy_examples(2), many(evaluate), 8)  # room for 8 // 2 // 2 = 2 candidates
    assert state.candidates == ["s", "c"] and state.parents == [[], [0]]
    assert evaluate.seen == state.metric_calls == 4


def test_rescore_with_known_scores_answers_only_what_is_new():
    """known_scores: with the old valset's (state.scored()), scores on examples the old and new valsets
    share are kept; with the caller's own record, scores of examples that left the valset and came back
    too; only the rest is answered, by every kept candidate; nothing new costs no call at all."""
    seeds = ["", "[a]", "[b]"]
    old_val, new_val = toy_examples(4), toy_examples(4, offset=2)  # ids 0-3, then 2-5: 2 shared, 2 new
    state = gepa.optimize(seeds, old_val, old_val, Counter(), None, 80)
    kept = {c: dict(zip(state.valset_ids, row)) for c, row in zip(state.candidates, state.val_scores)}
    state.val_scores[1][2] = 0.25  # a score only the old state knows: it must be kept, not re-measured
    asked = []
    evaluate = Counter()
    spy = lambda jobs: asked.extend((p, [ex["id"] for ex in b]) for p, b in jobs) or [evaluate(p, b) for p, b in jobs]
    before = state.metric_calls
    state = gepa.optimize(seeds, new_val, new_val, Counter(), None, 80, state=state, evaluate_many=spy,
                          known_scores=state.scored())
    assert asked == [(c, [4, 5]) for c in seeds] and state.metric_calls - before == evaluate.seen == 6
    assert state.valset_ids == [gepa.example_id(ex) for ex in new_val]
    fresh = Counter()
    for c, row in zip(state.candidates, state.val_scores):
        want = [kept[c][gepa.example_id(ex)] for ex in new_val[:2]] + [s for s, _, _ in fresh(c, new_val[2:])]
        assert row == ([0.25] + want[1:] if c == "[a]" else want)
    asked.clear()
    known = row_of(state, "[a]")
    state = gepa.optimize(seeds, new_val[1:], new_val[1:], Counter(), None, 80, state=state, evaluate_many=spy,
                          known_scores=state.scored())
    assert asked == [] and row_of(state, "[a]") == known[1:]  # nothing new: no metric call
    # ids 0-1 left the valset two calls ago: the caller's own record of one of them saves its answers;
    # the old valset's scores count only as far as the caller passes them on (none here)
    back = {(c, gepa.example_id(ex)): 0.5 for c in seeds for ex in old_val[:1]}
    state = gepa.optimize(seeds, old_val[:2], old_val[:2], Counter(), None, 80, state=state, evaluate_many=spy,
                          known_scores=back)
    assert asked == [(c, [1]) for c in seeds] and [row[0] for row in state.val_scores] == [0.5, 0.5, 0.5]
    # without known scores every candidate answers the whole new valset again
    asked.clear()
    state = gepa.optimize(seeds, old_val, old_val, Counter(), None, 80, state=state, evaluate_many=spy)
    assert asked == [(c, [0, 1, 2, 3]) for c in seeds]


def row_of(state, text):
    return state.val_scores[state.candidates.index(text)]


def test_example_ids_use_id_or_a_stable_hash():
    assert gepa.example_id({"id": 3, "q": "x"}) == "id:3"
    a, b = gepa.example_id({"q": "x", "a": 1}), gepa.example_id({"a": 1, "q": "x"})
    assert a == b and a != gepa.example_id({"q": "y", "a": 1})


# ---------------------------------------------------------------------------------------------
# Merge


def test_merge_text_three_way():
    assert gepa.merge_text("A", "A\n\nB", "A\n\nC") == "A\n\nB\n\nC"
    assert gepa.merge_text("A\n\nX", "A\n\nX\n\nB", "A\n\nC") == "A\n\nB\n\nC"  # b removed X
    assert gepa.merge_text("A", "A\n\nB", "A") is None  # nothing new


def test_merge_run_adds_a_two_parent_candidate_and_counts_exactly():
    examples = gepa.demo_examples()
    random.Random(0).shuffle(examples)
    evaluate = Counter()

    def counted(prompt, batch):
        evaluate.seen += len(batch)
        return gepa.demo_evaluate(prompt, batch)
    with pytest.warns(RuntimeWarning):
        state = gepa.optimize("Transform the word as asked.", examples[:8], examples[8:], counted,
                              gepa.demo_lm, 150, merge=True)
    merged = [i for i, ps in enumerate(state.parents) if len(ps) == 2]
    assert merged and state.metric_calls == evaluate.seen <= 150
    assert all(gepa.text_hash(state.candidates[k]) in state.tried_merges for k in merged)
    i = merged[0]
    a, b = state.parents[i]
    assert gepa.ancestors(state.parents, a) & gepa.ancestors(state.parents, b)
    assert state.val_scores[i] == [s for s, _, _ in gepa.demo_evaluate(state.candidates[i], examples[8:])]


# ---------------------------------------------------------------------------------------------
# P²O helpers


def test_greedy_cover():
    scores = [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert gepa.greedy_cover(scores) == [1, 2]
    assert gepa.greedy_cover(scores, k=1) == [1]
    assert gepa.greedy_cover([[0, 0.5], [0, 0]]) == []
    assert gepa.greedy_cover([[1, 0, 0.0], [1, 0, 0.5]]) == [1]  # tie on coverage: higher mean
    assert gepa.greedy_cover([[1, 0], [1, 0]]) == [0]  # full tie: lower index


def test_template_weights():
    scores = [[1, 0, 0], [1, 1, 0], [0, 0, 0.5]]
    rows = gepa.template_weights(scores, [0, 1, 2])
    close = lambda got, want: all(g == pytest.approx(w) for g, w in zip(got, want)) and len(got) == len(want)
    assert close(rows, [[1 / 3, 2 / 3, 0], [0, 2 / 3, 0], [1 / 3, 2 / 3, 1 / 6]])
    assert close(gepa.template_weights(scores, [2, 0]), [[0, 1 / 3], [1 / 6, 1 / 3], [1 / 6, 1 / 3]])
    assert gepa.template_weights([[0, 0], [0, 0]], [0, 1]) == [[1.0, 1.0], [1.0, 1.0]]
    with pytest.raises(ValueError):
        gepa.template_weights(scores, [])


def test_draw_template():
    rng = random.Random(3)
    draws = [gepa.draw_template([1.0, 3.0, 0.0], rng) for _ in range(4000)]
    assert draws.count(2) == 0 and abs(draws.count(1) / 4000 - 0.75) < 0.03
    assert {gepa.draw_template([0.0, 0.0], rng) for _ in range(100)} == {0, 1}
    with pytest.raises(ValueError):
        gepa.draw_template([], rng)


# ---------------------------------------------------------------------------------------------
# OpenAILM against a stub server on 127.0.0.1


class Stub:
    """A chat-completions server that answers from a script of (status, body, delay) and records requests."""

    def __init__(self, script):
        self.script, self.requests = list(script), []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append((self.path, dict(self.headers), body))
                status, reply, delay = stub.script.pop(0) if len(stub.script) > 1 else stub.script[0]
                time.sleep(delay)
                data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def chat(content):
    return {"choices": [{"message": {"role": "assistant", "content": content}}]}


@pytest.fixture
def stub():
    servers = []

    def make(*script):
        servers.append(Stub(script))
        return servers[-1]
    yield make
    for s in servers:
        s.close()


def test_openai_lm_posts_a_chat_completion(stub):
    server = stub((200, chat("```\nnew\n```"), 0))
    lm = gepa.OpenAILM(server.base_url + "/", "tiny", api_key="sk-test", max_tokens=77, temperature=0.2)
    assert lm("hello") == "```\nnew\n```"
    path, headers, body = server.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-test"
    assert body == {"model": "tiny", "messages": [{"role": "user", "content": "hello"}],
                    "max_tokens": 77, "temperature": 0.2}


def test_openai_lm_retries_transient_errors_then_succeeds(stub):
    server = stub((500, {"error": {"message": "boom"}}, 0), (429, {"error": {"message": "slow down"}}, 0),
                  (200, chat("ok"), 0))
    assert gepa.OpenAILM(server.base_url, "m", retries=3, backoff=0.01)("hi") == "ok"
    assert len(server.requests) == 3


def test_openai_lm_gives_up_with_a_clear_error(stub):
    server = stub((503, {"error": {"message": "loading"}}, 0))
    lm = gepa.OpenAILM(server.base_url, "m", retries=2, backoff=0.01)
    with pytest.raises(RuntimeError, match=re.escape(server.base_url + "/chat/completions")) as info:
        lm("hi")
    assert "failed 3 times" in str(info.value) and "loading" in str(info.value)
    assert len(server.requests) == 3


def test_openai_lm_client_error_raises_at_once_with_server_message(stub):
    server = stub((404, {"error": {"message": "model 'nope' does not exist"}}, 0))
    with pytest.raises(RuntimeError, match="HTTP 404: model 'nope' does not exist"):
        gepa.OpenAILM(server.base_url, "nope", retries=3, backoff=0.01)("hi")
    assert len(server.requests) == 1


def test_openai_lm_timeout_and_refused_connection_are_retried(stub):
    server = stub((200, chat("late"), 0.6))
    with pytest.raises(RuntimeError, match="failed 2 times"):
        gepa.OpenAILM(server.base_url, "m", timeout=0.2, retries=1, backoff=0.01)("hi")
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RuntimeError, match=f"127.0.0.1:{port}.*server is running"):
        gepa.OpenAILM(f"http://127.0.0.1:{port}/v1", "m", retries=1, backoff=0.01)("hi")


def test_openai_lm_rejects_bad_replies_and_urls(stub):
    server = stub((200, "<html>not json</html>", 0))
    with pytest.raises(RuntimeError, match="not an OpenAI chat completion"):
        gepa.OpenAILM(server.base_url, "m")("hi")
    with pytest.raises(ValueError, match="http://"):
        gepa.OpenAILM("127.0.0.1:8000/v1", "m")


def test_optimize_with_openai_lm_stub(stub):
    server = stub((500, "", 0), (200, chat("Try this:\n```\nSolve. [a] [b] [c] [d] [e] [f]\n```"), 0))
    lm = gepa.OpenAILM(server.base_url, "m", backoff=0.01)
    state = gepa.optimize("Solve.", toy_examples(6), toy_examples(6), Counter(), lm, 40)
    assert state.candidates[state.best] == "Solve. [a] [b] [c] [d] [e] [f]"
    assert "needs [" in server.requests[-1][2]["messages"][0]["content"]


def test_optimize_survives_a_dead_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lm = gepa.OpenAILM(f"http://127.0.0.1:{port}/v1", "m", retries=1, backoff=0.001)
    with pytest.warns(RuntimeWarning) as caught:
        state = gepa.optimize("Solve.", toy_examples(6), toy_examples(6), Counter(), lm, 1000)
    assert f"127.0.0.1:{port}" in str(caught[0].message) and "stopped after" in str(caught[-1].message)
    assert state.candidates == ["Solve."] and state.reflection_failures == gepa.MAX_REFLECTION_FAILURES


# ---------------------------------------------------------------------------------------------
# The file alone


def test_works_copied_alone(tmp_path):
    shutil.copy(ROOT / "gepa.py", tmp_path / "gepa.py")
    run = lambda *args: subprocess.run([sys.executable, "-S", *args], cwd=tmp_path,
                                       capture_output=True, text=True, timeout=60)
    # -S: no site-packages at all, so any non-stdlib import would fail
    demo = run("gepa.py", "--demo")
    assert demo.returncode == 0, demo.stderr
    counted, saw = re.search(r"state counted (\d+), evaluate saw (\d+)", demo.stdout).groups()
    assert counted == saw and int(saw) > 0
    assert "front [" in demo.stdout and re.search(r"candidate [1-9]", demo.stdout)
    helped = run("gepa.py", "--help")
    assert helped.returncode == 0 and "--demo" in helped.stdout
    bare = run("gepa.py")
    assert bare.returncode == 2 and "--demo" in bare.stderr
    small = run("gepa.py", "--demo", "--budget", "3")
    assert small.returncode == 2 and "cannot score the seed" in small.stderr
    imported = run("-c", "import sys, gepa; print(sorted(m for m in sys.modules if m.split('.')[0] "
                         "not in sys.stdlib_module_names and m not in ('gepa', '__main__')))")
    assert imported.returncode == 0 and imported.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# P²O paper's recipe: k parents per iteration, batched answers, epoch-walked minibatches, seeds


def test_request_follows_gepa_structure():
    records = [{"input": "what is 2 # 3", "output": "6", "feedback": "wrong; the correct answer is 5"}]
    seen = []
    gepa.reflect("Be careful.", records, lambda text: seen.append(text) or "```\nX\n```")
    text = seen[0]
    order = [text.index(part) for part in ("Be careful.", "## Input", "what is 2 # 3", "## Assistant's output",
                                           "## Feedback", "correct answer is 5", "kind of task", "fact, rule",
                                           "strategy", "``` fences")]
    assert order == sorted(order)


def test_select_parents_draws_distinct_front_members():
    scores = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]]  # 3 is on no front
    rng = random.Random(0)
    for _ in range(50):
        got = gepa.select_parents(scores, 2, rng)
        assert len(got) == 2 == len(set(got)) and 3 not in got
    assert sorted(gepa.select_parents(scores, 16, rng)) == [0, 1, 2]
    firsts = [gepa.select_parents(scores, 1, rng)[0] for _ in range(3000)]
    assert abs(firsts.count(2) / 3000 - 0.5) < 0.05  # proportional to instances won


class Batched(Counter):
    """Counter with an evaluate_many that records how many jobs each call carried."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def many(self, jobs):
        self.calls.append(len(jobs))
        return [self(p, b) for p, b in jobs]


def test_k_parents_per_iteration_with_one_batched_call_per_phase():
    val = toy_examples(6, offset=100)
    # four seeds, each best on its own tag: a front of four
    seeds = ["Solve. [a]", "Solve. [b]", "Solve. [c]", "Solve. [d]"]
    ev = Batched()
    state = gepa.optimize(seeds, toy_examples(12), val, ev, toy_lm, 4 * 6 + 4 * (2 * 3 + 6),
                          parents_per_iteration=4, evaluate_many=ev.many)
    assert state.iterations == 1 and state.metric_calls == ev.seen
    assert ev.calls[0] == 4                  # the seeds, scored together
    assert ev.calls[1] == 4 and ev.calls[2] == 4  # 4 parents' minibatches, then 4 children's
    assert len(state.candidates) - 4 == ev.calls[3] >= 1  # accepted children scored on the valset at once
    assert {p for ps in state.parents[4:] for p in ps} <= {0, 1, 2, 3}
    # k is cut to what the budget covers: a budget for two parents gets two
    ev2 = Batched()
    gepa.optimize(seeds, toy_examples(12), val, ev2, toy_lm, 4 * 6 + 2 * (2 * 3 + 6),
                  parents_per_iteration=4, evaluate_many=ev2.many)
    assert ev2.calls[1] == 2


def test_minibatches_walk_a_shuffled_trainset_epoch_by_epoch():
    train = toy_examples(9)
    shown = []

    def record(text):
        shown.extend(re.findall(r"## Input\ntask (\d+)", text))
        return "no fence"
    with pytest.warns(RuntimeWarning):
        gepa.optimize("Solve.", train, toy_examples(2, offset=50), Counter(), record, 10_000, minibatch_size=3)
    # 5 failed reflections in a row end the call: 15 examples shown, the first 9 are one whole epoch
    assert len(shown) == 15 and sorted(shown[:9]) == [str(i) for i in range(9)]
    assert len(set(shown[9:12])) == 3 and shown[:9] != [str(i) for i in range(9)]  # shuffled
    state = gepa.State()
    walk = [gepa.next_minibatch(state, 7, 3, seed=1) for _ in range(4)]
    assert sorted(walk[0] + walk[1]) != list(range(7)) and len(set(walk[0] + walk[1])) == 6
    assert state.train_epoch == 1 and state.train_index == 6  # 7 // 3 = 2 minibatches per epoch


def test_seed_prompts_compete_and_no_reflector_scores_seeds_only():
    val = toy_examples(6, offset=100)
    ev = Counter()
    state = gepa.optimize(["", "[a] [b]", "[c]", "[a] [b]"], toy_examples(6), val, ev, None, 100)
    assert state.candidates == ["", "[a] [b]", "[c]"] and state.parents == [[], [], []]
    assert state.metric_calls == ev.seen == 3 * len(val) and state.iterations == 0
    assert gepa.greedy_cover(state.val_scores) == [1, 2]
    with pytest.raises(ValueError, match=r"3 x 6 calls"):
        gepa.optimize(["", "[a]", "[b]"], toy_examples(6), val, Counter(), None, 17)
    with pytest.raises(TypeError, match="seed_prompt"):
        gepa.optimize([], toy_examples(6), val, Counter(), None, 17)


# ---------------------------------------------------------------------------------------------
# thinking reflectors: the reasoning is never read as the instruction


@pytest.mark.parametrize("answer, expected", [
    # one fence mentioned while thinking would pair with the answer's opening fence
    ("<think>It goes between ``` fences.</think>\nHere:\n```\nReal rule.\n```", "Real rule."),
    ("So: ``` then the rule.</think>\n```\nReal rule.\n```", "Real rule."),  # the template opened <think>
    ("<think>\nA first try:\n```\nDraft rule.\n```\nbut then", None),  # cut off while thinking
])
def test_thinking_is_never_read_as_the_instruction(answer, expected):
    assert gepa.parse_instruction(answer) == expected


def test_a_reflector_that_only_thinks_is_a_failure_that_says_why():
    reply = "<think>\nLet me draft:\n```\nDraft rule.\n```\nand keep thinking"
    with pytest.warns(RuntimeWarning) as caught:
        state = gepa.optimize("Solve.", toy_examples(6), toy_examples(6), Counter(), lambda t: reply, 10_000)
    assert state.candidates == ["Solve."]
    assert state.reflection_failures == gepa.MAX_REFLECTION_FAILURES and state.unusable_reflections == 0
    assert "all reasoning (<think>)" in str(caught[0].message)


def test_openai_lm_never_returns_reasoning_content_and_says_why(stub):
    reply = {"choices": [{"message": {"role": "assistant", "content": None,
                                      "reasoning_content": "```\nThought-up rule.\n```"},
                          "finish_reason": "length"}]}
    server = stub((200, reply, 0))
    with pytest.raises(RuntimeError, match="only reasoning_content.*'length'.*max_tokens"):
        gepa.OpenAILM(server.base_url, "m", max_tokens=64)("hi")
    server = stub((200, {"choices": [{"message": {"content": ""}, "finish_reason": "stop"}]}, 0))
    with pytest.raises(RuntimeError, match="empty message: no content"):
        gepa.OpenAILM(server.base_url, "m")("hi")


def test_max_seconds_caps_the_search_and_a_hanging_server(stub):
    def slow_lm(text):
        time.sleep(0.2)
        return toy_lm(text)
    t0 = time.monotonic()
    with pytest.warns(RuntimeWarning, match="1 s time limit"):
        state = gepa.optimize("Solve.", toy_examples(6), toy_examples(6), Counter(), slow_lm, 10_000, max_seconds=1)
    assert time.monotonic() - t0 < 2 and state.iterations >= 1
    assert_valid(state)
    # a server that never answers in time: each retry is cut to what is left of the cap
    server = stub((200, chat("late"), 5))
    lm = gepa.OpenAILM(server.base_url, "m", timeout=30, retries=3, backoff=0.01)
    t0 = time.monotonic()
    with pytest.warns(RuntimeWarning, match="no answer before the time limit"):
        gepa.optimize("Solve.", toy_examples(6), toy_examples(6), Counter(), lm, 10_000, max_seconds=1)
    assert time.monotonic() - t0 < 3 and lm.deadline is None
