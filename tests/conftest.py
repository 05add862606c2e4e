"""Shared fixtures: a tiny random Qwen2 model and a character-level chat tokenizer, built offline and
saved with save_pretrained, so tests load them through the same path users take (--model DIR)."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The models here are tiny: one thread computes them as fast as two, and is immune to the thread
# oversubscription that made a 4-step run take 86 s instead of 7 s on a busy 2-core machine.
import torch  # noqa: E402
torch.set_num_threads(1)

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tokenizer():
    """Byte-level BPE with no merges: one token per byte (any text round-trips), plus chat tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    specials = ["<|pad|>", "<|im_start|>", "<|im_end|>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {t: i for i, t in enumerate(specials + sorted(alphabet))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<|pad|>", eos_token="<|im_end|>",
                                  additional_special_tokens=["<|im_start|>"])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_model(path: Path, seed: int = 0, pad_is_eos: bool = False):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    tok = build_tokenizer()
    if pad_is_eos:
        tok.pad_token = tok.eos_token
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      bos_token_id=None)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def load_engine(cfg, device="cpu"):
    """The policy, its tokenizer and its rollout engine, built as a run's start builds them."""
    import p2o
    model, tok = p2o.load_model(cfg, torch.device(device))
    return model, tok, p2o.make_engine(model, tok, cfg, torch.device(device))


def spy_generate(monkeypatch, record):
    """Every generate call of the in-process engines (peft, twin) shows its prompts, as text, to `record`."""
    import p2o
    real = p2o.HFEngine.generate

    def spy(self, prompt_ids, *a, **k):
        record([self.tok.decode(ids) for ids in prompt_ids])
        return real(self, prompt_ids, *a, **k)
    monkeypatch.setattr(p2o.HFEngine, "generate", spy)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_model_pad_eos(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny_eos") / "model", pad_is_eos=True)


def write_problems(path: Path, n: int) -> Path:
    rows = [{"id": f"t{i}", "question": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def tiny_data(tmp_path):
    return write_problems(tmp_path / "train.jsonl", 12)


# wall-clock and memory readings: everything else in metrics.jsonl must repeat exactly
VOLATILE = ("step_time", "time/", "rollout/", "memory/", "p2o/gepa_seconds")


def assert_same_metrics(path_a: Path, path_b: Path) -> list[dict]:
    """Two runs' metrics.jsonl agree row by row, key by key (up to float rounding)."""
    def rows(path):
        rs = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
        return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rs]
    a, b = rows(path_a), rows(path_b)
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-7), (ra["step"], k)
    return b


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: compiles for real (tests/test_compiled.py); run by default, "
                                       "skip with -m 'not slow'")
