"""One process per device, each on a shard of the images, merged into one submission in imgId order."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Set, Tuple

from ..core.atomic import write_bytes
from ..core.config import Config, replace
from ..core.errors import ConfigError, InterrogatorError
from ..core.listing import shard_groups
from ..core.shards import Layout
from ..core.workdir import WorkDir, work_root
from ..runner.finish import collect, finish
from ..runner.needs import needs_of
from ..runner.pipeline import run
from ..runner.planner import make_plan
import torch


def visible_devices(spec: str) -> List[str]:
    """'auto' means every visible CUDA device; otherwise a comma-separated list (cuda:0,cuda:1 or cpu,cpu)."""
    if spec != "auto":
        devices = [d.strip() for d in spec.split(",") if d.strip()]
    else:
        devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu"]
    if not devices:
        raise InterrogatorError(f"--devices: no device in {spec!r}")
    return devices


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


def child_environment(device: str, environ: Optional[dict] = None) -> Tuple[dict, str]:
    """The environment and --device for the process of ``device``: a GPU is the only one it sees.

    ``cuda:i`` becomes ``CUDA_VISIBLE_DEVICES`` = the i-th visible GPU (of the parent's own
    ``CUDA_VISIBLE_DEVICES`` when set) and ``--device cuda``, so no process opens a context on another GPU.
    """
    env = dict(os.environ if environ is None else environ)
    if not device.startswith("cuda"):
        # A CPU's float sums depend on how many threads split them (1e-7 in MiniLM between 1 and 2):
        # a CPU shard computes with the thread count of a single run here, so its bits are the same.
        env.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
        return env, device
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    visible = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if visible:
        if index >= len(visible):
            raise InterrogatorError(f"--devices: {device} is not among the visible GPUs ({','.join(visible)})")
        env["CUDA_VISIBLE_DEVICES"] = visible[index]
    else:
        env["CUDA_VISIBLE_DEVICES"] = str(index)
    return env, "cuda"


def merge_shards(config: Config, shard_csvs: Sequence[str], output: str):
    """Every format of the config from the batch records that ``--shard i/N`` runs kept beside their CSVs
    (the plan's batches, under their numbers in the whole run), written by ``finish`` as a single run writes
    them; their work folders are removed after. None, and nothing written, when the models are not all here
    (the resume key names them) or a batch has no record: then only the CSVs can be merged."""
    try:
        config.require_paths(*needs_of(config).path_keys())
    except ConfigError:
        return None
    plan = make_plan(replace(config, output=output))
    stores = [WorkDir(csv, plan.key) for csv in shard_csvs]

    def load(batch: int):
        return next((r for r in (s.load(batch) for s in stores if s.file(batch).exists()) if r is not None), None)
    records, missing = collect(plan, load)
    if missing:
        return None
    return finish(plan, records, remove=stores)


def settings_file(plan) -> Path:
    """The plan's settings as a config file the ``--devices`` processes read (in the work folder, which goes
    with the run): every key of the merged config, so a child runs exactly the parent's plan."""
    path = work_root(plan.config.output) / f"settings-{plan.key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, json.dumps(plan.config.to_dict(), indent=1, sort_keys=True).encode("utf-8"))
    return path


def submit_on_devices(config: Config, devices: Sequence[str], progress: bool = False, strict: bool = False):
    """Run ``submit --images lo:hi:total --records-only`` per device in parallel, then write every output here.

    The plan (planner.make_plan) is made here, once: the images, and the ranges as contiguous runs of whole
    batches of the config's caption batch size (split by input shard: shards.Layout). Each process reads the plan's settings (``settings_file``),
    sees only its own GPU, gets its own share of this process's cores (so loader workers and torch threads do
    not compete), checks the folder still holds the images counted here, and saves its batches' records in
    the output's work folder under their numbers in the whole run. This process then runs the plan itself:
    every batch is resumed from those records (nothing is computed again), and ``finish`` writes every format
    as a single run writes it. A failed process leaves its finished batches there: rerunning the command
    resumes them. Returns the finish.RunResult.
    """
    kinds = {d.split(":")[0] for d in devices}
    if len(kinds) != 1:
        raise InterrogatorError(f"--devices: give devices of one kind (all cpu or all cuda), got {','.join(devices)}")
    config = replace(config, device=kinds.pop())  # the records' key names the device type the children run on
    plan = make_plan(config)
    ranges = Layout.of(plan.total, config.stage_batch_size("caption"), shard_groups(plan.files)).ranges(len(devices))
    pairs = [(d, r) for d, r in zip(devices, ranges) if r[1] > r[0]]  # more devices than batches: fewer processes
    shares = split_cores(os.sched_getaffinity(0), len(pairs)) if hasattr(os, "sched_getaffinity") else None
    settings = settings_file(plan)
    work = WorkDir(config.output, plan.key)
    earlier = sum(work.file(b).is_file() for b in range(len(plan.batches)))  # what the children resume, not make
    procs = []
    for i, (device, (lo, hi)) in enumerate(pairs):
        env, child_device = child_environment(device)
        cmd = [sys.executable, "-m", "interrogator", "submit", "--config", str(settings),
               "--images", f"{lo}:{hi}:{plan.total}", "--device", child_device, "--records-only", "--no-progress"]
        procs.append(subprocess.Popen(cmd, env=env, preexec_fn=_pin_to(shares[i] if shares else None)))
    failed = [(i, p.wait()) for i, p in enumerate(procs)]
    failed = [(i, code) for i, code in failed if code != 0]
    if failed:
        raise InterrogatorError(f"device process(es) {', '.join(f'{i} (exit {c})' for i, c in failed)} failed; "
                                f"nothing was written. Rerun the same command to resume them.")
    result = run(config, progress=progress, strict=strict)
    result.resumed_batches = min(earlier, result.resumed_batches)  # the children's batches are this run's work
    return result
