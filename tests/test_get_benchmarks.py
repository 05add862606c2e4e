"""data/get_benchmarks.py offline: a local HTTP server serves toy files of our own (tests/fixtures/
get_benchmarks, never rows of the real sets) under a test-only checksum table; without a server the
real table refuses in one line with nothing written; and the real table's pins and conversions
reproduce the copies in ../shared/benchmarks byte for byte (skipped without them)."""
import functools
import hashlib
import http.server
import importlib.util
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "get_benchmarks"
BENCH = ROOT.parent / "shared" / "benchmarks"
spec = importlib.util.spec_from_file_location("get_benchmarks", ROOT / "data" / "get_benchmarks.py")
gb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gb)

# the toy files' outputs, written out by hand: what the conversions must produce
POOL_LINES = (
    '{"problem": "How many sides does a toy triangle have?", "answer": "3", "difficulty": 3.0, "type": "Toy"}\n'
    '{"problem": "A toy circle has radius 1. What is its area?", "answer": "π", "difficulty": 4.0, "type": "Toy"}\n'
    '{"problem": "What is 2 + 2 in the toy set?", "answer": "4", "difficulty": 5.0, "type": "Toy"}\n'
    '{"problem": "Toy level unknown: what is 1 - 1?", "answer": null, "difficulty": 0.0, "type": "Toy"}\n').encode()
POOL_HARD = b"".join(POOL_LINES.splitlines(keepends=True)[1:3])
MIXED_2025 = (b'{"id": "2", "prompt": "Toy: what is 5 + 5?",  "ground_truth": "10", "tag": "aime2025"}\n'
              b'{"id": "3", "prompt": "Toy: what is 9 - 3?", "ground_truth": "6", "tag": "aime2025"}\n')
PLAIN = (FIXTURES / "plain.jsonl").read_bytes()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


TOY_SETS = {
    "toy_math": [("toy_math/train.jsonl", "pool.json", gb.array_to_lines, sha(POOL_LINES)),
                 ("toy_math/train_hard_level4to5.jsonl", "pool.json", gb.math_level4to5, sha(POOL_HARD))],
    "toy_aime": [("toy_aime/test.jsonl", "mixed.jsonl", gb.aime2025, sha(MIXED_2025))],
    "toy_gsm": [("toy_gsm/test.jsonl", "plain.jsonl", gb.as_is, sha(PLAIN))],
}


@pytest.fixture
def server():
    """http://127.0.0.1:PORT serving tests/fixtures/get_benchmarks; yields (url, list of paths asked for)."""
    asked = []

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            asked.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(FIXTURES)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", asked
    httpd.shutdown()
    httpd.server_close()


def files_under(d: Path) -> list[str]:
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()) if d.exists() else []


def test_downloads_converts_and_writes_the_eval_layout(server, monkeypatch, tmp_path, capsys):
    url, asked = server
    monkeypatch.setattr(gb, "SETS", TOY_SETS)
    out = tmp_path / "bench"
    assert gb.main(["--out", str(out), "--base-url", url]) == 0
    assert files_under(out) == ["toy_aime/test.jsonl", "toy_gsm/test.jsonl", "toy_math/train.jsonl",
                                "toy_math/train_hard_level4to5.jsonl"]
    assert (out / "toy_math/train.jsonl").read_bytes() == POOL_LINES  # one row a line, non-ASCII kept
    assert [json.loads(l)["difficulty"] for l in (out / "toy_math/train_hard_level4to5.jsonl").open()] == [4.0, 5.0]
    assert (out / "toy_aime/test.jsonl").read_bytes() == MIXED_2025  # the source's lines, spacing and all
    assert (out / "toy_gsm/test.jsonl").read_bytes() == PLAIN
    assert sorted(asked) == ["/mixed.jsonl", "/plain.jsonl", "/pool.json"]  # pool.json fetched once for two files
    assert "4 file(s) written" in capsys.readouterr().out
    # a second run finds every file in place with its checksum and fetches nothing
    assert gb.main(["--out", str(out), "--base-url", url, "toy_math"]) == 0
    assert len(asked) == 3


def test_names_pick_sets_and_an_unknown_name_is_refused(server, monkeypatch, tmp_path, capsys):
    url, _ = server
    monkeypatch.setattr(gb, "SETS", TOY_SETS)
    assert gb.main(["toy_aime", "--out", str(tmp_path), "--base-url", url]) == 0
    assert files_under(tmp_path) == ["toy_aime/test.jsonl"]
    with pytest.raises(SystemExit) as e:
        gb.main(["toy_nope", "--out", str(tmp_path), "--base-url", url])
    assert e.value.code == 2 and "unknown set 'toy_nope'" in capsys.readouterr().err


def test_a_checksum_mismatch_is_refused_and_nothing_is_written(server, monkeypatch, tmp_path, capsys):
    url, _ = server
    bad = dict(TOY_SETS, toy_aime=[("toy_aime/test.jsonl", "mixed.jsonl", gb.aime2025, sha(MIXED_2025 + b"\n"))])
    monkeypatch.setattr(gb, "SETS", bad)
    out = tmp_path / "bench"
    assert gb.main(["--out", str(out), "--base-url", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "toy_aime/test.jsonl: sha256" in err and "nothing written" in err
    assert files_under(out) == []  # not even the sets before it, whose checksums matched


def test_a_missing_source_is_refused_and_nothing_is_written(server, monkeypatch, tmp_path, capsys):
    url, _ = server
    monkeypatch.setattr(gb, "SETS", dict(TOY_SETS, toy_gsm=[("toy_gsm/test.jsonl", "gone.jsonl", gb.as_is, "0")]))
    assert gb.main(["--out", str(tmp_path / "b"), "--base-url", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot fetch" in err and "gone.jsonl" in err
    assert files_under(tmp_path) == []


def test_without_internet_one_line_exit_2_nothing_left(tmp_path):
    """The real script and table, its origin unreachable (a port nothing listens on): what a machine
    without internet sees."""
    import socket
    with socket.socket() as s:  # a free port, closed again: connecting to it is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "bench"
    r = subprocess.run([sys.executable, str(ROOT / "data" / "get_benchmarks.py"), "--out", str(out),
                        "--base-url", f"http://127.0.0.1:{port}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "cannot fetch" in r.stderr and "internet" in r.stderr
    assert files_under(tmp_path) == []


def test_the_real_table_covers_every_set_with_a_pinned_commit():
    paths = [p for files in gb.SETS.values() for p, *_ in files]
    assert len(paths) == len(set(paths)) == 12
    for files in gb.SETS.values():
        for path, source, convert, want in files:
            owner, repo, commit = source.split("/")[:3]
            assert re.fullmatch(r"[0-9a-f]{40}", commit), source
            assert re.fullmatch(r"[0-9a-f]{64}", want), path


needs_bench = pytest.mark.skipif(not (BENCH / "SOURCES.md").is_file(), reason=f"{BENCH} not present")


@needs_bench
def test_the_pins_are_the_shared_copies_origins_and_checksums():
    """Each file's origin repository, path and commit are those SOURCES.md names, and its checksum is
    the shared copy's: the download gives the rows and answers the README's figures were measured on."""
    text = (BENCH / "SOURCES.md").read_text(encoding="utf-8")

    def section(path):
        return text.split(f"## `{path}`\n")[1].split("\n## ")[0]

    for files in gb.SETS.values():
        for path, source, convert, want in files:
            owner, repo, commit, src_path = source.split("/", 3)
            assert f"origin: github.com/{owner}/{repo} : `{src_path}`" in section(path), path
            same_as = re.search(r"commit: as (\S+)", section(path))  # "commit: as math/train.jsonl"
            pinned = re.search(r"commit: snapshot ([0-9a-f]{8,40})", section(same_as[1] if same_as else path))
            assert commit.startswith(pinned[1]), path
            assert sha((BENCH / path).read_bytes()) == want, path


@needs_bench
def test_the_conversions_reproduce_the_shared_copies_byte_for_byte():
    """The two converted sources were JSON arrays, and AIME 2025 is 30 lines of a larger file: rebuilt
    from the shared copies (an indented array; the lines among other rows), the conversions give the
    shared files back exactly."""
    def rows(name):
        return [json.loads(l) for l in (BENCH / name).read_text(encoding="utf-8").splitlines()]
    math_array = json.dumps(rows("math/train.jsonl"), indent=2).encode()
    assert gb.array_to_lines(math_array) == (BENCH / "math/train.jsonl").read_bytes()
    assert gb.math_level4to5(math_array) == (BENCH / "math/train_hard_level4to5.jsonl").read_bytes()
    aime_array = json.dumps(rows("train_pools/aime_1983_2023.jsonl")).encode()
    assert gb.array_to_lines(aime_array) == (BENCH / "train_pools/aime_1983_2023.jsonl").read_bytes()
    aime25 = (BENCH / "aime25/test.jsonl").read_bytes()
    other = b'{"id": "0", "prompt": "toy", "ground_truth": "1", "tag": "toy"}\n'
    assert gb.aime2025(other + aime25 + other) == aime25
