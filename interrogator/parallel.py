"""One process per device, each on a shard of the images, merged into one submission in imgId order."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Set

from .errors import InterrogatorError
from .submission import merge_submissions


def visible_devices(spec: str) -> List[str]:
    """'auto' means every visible CUDA device; otherwise a comma-separated list (cuda:0,cuda:1 or cpu,cpu)."""
    if spec != "auto":
        devices = [d.strip() for d in spec.split(",") if d.strip()]
    else:
        import torch
        devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu"]
    if not devices:
        raise InterrogatorError(f"--devices: no device in {spec!r}")
    return devices


def shard_output(output: Path, index: int, count: int) -> Path:
    return output.with_name(f"{output.stem}.shard-{index}-of-{count}{output.suffix}")


def split_cores(cores: Sequence[int], count: int) -> Optional[List[Set[int]]]:
    """Disjoint, near-equal sets of the given cores, one per process; None when there are fewer cores than processes."""
    cores = sorted(cores)
    if len(cores) < count:
        return None
    return [set(cores[i * len(cores) // count:(i + 1) * len(cores) // count]) for i in range(count)]


def _pin_to(cores: Optional[Set[int]]):
    """A Popen preexec_fn that restricts the child to ``cores`` (its torch threads and loader workers follow)."""
    if cores is None or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, cores)


def submit_on_devices(config: str, devices: Sequence[str], output: str, extra: Optional[Sequence[str]] = None) -> Path:
    """Run `submit --shard i/N --device d` per device in parallel, then merge; shard files are removed after.

    Each process gets its own share of this process's cores, so loader workers ("auto") and torch threads
    of the shards do not compete for the same cores.
    """
    output = Path(output)
    count = len(devices)
    shares = split_cores(os.sched_getaffinity(0), count) if hasattr(os, "sched_getaffinity") else None
    procs = []
    for i, device in enumerate(devices):
        cmd = [sys.executable, "-m", "interrogator", "submit", "--config", config, "--shard", f"{i}/{count}",
               "--device", device, "--output", str(shard_output(output, i, count)), "--no-progress", *(extra or [])]
        procs.append(subprocess.Popen(cmd, preexec_fn=_pin_to(shares[i] if shares else None)))
    failed = [(i, p.wait()) for i, p in enumerate(procs)]
    failed = [(i, code) for i, code in failed if code != 0]
    if failed:
        raise InterrogatorError(f"shard(s) {', '.join(f'{i} (exit {c})' for i, c in failed)} failed; nothing merged. "
                                f"Rerun the same command to resume them.")
    shards = [shard_output(output, i, count) for i in range(count)]
    path = merge_submissions(shards, output)
    for shard in shards:
        shard.unlink()
    return path
