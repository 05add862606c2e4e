"""
gepa.py: compact GEPA (Agrawal et al. 2025, arXiv 2507.19457), reflective prompt evolution.

A reflection LM reads how a prompt did on a few training examples, with feedback, and writes a
better prompt. The child is kept only if it beats its parent on that same minibatch; a kept child is
then scored on every validation example. Parents are drawn from the Pareto front of those
per-example scores, so a prompt that is best on even one example survives instead of one average
winner. One file, standard library only: copy it into any project.

Usage, with this file on the path as `gepa`:

    def evaluate(prompt, batch):          # you supply this: one metric call per example
        results = []
        for ex in batch:
            reply = my_model(prompt + "\\n\\n" + ex["input"])
            ok = reply.strip() == ex["answer"]
            results.append((1.0 if ok else 0.0, reply, "correct" if ok else f"expected {ex['answer']}"))
        return results                   # [(score in [0, 1], output text, feedback text), ...]

    lm = gepa.OpenAILM("http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-7B-Instruct")  # or any str -> str
    state = gepa.optimize("Answer the question.", trainset, valset, evaluate, lm, max_metric_calls=400)
    print(state.candidates[state.best])
    open("gepa_state.json", "w").write(state.to_json())
    # later, up to 200 more metric calls on top of the saved run:
    state = gepa.optimize("", trainset, valset, evaluate, lm, 200,
                          state=gepa.State.from_json(open("gepa_state.json").read()))

    python gepa.py --demo      # a toy task with a scripted reflection LM: no model, no network

The contract, in short:
- Examples are dicts (anything JSON-able works). The reflector is shown example["input"] (or
  "question", "problem", "prompt"; else the whole example as JSON), so keep gold answers out of
  those fields and put what the reflector should learn into the feedback. example["id"], when
  present, identifies the example; otherwise a hash of its JSON does.
- max_metric_calls is the budget of THIS call. State.metric_calls is cumulative, so a call with a
  previous state may spend up to max_metric_calls more. An iteration only starts when the budget
  left covers its worst case (2 * minibatch + len(valset)), so the budget is never exceeded.
- An exception from evaluate (or on_candidate) is your bug and propagates. An exception from lm is
  caught: warned, counted in State.reflection_failures, and the loop goes on. A call stops after
  MAX_REFLECTION_FAILURES reflections in a row gave nothing usable, so a dead reflector cannot burn
  the whole budget.
- Resuming: the RNG of iteration k is derived from (seed, k) and State.iterations counts k, so a run
  saved and resumed with the same seed (and the budget topped up to the same total) equals an
  uninterrupted run.
- If the valset changed since the state was scored, the candidates are re-scored on the new one
  first: the seed (candidate 0, the baseline) always, then the old Pareto front, then the best by
  mean, with at most half of this call's budget (all of it when lm=None:
  nothing will evolve); those that do not fit are dropped. See rescore(). With known_scores (a
  dict of scores measured before, e.g. state.scored()) only what it does not cover is answered.
- Several seed prompts (a list) compete from the start; lm=None scores them and stops. With
  parents_per_iteration=k, each iteration mutates k distinct front candidates, and evaluate_many
  (optional) answers all their minibatches in one call. Minibatches walk the trainset in a
  shuffled order, epoch after epoch.
"""

import argparse
import hashlib
import http.client
import json
import random
import re
import sys
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import asdict, dataclass, field, fields

SOLVED = 1.0                 # score >= SOLVED counts as solved (binary rewards); an all-solved
                             # minibatch teaches nothing and is skipped
MAX_FIELD_CHARS = 3000       # cap on each input/output/feedback shown to the reflector (small local models)
MAX_REFLECTION_FAILURES = 5  # a call stops after this many reflections in a row gave nothing usable
                             # (counted per call: a later call tries again)


# ---------------------------------------------------------------------------------------------
# The state of a run: everything needed to save, inspect and resume it


@dataclass
class State:
    candidates: list = field(default_factory=list)   # prompt texts; 0 is the seed
    parents: list = field(default_factory=list)      # [] for the seed, [p] reflection, [a, b] merge
    val_scores: list = field(default_factory=list)   # val_scores[i][t]: candidate i on valset example t
    valset_ids: list = field(default_factory=list)   # which valset the scores belong to (example_id)
    metric_calls: int = 0                            # cumulative over all optimize() calls
    iterations: int = 0                              # loop passes so far; also seeds each pass's RNG
    reflection_failures: int = 0                     # the reflection LM raised
    unusable_reflections: int = 0                    # it answered, but gave no new prompt
    merges_due: int = 0                              # merge attempts earned by accepted children
    tried_merges: list = field(default_factory=list) # hashes of merged texts already evaluated
    train_epoch: int = 0                             # minibatches walk the trainset in a shuffled
    train_index: int = 0                             # order, epoch after epoch: where the walk is

    @property
    def best(self):
        """Index of the candidate with the highest mean valset score (ties: earliest); None if empty."""
        if not self.candidates:
            return None
        return max(range(len(self.candidates)), key=lambda i: mean(self.val_scores[i]))

    def to_json(self):
        data = asdict(self)
        data["best"] = self.best  # for readers of the file; recomputed on load
        return json.dumps(data)

    def scored(self):
        """{(prompt, example_id): score} of every candidate on every valset example (see known_scores)."""
        return {(c, e): s for c, row in zip(self.candidates, self.val_scores) for e, s in zip(self.valset_ids, row)}

    @classmethod
    def from_json(cls, text):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"GEPA state is not valid JSON ({e}); "
                             "was it written by State.to_json()?") from None
        if not isinstance(data, dict):
            raise ValueError("GEPA state must be a JSON object written by State.to_json()")
        data.pop("best", None)
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"GEPA state has unknown keys {sorted(unknown)}; "
                             "was it written by State.to_json()?")
        state = cls(**data)
        n = len(state.candidates)
        if len(state.parents) != n or len(state.val_scores) != n or \
                any(len(row) != len(state.valset_ids) for row in state.val_scores):
            raise ValueError("GEPA state is inconsistent: candidates, parents and val_scores rows must "
                             "have one entry per candidate, and each row one score per valset id")
        return state


def mean(xs):
    return sum(xs) / len(xs) if xs else 0.0


def example_id(example):
    """A stable identity for an example: its 'id' when it has one, else a hash of its JSON."""
    if isinstance(example, dict) and "id" in example:
        return f"id:{example['id']}"
    blob = json.dumps(example, sort_keys=True, default=str, ensure_ascii=False)
    return "sha1:" + hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


def example_text(example):
    """What the reflector sees of an example: its input field, not its gold answer."""
    if isinstance(example, dict):
        for key in ("input", "question", "problem", "prompt"):
            if key in example:
                return str(example[key])
        return json.dumps(example, ensure_ascii=False, default=str)
    return str(example)


# ---------------------------------------------------------------------------------------------
# The Pareto front over per-instance scores, and parent selection from it


def column_best(scores):
    return [max(col) for col in zip(*scores)] if scores else []


def dominates(a, b):
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def pareto_front(scores):
    """Candidates (rows) that are best, ties included, on at least one instance (column) and are
    not dominated by another row. Rows with identical scores do not dominate each other."""
    best = column_best(scores)
    tops = [i for i, row in enumerate(scores) if any(s == b for s, b in zip(row, best))]
    return [i for i in tops if not any(dominates(scores[j], scores[i]) for j in tops if j != i)]


def select_parents(scores, k, rng):
    """Up to k distinct front candidates, each draw in proportion to the instances it is best on
    (weighted sampling without replacement); all of the front when it has at most k."""
    front = pareto_front(scores)
    if not front:
        raise ValueError("select_parents needs at least one candidate scored on at least one instance")
    best = column_best(scores)
    wins = {i: sum(s == b for s, b in zip(scores[i], best)) for i in front}
    chosen = []
    while front and len(chosen) < k:
        pick = rng.choices(front, weights=[wins[i] for i in front])[0]
        chosen.append(pick)
        front.remove(pick)
    return chosen


# ---------------------------------------------------------------------------------------------
# Reflection: show the LM the current prompt and what happened with it, parse a new prompt back


def truncate(text, cap=MAX_FIELD_CHARS):
    """Keep the head and the tail (where final answers live) of a long text."""
    if len(text) <= cap:
        return text
    half = cap // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"


def reflection_request(prompt, records):
    """The request GEPA sends its reflection LM: the current instruction, then each example's input,
    output and feedback, then what a new instruction should contain, answered inside ``` fences."""
    shown = prompt.strip() or "(empty: the assistant was given no instruction)"
    lines = [
        "An assistant reads the instruction below before each task it is given:",
        "```",
        shown,
        "```",
        "",
        f"Here are {len(records)} tasks it attempted with that instruction. For each you see the "
        "task's input, the assistant's output, and feedback on the output.",
    ]
    for k, r in enumerate(records, 1):
        lines += ["", f"# Example {k}", "## Input", truncate(str(r["input"])),
                  "", "## Assistant's output", truncate(str(r["output"])),
                  "", "## Feedback", truncate(str(r["feedback"]))]
        if "score" in r:
            lines.append(f"Score: {r['score']}")
    lines += [
        "",
        "Write a new instruction for the assistant.",
        "- Read the inputs closely and work out what kind of task this is and what form its answers "
        "must take.",
        "- Use the feedback: see where the outputs went wrong and what the correct answers were. The "
        "assistant will not see these examples again, so spell out in the instruction every fact, rule, "
        "definition or convention specific to this task that it needed and may not know by itself.",
        "- Where some outputs succeeded, say what they did; turn it into a strategy that carries over "
        "to new tasks of this kind, not answers to these examples.",
        "",
        "Put the new instruction between ``` fences.",
    ]
    return "\n".join(lines)


FENCED = re.compile(r"```([^\n`]*)\n(.*?)```", re.DOTALL)
THINK_OPEN, THINK_CLOSE = re.compile(r"<think>", re.I), re.compile(r"</think>", re.I)


def without_thinking(answer):
    """What a thinking model said after its reasoning: the text after the last </think> (a reply may
    start inside the block when the chat template opened it), cut at a <think> never closed (the
    model ran out of tokens while thinking). Fences inside the reasoning are drafts, not answers."""
    closes = list(THINK_CLOSE.finditer(answer))
    if closes:
        answer = answer[closes[-1].end():]
    opened = THINK_OPEN.search(answer)
    return answer[:opened.start()] if opened else answer


def parse_instruction(answer):
    """The text of the last ``` block in answer after any <think> reasoning, language tag dropped;
    None if there is none."""
    blocks = FENCED.findall(without_thinking(answer))
    if not blocks:
        return None
    head, body = blocks[-1]
    head = head.strip()
    if head and not re.fullmatch(r"[\w.+-]+", head):
        body = head + "\n" + body  # words on the fence line are content, not a language tag
    return body.strip() or None


def reflect(prompt, records, lm):
    """Ask lm for a better prompt. records: dicts with 'input', 'output', 'feedback' (and optionally
    'score'); long fields are truncated. Returns the new prompt, or None when the answer holds no
    ``` block, an empty one, or the current prompt unchanged. An exception from lm propagates; an
    answer that is all reasoning (<think> with nothing after it) raises ValueError saying so."""
    answer = lm(reflection_request(prompt, records))
    if isinstance(answer, str) and answer.strip() and not without_thinking(answer).strip():
        raise ValueError("the answer was all reasoning (<think>) with nothing after it: raise the "
                         "reflector's token limit, or turn its thinking off")
    child = parse_instruction(answer) if isinstance(answer, str) else None
    if not child or child == prompt.strip():
        return None
    return child


# ---------------------------------------------------------------------------------------------
# Merge: two front candidates that share an ancestor, combined paragraph by paragraph


def ancestors(parents, i):
    seen, todo = set(), list(parents[i])
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo += parents[p]
    return seen


def paragraphs(text):
    return [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]


def merge_text(ancestor, a, b):
    """Three-way merge at paragraph level: keep what both kept, add what either added, drop what
    either removed from the common ancestor. None when the result is just a or b again."""
    base, pa, pb = paragraphs(ancestor), paragraphs(a), paragraphs(b)
    merged = [p for p in pa if p in pb or p not in base]
    merged += [p for p in pb if p not in base and p not in pa]
    if merged == pa or merged == pb or not merged:
        return None
    return "\n\n".join(merged)


def text_hash(text):
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def find_merge(state, rng):
    """A random pair of front candidates, neither an ancestor of the other, with a common ancestor
    whose merge is new. Returns (i, j, merged text) or None."""
    front = pareto_front(state.val_scores)
    pairs = [(i, j) for i in front for j in front if i < j]
    rng.shuffle(pairs)
    for i, j in pairs:
        ai, aj = ancestors(state.parents, i), ancestors(state.parents, j)
        common = ai & aj
        if i in aj or j in ai or not common:
            continue
        # parents precede children, so the newest common ancestor is a nearest one
        text = merge_text(state.candidates[max(common)], state.candidates[i], state.candidates[j])
        if text is None or text in state.candidates or text_hash(text) in state.tried_merges:
            continue
        return i, j, text
    return None


# ---------------------------------------------------------------------------------------------
# For P²O: which templates to use, and how to draw one per rollout


def greedy_cover(scores, k=None):
    """Candidates that together solve (score >= SOLVED) every instance any candidate solves: pick
    the one covering most not-yet-covered instances, ties to the higher mean, then the lower index;
    stop when all are covered or k are picked. [] when no candidate solves anything."""
    solved = [{t for t, s in enumerate(row) if s >= SOLVED} for row in scores]
    todo = set().union(*solved)
    chosen = []
    while todo and (k is None or len(chosen) < k):
        c = max((c for c in range(len(scores)) if c not in chosen),
                key=lambda c: (len(solved[c] & todo), mean(scores[c]), -c))
        chosen.append(c)
        todo -= solved[c]
    return chosen


def template_weights(scores, subset):
    """Per instance (column of scores), a list of weights aligned with subset (candidate indices):
    rows[t][j] is the weight of candidate subset[j] for instance t. A weight is the candidate's mean
    score over all instances, restricted to the candidates in subset that solved t (score >= SOLVED);
    when none did, all of subset by mean; when all weights are zero, uniform. For an example outside
    the valset use [mean(scores[c]) for c in subset]. Draw with subset[draw_template(rows[t], rng)]."""
    if not subset:
        raise ValueError("template_weights needs a non-empty subset of candidate indices")
    means = [mean(scores[c]) for c in subset]
    rows = []
    for t in range(len(scores[subset[0]])):
        solvers = [scores[c][t] >= SOLVED for c in subset]
        row = [m if ok else 0.0 for m, ok in zip(means, solvers)] if any(solvers) else list(means)
        rows.append(row if any(w > 0 for w in row) else [1.0] * len(subset))
    return rows


def draw_template(weights_row, rng):
    """A position in weights_row (so an index into subset), drawn in proportion to the weights."""
    if not weights_row:
        raise ValueError("draw_template needs at least one weight")
    if not any(w > 0 for w in weights_row):
        return rng.randrange(len(weights_row))
    return rng.choices(range(len(weights_row)), weights=weights_row)[0]


# ---------------------------------------------------------------------------------------------
# The loop


def check_results(results, batch, state):
    """Count one metric call per example and check what the caller's evaluate returned."""
    results = list(results)
    state.metric_calls += len(batch)
    if len(results) != len(batch):
        raise ValueError(f"evaluate returned {len(results)} results for {len(batch)} examples; "
                         "it must return one (score, output, feedback) per example")
    clean = []
    for k, r in enumerate(results):
        try:
            score, output, feedback = r
            score = float(score)
        except (TypeError, ValueError):
            raise ValueError(f"evaluate's result {k} is {r!r}; expected (score, output, feedback)") from None
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"evaluate's result {k} has score {score}; scores must lie in [0, 1]")
        clean.append((score, str(output), str(feedback)))
    return clean


def run_evaluate(evaluate, prompt, batch, state):
    return check_results(evaluate(prompt, batch), batch, state)


def run_evaluate_many(evaluate_many, jobs, state):
    """jobs: [(prompt, batch)]. One call to the caller's evaluate_many for all of them, so a caller
    with a batched model answers every (prompt, example) pair in one go."""
    if not jobs:
        return []
    results = list(evaluate_many(jobs))
    if len(results) != len(jobs):
        raise ValueError(f"evaluate_many returned {len(results)} result lists for {len(jobs)} jobs")
    return [check_results(r, batch, state) for r, (_, batch) in zip(results, jobs)]


def scores_of(evaluate, prompt, batch, state):
    return [s for s, _, _ in run_evaluate(evaluate, prompt, batch, state)]


def add_candidate(state, prompt, parents, scores, on_candidate):
    state.candidates.append(prompt)
    state.parents.append(list(parents))
    state.val_scores.append(list(scores))
    if on_candidate is not None:
        on_candidate(state, len(state.candidates) - 1)


def rescore(state, valset, evaluate_many, max_metric_calls, reserve=0.5, known=None):
    """Score the state's candidates on a new valset: the seed (candidate 0, the baseline every
    search is measured against) always, then the members of the old scores' Pareto front (a
    candidate best on a few instances is what the front is for), then the rest, each by old mean. It spends at
    most (1 - reserve) of max_metric_calls, so the search keeps room to evolve (reserve=0 when
    nothing will evolve: lm=None), and at least enough for the seed and one more. Candidates that do
    not fit are dropped; parent links to them pass on to their kept ancestors. All answers go to
    evaluate_many in one call. known: {(prompt, example_id): score} measured before (State.scored()
    gives the old valset's); with it a candidate answers only the examples it has no known score for,
    and one with nothing left to answer costs no metric call."""
    ids = [example_id(ex) for ex in valset]
    todo = [[t for t, e in enumerate(ids) if known is None or (c, e) not in known] for c in state.candidates]
    if len(todo[0]) > max_metric_calls:
        raise ValueError(f"max_metric_calls={max_metric_calls} cannot re-score even one candidate "
                         f"on the new valset of {len(todo[0])} examples; raise the budget or shrink the valset")
    front = set(pareto_front(state.val_scores))
    rank = lambda i: (i not in front, -mean(state.val_scores[i]))
    keep, spent, allowance = [0], len(todo[0]), int(max_metric_calls * (1 - reserve))
    for i in sorted(range(1, len(state.candidates)), key=rank):  # (stable)
        # within the allowance, and the seed and one more whenever the whole budget holds them
        if spent + len(todo[i]) <= max(allowance, max_metric_calls if len(keep) == 1 else 0):
            keep.append(i)
            spent += len(todo[i])
    keep.sort()
    new_index = {old: new for new, old in enumerate(keep)}

    def kept_parents(p):
        return [new_index[p]] if p in new_index else [q for pp in state.parents[p] for q in kept_parents(pp)]

    parents = [sorted({q for p in state.parents[i] for q in kept_parents(p)}) for i in keep]
    candidates = [state.candidates[i] for i in keep]
    jobs = [(state.candidates[i], [valset[t] for t in todo[i]]) for i in keep if todo[i]]
    answered = iter(run_evaluate_many(evaluate_many, jobs, state))
    scores = []
    for i in keep:
        fresh = iter([s for s, _, _ in next(answered)] if todo[i] else [])
        c = state.candidates[i]
        scores.append([next(fresh) if known is None or (c, e) not in known else known[(c, e)] for e in ids])
    state.val_scores = scores
    state.candidates, state.parents = candidates, parents
    state.valset_ids = ids


def next_minibatch(state, n_train, size, seed):
    """The next `size` trainset positions in a seeded shuffled order, epoch after epoch (every example
    is shown once before any is shown twice); the position lives in the state, so a resumed run walks
    on. A new epoch starts when the current one has fewer than `size` examples left."""
    if state.train_index + size > n_train:
        state.train_epoch, state.train_index = state.train_epoch + 1, 0
    order = list(range(n_train))
    random.Random(f"gepa-epoch:{seed}:{state.train_epoch}").shuffle(order)
    picks = order[state.train_index:state.train_index + size]
    state.train_index += size
    return picks


def reflective_round(state, trainset, valset, evaluate_many, lm, minibatch, k, seed, rng, on_candidate,
                     deadline=None):
    """One GEPA iteration with k distinct parents: each parent answers its own minibatch, the
    reflection LM proposes one child per parent, and a child is kept only if it does strictly better
    than its parent on that minibatch; kept children are then scored on the whole valset. The
    answers of all parents, then of all children, then of all kept children go to evaluate_many in
    one call each. Returns one outcome per parent: 'skipped', 'failed', 'rejected' or 'accepted'.
    Past the deadline (time.monotonic()) no further reflection starts: those parents are 'skipped'."""
    parents = select_parents(state.val_scores, k, rng)
    batches = [[trainset[i] for i in next_minibatch(state, len(trainset), minibatch, seed)] for _ in parents]
    befores = run_evaluate_many(evaluate_many, [(state.candidates[p], b) for p, b in zip(parents, batches)], state)
    outcomes, proposals = [], []
    for parent, batch, before in zip(parents, batches, befores):
        if all(s >= SOLVED for s, _, _ in before) or (deadline is not None and time.monotonic() >= deadline):
            outcomes.append("skipped")  # nothing to learn from a perfect minibatch, or no time left
            continue
        prompt = state.candidates[parent]
        records = [{"input": example_text(ex), "output": out, "feedback": fb, "score": s}
                   for ex, (s, out, fb) in zip(batch, before)]
        try:
            child = reflect(prompt, records, lm)
        except Exception as e:  # a flaky reflector must not stop the caller's training
            state.reflection_failures += 1
            warnings.warn(f"gepa: the reflection LM failed at iteration {state.iterations} "
                          f"({type(e).__name__}: {e}); keeping the current candidates", RuntimeWarning)
            outcomes.append("failed")
            continue
        if child is None or child in state.candidates or child in [c for _, c, _, _ in proposals]:
            state.unusable_reflections += 1
            warnings.warn(f"gepa: the reflection LM gave no new prompt at iteration {state.iterations} "
                          "(no ``` block, an empty one, or a prompt already tried)", RuntimeWarning)
            outcomes.append("failed")
            continue
        outcomes.append(len(proposals))  # decided below, once the children have answered
        proposals.append((parent, child, batch, before))
    afters = run_evaluate_many(evaluate_many, [(child, batch) for _, child, batch, _ in proposals], state)
    # strictly better on the minibatch, or not worth a full valset pass
    better = [sum(s for s, _, _ in after) > sum(s for s, _, _ in before)
              for (_, _, _, before), after in zip(proposals, afters)]
    kept = [(parent, child) for (parent, child, _, _), ok in zip(proposals, better) if ok]
    vals = run_evaluate_many(evaluate_many, [(child, valset) for _, child in kept], state)
    for (parent, child), val in zip(kept, vals):
        add_candidate(state, child, [parent], [s for s, _, _ in val], on_candidate)
    return [o if isinstance(o, str) else "accepted" if better[o] else "rejected" for o in outcomes]


def merge_step(state, valset, evaluate, plan, size, rng, on_candidate):
    """Try a merged candidate on a few valset examples where its two parents differ; keep it if it
    matches the better parent there (as GEPA does), then score it on the rest of the valset."""
    i, j, text = plan
    state.tried_merges.append(text_hash(text))
    differ = [t for t in range(len(valset)) if state.val_scores[i][t] != state.val_scores[j][t]]
    same = [t for t in range(len(valset)) if state.val_scores[i][t] == state.val_scores[j][t]]
    picks = rng.sample(differ, min(size, len(differ)))
    picks += rng.sample(same, min(size - len(picks), len(same)))
    got = dict(zip(picks, scores_of(evaluate, text, [valset[t] for t in picks], state)))
    if sum(got.values()) < max(sum(state.val_scores[c][t] for t in picks) for c in (i, j)):
        return "rejected"
    rest = [t for t in range(len(valset)) if t not in got]
    if rest:  # the subsample is part of the valset: reuse it, do not pay for it twice
        got.update(zip(rest, scores_of(evaluate, text, [valset[t] for t in rest], state)))
    add_candidate(state, text, [i, j], [got[t] for t in range(len(valset))], on_candidate)
    return "accepted"


def check_inputs(seeds, trainset, valset, evaluate, lm, max_metric_calls, minibatch_size, parents, state):
    if not seeds or not all(isinstance(p, str) for p in seeds):
        raise TypeError("seed_prompt must be a str or a non-empty list of str")
    if not trainset or not valset:
        raise ValueError(f"trainset and valset must be non-empty "
                         f"(got {len(trainset)} and {len(valset)} examples)")
    if not callable(evaluate) or not (lm is None or callable(lm)):
        raise TypeError("evaluate and lm must be callables: evaluate(prompt, batch) and lm(text) "
                        "(lm=None: score the seeds only)")
    if not isinstance(max_metric_calls, int) or max_metric_calls < 0:
        raise ValueError(f"max_metric_calls must be an int >= 0, got {max_metric_calls!r}")
    if not isinstance(minibatch_size, int) or minibatch_size < 1:
        raise ValueError(f"minibatch_size must be an int >= 1, got {minibatch_size!r}")
    if not isinstance(parents, int) or parents < 1:
        raise ValueError(f"parents_per_iteration must be an int >= 1, got {parents!r}")
    if state is not None and not isinstance(state, State):
        raise TypeError("state must be a gepa.State (load a saved one with State.from_json)")


def optimize(seed_prompt, trainset, valset, evaluate, lm, max_metric_calls, minibatch_size=3, seed=0,
             state=None, merge=False, on_candidate=None, parents_per_iteration=1, evaluate_many=None,
             max_seconds=None, known_scores=None):
    """Run GEPA and return its State (the given state, updated in place, or a new one).

    seed_prompt: the starting prompt, or a list of starting prompts: the first is the baseline
        (candidate 0, always kept when the state is re-scored), the others compete beside it from
        the start, e.g. instructions a person wrote. Ignored when state already holds candidates.
    trainset, valset: lists of examples; minibatches for reflection walk trainset in a shuffled
        order, epoch after epoch; the Pareto front is over valset.
    evaluate(prompt, batch) -> [(score, output, feedback)]: one metric call per example.
    lm(text) -> text: the reflection LM; None scores the seeds and stops (no reflection).
    max_metric_calls: budget of THIS call; never exceeded (see the module docstring).
    seed: with state.iterations, seeds each iteration's RNG, so resuming reproduces a straight run.
    state: a State to continue; re-scored first when valset differs from the one it was scored on.
    merge: also try GEPA's merge of two front candidates with a common ancestor (one attempt per
        reflective child accepted).
    on_candidate(state, idx): called after each new candidate (the seeds included) is scored on valset.
    parents_per_iteration: k distinct front candidates are each given a minibatch and a child per
        iteration (fewer when the front is smaller or the budget left does not cover k).
    evaluate_many([(prompt, batch), ...]) -> [results of evaluate(prompt, batch), ...]: optional;
        gets every answer an iteration needs at once (all parents, then all children), so a batched
        model can answer them in one pass. Default: evaluate on each pair in turn.
    max_seconds: wall-time cap of THIS call's reflective search; no reflection starts after it, and
        an lm with a `deadline` attribute (OpenAILM) is given it, so a hanging server is cut off there
        too. The candidates found so far are kept. None: no cap.
    known_scores: {(prompt, example_id): score} measured before (state.scored() holds the old
        valset's; a caller may keep more). Re-scoring on a changed valset then answers only what it
        does not hold (see rescore): for a caller whose metric moves slowly (a policy a few steps
        further on), and who decides how long a score stays good. None: every kept candidate
        answers the whole new valset again.
    """
    trainset, valset = list(trainset), list(valset)
    seeds = [seed_prompt] if isinstance(seed_prompt, str) else list(seed_prompt or [])
    seeds = list(dict.fromkeys(seeds))  # a repeated seed would only cost budget
    check_inputs(seeds, trainset, valset, evaluate, lm, max_metric_calls, minibatch_size,
                 parents_per_iteration, state)
    if evaluate_many is None:
        evaluate_many = lambda jobs: [evaluate(p, b) for p, b in jobs]
    state = State() if state is None else state
    limit = state.metric_calls + max_metric_calls
    ids = [example_id(ex) for ex in valset]
    if not state.candidates:
        if len(seeds) * len(valset) > max_metric_calls:
            raise ValueError(f"max_metric_calls={max_metric_calls} cannot score the seed"
                             f"{'s' if len(seeds) > 1 else ''} on the {len(valset)} valset examples "
                             f"({len(seeds)} x {len(valset)} calls); raise the budget or shrink the valset")
        state.valset_ids = ids
        results = run_evaluate_many(evaluate_many, [(p, valset) for p in seeds], state)
        for p, res in zip(seeds, results):
            add_candidate(state, p, [], [s for s, _, _ in res], on_candidate)
    elif state.valset_ids != ids:
        rescore(state, valset, evaluate_many, max_metric_calls, reserve=0.5 if lm is not None else 0.0,
                known=known_scores)
    if lm is None:
        return state

    minibatch = min(minibatch_size, len(trainset))
    worst_case = 2 * minibatch + len(valset)  # parent and child on the minibatch, then the child on valset
    failures = 0
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    if hasattr(lm, "deadline"):
        lm.deadline = deadline
    while (limit - state.metric_calls >= worst_case and failures < MAX_REFLECTION_FAILURES
           and (deadline is None or time.monotonic() < deadline)):
        rng = random.Random(f"gepa:{seed}:{state.iterations}")
        state.iterations += 1
        plan = find_merge(state, rng) if merge and state.merges_due > 0 else None
        if plan is not None:
            state.merges_due -= 1
            merge_step(state, valset, evaluate, plan, min(minibatch_size, len(valset)), rng, on_candidate)
            continue
        k = min(parents_per_iteration, (limit - state.metric_calls) // worst_case)
        for outcome in reflective_round(state, trainset, valset, evaluate_many, lm, minibatch, k, seed,
                                        rng, on_candidate, deadline):
            failures = failures + 1 if outcome == "failed" else 0
            if outcome == "accepted" and merge:
                state.merges_due += 1
    if hasattr(lm, "deadline"):
        lm.deadline = None
    if failures >= MAX_REFLECTION_FAILURES:
        warnings.warn(f"gepa: stopped after {failures} reflections in a row gave nothing usable; "
                      "check the reflection LM", RuntimeWarning)
    elif deadline is not None and time.monotonic() >= deadline and limit - state.metric_calls >= worst_case:
        warnings.warn(f"gepa: stopped at the {max_seconds:g} s time limit with budget left; "
                      f"{len(state.candidates)} candidates kept", RuntimeWarning)
    return state


# ---------------------------------------------------------------------------------------------
# A reflection LM for any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, APIs)


class OpenAILM:
    """lm(text) -> text over POST {base_url}/chat/completions, urllib only.

    base_url looks like http://127.0.0.1:8000/v1. Connection errors, timeouts, HTTP 429 and 5xx are
    retried `retries` times, waiting backoff, 2 * backoff, 4 * backoff... seconds; then RuntimeError
    naming the URL. Any other HTTP error raises RuntimeError at once with the server's message."""

    def __init__(self, base_url, model, api_key=None, timeout=60, max_tokens=2048, temperature=0.7,
                 retries=3, backoff=2.0):
        if not isinstance(base_url, str) or not re.match(r"https?://", base_url):
            raise ValueError("base_url must start with http:// or https:// "
                             f"(like http://127.0.0.1:8000/v1), got {base_url!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, timeout
        self.max_tokens, self.temperature = max_tokens, temperature
        self.retries, self.backoff = retries, backoff
        self.deadline = None  # time.monotonic() after which no attempt starts (optimize's max_seconds)

    def __call__(self, text):
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": text}],
                           "max_tokens": self.max_tokens, "temperature": self.temperature}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(max(0.0, min(self.backoff * 2 ** (attempt - 1), self.time_left())))
            timeout = min(self.timeout, self.time_left())
            if timeout <= 0:
                raise RuntimeError(f"reflection LM at {self.url}: no answer before the time limit "
                                   f"(last: {last or 'no reply yet'})")
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as e:
                message = server_message(e)
                if e.code == 429 or e.code >= 500:  # busy or broken for now: worth another try
                    last = f"HTTP {e.code}: {message}"
                    continue
                raise RuntimeError(f"{self.url} answered HTTP {e.code}: {message} "
                                   f"(check the model name {self.model!r} and the API key)") from None
            except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out, DNS
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
                continue
            return self.read_reply(raw)
        raise RuntimeError(f"reflection LM at {self.url} failed {self.retries + 1} times (last: {last}); "
                           f"check that the server is running and reachable, that base_url ends in /v1, "
                           f"and that it serves model {self.model!r}")

    def time_left(self):
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def read_reply(self, raw):
        try:
            choice = json.loads(raw)["choices"][0]
            message = choice["message"]
            content = message.get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise RuntimeError(f"{self.url} sent a reply that is not an OpenAI chat completion: "
                               f"{raw[:300]!r}") from None
        if content:
            return content
        # a thinking model's reasoning is not its answer, even when the answer never came
        why = (f"only reasoning_content (the model thought until finish_reason "
               f"{choice.get('finish_reason')!r}); raise max_tokens (now {self.max_tokens}) or turn "
               "thinking off") if message.get("reasoning_content") else \
            f"no content (finish_reason {choice.get('finish_reason')!r})"
        raise RuntimeError(f"{self.url} answered with an empty message: {why}")


def server_message(error):
    """The error text an OpenAI-style server put in its HTTP error body."""
    try:
        raw = error.read().decode("utf-8", "replace")
    except Exception:
        return str(error.reason)
    try:
        data = json.loads(raw)
        detail = data.get("error", data)
        return str(detail.get("message", detail) if isinstance(detail, dict) else detail)
    except (ValueError, AttributeError):
        return raw.strip()[:500] or str(error.reason)


# ---------------------------------------------------------------------------------------------
# Demo: a toy task where a pretend assistant only gets a transformation right if the prompt
# states its rule, and a scripted reflector that adds one missing rule taken from the feedback


DEMO_RULES = {
    "reverse": "To reverse a word, write its letters from last to first.",
    "shout": "To shout a word, write it in capital letters.",
    "double": "To double a word, write it twice with no space between.",
    "count": "To count a word, give the number of its letters.",
}


def demo_answer(kind, word):
    return {"reverse": word[::-1], "shout": word.upper(), "double": word * 2, "count": str(len(word))}[kind]


def demo_examples():
    words = ["stone", "river", "cloud", "ember"]
    return [{"id": f"{kind}-{w}", "input": f"{kind}: {w}", "kind": kind, "word": w}
            for kind in DEMO_RULES for w in words]


def demo_evaluate(prompt, batch):
    results = []
    for ex in batch:
        want = demo_answer(ex["kind"], ex["word"])
        got = want if DEMO_RULES[ex["kind"]] in prompt else ex["word"]
        feedback = "correct" if got == want else f"expected {want!r}. Hint: {DEMO_RULES[ex['kind']]}"
        results.append((1.0 if got == want else 0.0, got, feedback))
    return results


def demo_lm(request):
    """Like a small real reflector: keeps the opening line and the newest rule it was shown, adds
    the first missing rule from the feedback, and now and then answers without a ``` block."""
    current = re.search(r"```\n(.*?)\n```", request, re.DOTALL).group(1)
    kept = paragraphs(current)[:1] + paragraphs(current)[1:][-1:]
    hints = [h for h in re.findall(r"Hint: (.*)", request) if h not in current]
    if not hints or sum(request.encode()) % 5 == 0:
        return "I am not sure what to change."
    return "Here is a better instruction:\n```text\n" + "\n\n".join(kept + hints[:1]) + "\n```"


def demo(budget, seed, merge):
    examples = demo_examples()
    random.Random(seed).shuffle(examples)
    trainset, valset = examples[:8], examples[8:]
    seen = [0]

    def evaluate(prompt, batch):
        seen[0] += len(batch)
        return demo_evaluate(prompt, batch)

    def show(state, idx):
        row = state.val_scores[idx]
        print(f"candidate {idx}  parents {state.parents[idx]}  valset mean {mean(row):.2f}  "
              f"front {pareto_front(state.val_scores)}  metric calls {state.metric_calls}")

    print(f"toy task: {len(trainset)} train / {len(valset)} val examples, budget {budget} metric calls, "
          f"merge {'on' if merge else 'off'}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the scripted LM's garbage replies are counted below
        state = optimize("Transform the word as asked.", trainset, valset, evaluate, demo_lm, budget,
                         seed=seed, merge=merge, on_candidate=show)
    print(f"\nbest candidate {state.best} (valset mean {mean(state.val_scores[state.best]):.2f}):")
    print(state.candidates[state.best])
    print(f"\niterations {state.iterations}, unusable reflections {state.unusable_reflections}, "
          f"reflection errors {state.reflection_failures}, greedy cover {greedy_cover(state.val_scores)}")
    print(f"metric calls: state counted {state.metric_calls}, evaluate saw {seen[0]}, budget {budget}")
    assert state.metric_calls == seen[0] <= budget, "metric-call accounting is off"
    return state


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Compact GEPA: reflective prompt evolution over a Pareto front of per-example "
                    "scores. Use it as a library (import gepa; gepa.optimize(...), see the docstring "
                    "at the top of this file) or run the toy demo.")
    parser.add_argument("--demo", action="store_true",
                        help="run the loop on a toy task with a scripted reflection LM "
                             "(no model, no network)")
    parser.add_argument("--budget", type=int, default=150, help="demo: metric-call budget (default 150)")
    parser.add_argument("--seed", type=int, default=0, help="demo: random seed (default 0)")
    parser.add_argument("--no-merge", action="store_true", help="demo: reflective mutation only, no merges")
    args = parser.parse_args(argv)
    if not args.demo:
        parser.error("nothing to do: pass --demo, or import gepa and call gepa.optimize (see --help)")
    try:
        demo(args.budget, args.seed, not args.no_merge)
    except ValueError as e:
        parser.error(f"--budget: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
