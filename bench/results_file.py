"""Writing a benchmark's figures: every bench script ends with its results as one JSON file."""
import json
import math
import os


def write_results(path, results, indent=1):
    """`results` as JSON at `path` (folders made as needed), and say where. NaN and infinities
    become null: bare `NaN` is not JSON, and other tools refuse the file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(_finite(results), f, indent=indent, allow_nan=False)
    print(f"wrote {path}")


def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x
