"""What the small benchmarks share: a GPU sync, a scratch folder, and their report (JSON plus a markdown table of
the same values)."""
from __future__ import annotations

import datetime
import json
import platform
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


@contextmanager
def scratch_folder(prefix: str):
    """A temporary folder for a benchmark's inputs, removed when it ends, however it ends."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def header(device: str, script: str) -> dict:
    """The rows every report starts with: machine, date and the command as run."""
    return {"machine": f"{device} ({platform.machine()}, {torch.get_num_threads()} threads)",
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": f"python bench/{script} " + " ".join(sys.argv[1:])}


def write_report(result: dict, folder: str, stem: str) -> None:
    """<folder>/<stem>.json and .md, and the table printed."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    rows = ["| measure | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in result.items()]
    (out / f"{stem}.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
