"""What every command pays before it does anything: `vlprompt --help` and `import vlprompt`.

    python benchmarks/startup.py [--repeats 7] [--src PATH ...]

For each source tree (default: this checkout's `src`; `--src` adds others, e.g. an older
checkout's, measured in the same run, interleaved so that machine load hits all alike), each
round runs fresh Python processes with that tree first on `PYTHONPATH`:

- `vlprompt --help` (`python -m vlprompt.cli --help`): wall time, and whether torch or
  open_clip were imported;
- `import vlprompt`: peak resident memory (the child's `ru_maxrss`);
- `import vlprompt; vlprompt.train`: the same once the training API (torch, open_clip) is used.

Prints a Markdown table of medians (min..max) per tree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

PROBE = """
import json, resource, sys, time
start = time.perf_counter()
{code}
print(json.dumps({{"s": time.perf_counter() - start,
                   "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "torch": "torch" in sys.modules, "open_clip": "open_clip" in sys.modules}}))
"""
HELP = """
import contextlib, io
from vlprompt.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(["--help"])
    except SystemExit:
        pass
"""
CASES = {
    "vlprompt --help": HELP,
    "import vlprompt": "import vlprompt",
    "import vlprompt; vlprompt.train": "import vlprompt\nvlprompt.train",
}


def measure(src: Path, code: str) -> dict:
    """One fresh process: its wall time from exec to exit, and what the probe saw."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(code=code)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall_s": wall}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--src", action="append", default=[], help="another source tree")
    args = parser.parse_args(argv)
    trees = [HERE / "src", *(Path(s).resolve() for s in args.src)]
    runs: dict[tuple[str, str], list[dict]] = {}
    for _ in range(args.repeats):
        for tree in trees:
            for name, code in CASES.items():
                runs.setdefault((str(tree), name), []).append(measure(tree, code))
    print("| tree | what | wall s, median (min..max) | peak RSS MB, median | imports torch |")
    print("|---|---|---|---|---|")
    for (tree, name), rows in runs.items():
        wall = [r["wall_s"] for r in rows]
        rss = statistics.median(r["rss_mb"] for r in rows)
        print(
            f"| {tree} | {name} | {statistics.median(wall):.2f} ({min(wall):.2f}..{max(wall):.2f})"
            f" | {rss:.0f} | {rows[0]['torch']} |"
        )


if __name__ == "__main__":
    main()
