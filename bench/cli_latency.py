"""Wall time of the command line as a user waits for it: ``--help``, a subcommand's ``--help``, a parse error, and
``prompt`` on one image with the demo models (warm caches: the models built and the label embeddings cached by a
first run), each the median of several runs in a fresh process.

    python bench/cli_latency.py                               # this checkout
    python bench/cli_latency.py --source /path/to/other/checkout --label before

``--source`` times another checkout of the package (an older commit, ``git worktree add``): it runs with
``python -S`` and a path that puts that checkout first, so that this checkout's editable install is not the one
imported. Writes ``bench/results/cli-latency-<label>.json`` and prints a Markdown row per command.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import site
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "samples" / "20057f34d.png"
COMMANDS = {
    "--help": ["--help"],
    "submit --help": ["submit", "--help"],
    "a parse error": ["submit", "--no-such-flag"],
    "prompt, one image, demo models": ["prompt", str(IMAGE), "--mode", "fast"],
}


def interpreter(source: Path) -> list:
    """The command that runs ``python -m interrogator`` from ``source``."""
    if source.resolve() == REPO:
        return [sys.executable, "-m", "interrogator"]
    paths = [str(source)] + site.getsitepackages()
    boot = f"import sys, runpy; sys.path[:0] = {paths!r}; sys.argv[0] = 'interrogator'; " \
           f"runpy.run_module('interrogator', run_name='__main__', alter_sys=True)"
    return [sys.executable, "-S", "-c", boot]


def timed(command: list, env: dict, cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REPO, help="the checkout to time (default: this one)")
    parser.add_argument("--label", default="after", help="the results' name (cli-latency-<label>.json)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each command; the median is reported")
    parser.add_argument("--demo", type=Path, help="the demo models' folder (default: a temporary one, built first)")
    args = parser.parse_args()
    base = interpreter(args.source)
    with tempfile.TemporaryDirectory() as scratch:
        demo = args.demo or Path(scratch) / "demo"
        env = {**os.environ, "INTERROGATOR_DEMO_DIR": str(demo), "INTERROGATOR_CONFIG": ""}
        subprocess.run(base + COMMANDS["prompt, one image, demo models"], env=env, cwd=scratch, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1200)  # builds, caches
        rows = {name: statistics.median(timed(base + argv, env, Path(scratch)) for _ in range(args.runs))
                for name, argv in COMMANDS.items()}
    commit = subprocess.run(["git", "-C", str(args.source), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    result = {"machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
              "date": datetime.date.today().isoformat(), "source": commit, "runs": args.runs,
              "command": " ".join(["python bench/cli_latency.py"] + sys.argv[1:]), "median_seconds": rows}
    out = REPO / "bench" / "results" / f"cli-latency-{args.label}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    for name, seconds in rows.items():
        print(f"| {name} | {seconds:.2f} s |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
