"""The README's promises a test can hold: its verify.py and gepa.py examples run with the file copied
alone into an empty folder (nothing else of the kit importable; gepa.py with the standard library only)
and print what their comments say; no command reads ../shared; the test command is the line CI reads;
every results file and bench script it cites exists."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def example(marker: str) -> str:
    blocks = [b for b in re.findall(r"^```python\n(.*?)^```$", README, re.DOTALL | re.MULTILINE) if marker in b]
    assert len(blocks) == 1, f"README should hold one python example with {marker!r}"
    return blocks[0]


def run_alone(code: str, module: str, tmp_path: Path, flags: list[str]) -> list[str]:
    """Run code in a folder holding only a copy of `module`, that folder as cwd and sys.path[0]; -E
    drops PYTHONPATH, so the repository is not importable. Returns stdout's lines; stderr must be empty."""
    shutil.copy(ROOT / module, tmp_path / module)
    (tmp_path / "example.py").write_text(code, encoding="utf-8")
    r = subprocess.run([sys.executable, "-E", *flags, "example.py"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return r.stdout.splitlines()


def check_comments(code: str, out: list[str]):
    """Each `print(...)  # WHAT` prints WHAT; a comment with a comma ("0.0, and a line saying what to
    fix") promises its first word, followed by more text."""
    said = [c for line in code.splitlines() if line.startswith("print(") for c in re.findall(r"#\s*(.*)$", line)]
    assert len(said) == len(out), (said, out)
    for comment, line in zip(said, out):
        if "," in comment:
            first, _, rest = line.partition(" ")
            assert first == comment.split(",")[0] and rest.strip(), (comment, line)
        else:
            assert line == comment, (comment, line)


def test_verify_example_runs_with_verify_py_alone(tmp_path):
    code = example("from verify import")
    out = run_alone(code, "verify.py", tmp_path, ["-s"])  # sympy from site-packages, nothing else of the kit
    check_comments(code, out)
    assert [l.split()[0] for l in out] == ["1.0", "0.0", "True"]  # the rewards, whatever the feedback's wording


def test_gepa_example_runs_with_gepa_py_alone_on_the_standard_library(tmp_path):
    code = example("import gepa")
    out = run_alone(code, "gepa.py", tmp_path, ["-S"])  # -S: no site-packages at all
    check_comments(code, out)
    assert out == ["Repeat the word in capitals."]


def test_no_readme_command_reads_the_authors_shared_folder():
    assert "../shared" not in README and "shared/benchmarks" not in README


def test_the_test_command_is_the_line_ci_reads():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "grep -m1 -E '^pip install -r requirements-dev\\.txt && ' README.md" in ci
    line = next(l for l in README.splitlines() if l.startswith("pip install -r requirements-dev.txt && "))
    assert re.sub(r" *#.*$", "", line) == "pip install -r requirements-dev.txt && python -m pytest -q tests"


def test_cited_results_files_and_scripts_exist():
    """A figure's source must be there; a results file may be missing only beside a figure still
    marked FIGURE-TBD (to be measured), in the same paragraph."""
    def cited(text):
        return set(re.findall(r"bench/results/[\w.-]+\.json|\b(?:bench|data)/\w+\.(?:py|sh)\b", text))
    pending = set().union(*[cited(p) for p in README.split("\n\n") if "FIGURE-TBD" in p])
    assert len(cited(README)) > 10
    missing = sorted(p for p in cited(README) if not (ROOT / p).exists())
    assert set(missing) <= pending, missing
