"""Download the public math sets the one-GPU recipe trains and evaluates on, at pinned commits.

    python data/get_benchmarks.py                    # every set, into data/benchmarks/
    python data/get_benchmarks.py math math500 --out DIR

Each file comes from its public GitHub origin at a fixed commit, is converted where needed (a JSON array
becomes one row per line; MATH levels 4-5 and AIME 2025 are filtered out of larger files) and is written
only after its sha256 matches the table below, so the rows and answers are the ones the README's figures
were measured on. The layout is the one `--eval` names sets by: math500/test.jsonl -> math500.
Everything is fetched and checked before anything is written: an unreachable origin or a changed file
leaves nothing behind (one line, exit 2). Standard library only.
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
GITHUB_RAW = "https://raw.githubusercontent.com/"
GSM8K = "openai/grade-school-math/3101c7d5072418e28b9008a6636bde82a006892c/grade_school_math/data/"
SIMPLERL = "hkust-nlp/simpleRL-reason/cf1c7858bfc145a27aa733e75d930d34f0d318a6/examples/simplelr_math_eval/data/"
QWEN = "QwenLM/Qwen2.5-Math/a45202bd16f1ec06f433442dc1152d0074773465/evaluation/data/"
RLLM = "agentica-project/rllm/874daa4acb7f451dc2a4b2b6e8ce28f5aa88d1f5/rllm/data/train/math/"
ROLL = "alibaba/ROLL/8eb27cc2dc34c4d1310b169d9b86d339004d811a/data/"


def as_is(raw: bytes) -> bytes:
    return raw


def array_to_lines(raw: bytes) -> bytes:
    """A JSON array as JSON Lines, values unchanged (json's own spacing, non-ASCII kept as is)."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in json.loads(raw)).encode()


def keep_lines(raw: bytes, keep) -> bytes:
    """The source's own lines (bytes unchanged) whose row passes keep(row)."""
    return b"".join(l.rstrip(b"\r\n") + b"\n" for l in raw.splitlines() if l.strip() and keep(json.loads(l)))


def math_level4to5(raw: bytes) -> bytes:
    return keep_lines(array_to_lines(raw), lambda row: row["difficulty"] >= 4)


def aime2025(raw: bytes) -> bytes:
    return keep_lines(raw, lambda row: row["tag"] == "aime2025")


# name: [(file written, source under the base URL, conversion, sha256 of the file written)]
SETS = {
    "gsm8k": [
        ("gsm8k/train.jsonl", GSM8K + "train.jsonl", as_is,
         "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465"),
        ("gsm8k/test.jsonl", GSM8K + "test.jsonl", as_is,
         "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14")],
    "math": [
        ("math/train.jsonl", RLLM + "math.json", array_to_lines,
         "5eafb308ae6dfafc07d62c0cba8d0e7118d31c301f77ac594a7d809d7c177544"),
        ("math/train_hard_level4to5.jsonl", RLLM + "math.json", math_level4to5,
         "e3a8e383e2039ff8b1af3396da8f51f022b9b2751062f9791ab33de506f27c5d")],
    "math500": [("math500/test.jsonl", SIMPLERL + "math500/test.jsonl", as_is,
                 "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132")],
    "aime24": [("aime24/test.jsonl", QWEN + "aime24/test.jsonl", as_is,
                "af2b8bd2aa911b6333ad0df32f3ca05c7ae8ed10f1731f4372c8ae26990bf7ac")],
    "aime25": [("aime25/test.jsonl", ROLL + "math_benchmarks.jsonl", aime2025,
                "e408f805f8091bb38118a46efc317f0e33f2cefa4024c90147491463cefa6cac")],
    "amc23": [("amc23/test.jsonl", QWEN + "amc23/test.jsonl", as_is,
               "43707e1ca784602d8479de24ee8ce36609dbebc46dd152b0b12a46611aa898a4")],
    "minerva_math": [("minerva_math/test.jsonl", QWEN + "minerva_math/test.jsonl", as_is,
                      "0e656b430d3a0a1dab6aa853f453ba3805e28e2cabe4fc72486a897cc09d8ba2")],
    "olympiadbench": [("olympiadbench/test.jsonl", QWEN + "olympiadbench/test.jsonl", as_is,
                       "bb8c1e38a16ea9eacb77530315a674d883f267fbff79183effc53681b4fcc416")],
    "aime_1983_2023": [("train_pools/aime_1983_2023.jsonl", RLLM + "aime.json", array_to_lines,
                        "c77c0c692c577a4db34432ead25a4615376eec21d593b18096c86bfdb8eea29d")],
    "deepmath_103k_5k": [("train_pools/deepmath_103k_5k.jsonl", ROLL + "math_deepmath_deal.jsonl", as_is,
                          "6c8500132b82cafcd82287c46d2804182aaeaf1d27bf0e0c4bcccbe4b82249be")],
}


class Refused(Exception):
    """A source that cannot be fetched, or a file whose checksum is not the pinned one."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(url: str, timeout: float = 60) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read()
    except (urllib.error.URLError, OSError) as e:  # HTTPError is a URLError: a 404 lands here too
        raise Refused(f"cannot fetch {url} ({getattr(e, 'reason', e)}): this needs internet access "
                      f"(or --base-url naming a mirror of the same paths)") from None


def build(names: list[str], out: str, base_url: str) -> list[tuple[str, bytes]]:
    """(path, bytes) of every file of `names` not already in `out` with the right checksum, each checked."""
    todo, sources = [], {}
    for name in names:
        for path, source, convert, want in SETS[name]:
            dest = os.path.join(out, path)
            if os.path.exists(dest) and sha256(open(dest, "rb").read()) == want:
                continue
            if source not in sources:  # MATH's levels 4-5 come from the file MATH train does
                sources[source] = fetch(base_url.rstrip("/") + "/" + source)
            data = convert(sources[source])
            if sha256(data) != want:
                raise Refused(f"{path}: sha256 {sha256(data)[:16]}..., expected {want[:16]}... (from {source}): "
                              f"the source changed or the download was damaged; not written")
            todo.append((dest, data))
    return todo


def write(todo: list[tuple[str, bytes]]) -> None:
    """Each file to a temporary one beside it, renamed once complete: no half-written file is ever left."""
    for dest, data in todo:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, dest)
        except BaseException:
            os.unlink(tmp)
            raise


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"sets to get (default: all): {', '.join(SETS)}")
    ap.add_argument("--out", default=os.path.join(HERE, "benchmarks"), help="folder to write into (data/benchmarks)")
    ap.add_argument("--base-url", default=GITHUB_RAW, help="where the owner/repo/commit/path sources are served")
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in SETS]
    if unknown:
        ap.error(f"unknown set {unknown[0]!r}; known: {', '.join(SETS)}")
    try:
        todo = build(args.names or list(SETS), args.out, args.base_url)
    except Refused as e:
        print(f"get_benchmarks.py: {e}; nothing written", file=sys.stderr)
        return 2
    write(todo)
    print(f"get_benchmarks.py: {len(todo)} file(s) written into {args.out}" +
          "".join(f"\n  {os.path.relpath(d, args.out)}" for d, _ in todo))
    return 0


if __name__ == "__main__":
    sys.exit(main())
