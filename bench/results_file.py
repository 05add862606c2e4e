"""Writing a benchmark's figures: every bench script ends with its results as one JSON file."""
import json
import os


def write_results(path, results, indent=1):
    """`results` as JSON at `path` (folders made as needed), and say where."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=indent)
    print(f"wrote {path}")
