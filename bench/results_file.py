"""Writing a benchmark's figures: every bench script ends with its results as one JSON file, which
names the machine that measured them (cpu_name)."""
import json
import os
import platform


def write_results(path, results, indent=1):
    """`results` as JSON at `path` (folders made as needed), and say where."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=indent)
    print(f"wrote {path}")


def cpu_name():
    """The CPU's model name, and whether it has native bf16 (which decides the rollout twin's dtype)."""
    try:
        info = open("/proc/cpuinfo").read()
        name = next(l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name"))
        return name + (", avx512_bf16" if "avx512_bf16" in info else "")
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
