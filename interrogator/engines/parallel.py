"""One process per device, each on a shard of the images, merged into one submission in imgId order."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import List, Optional, Sequence, Set, Tuple

from ..core.config import Config
from ..core.errors import InterrogatorError
from ..core.shards import shard_ranges


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
        import torch
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


def model_keys(config: Config) -> List[str]:
    """The path keys of the models and label lists a run of the config reads."""
    keys = ["embedding_path", "dicts"]
    keys += ["blip_path"] if config.needs_captioner() else []
    keys += ["clip_path"] if config.needs_clip() else []
    keys += ["tagger_path"] if config.tagger_path is not None else []
    return keys


def merge_shards(config: Config, shard_csvs: Sequence[str], output: str):
    """Every format of the config from the batch records that ``--shard i/N`` runs kept beside their CSVs
    (the plan's batches, under their numbers in the whole run), written as a single run writes them; their work
    folders are removed after. None, and nothing written, when the models are not all here (the resume key
    names them) or a batch has no record: then only the CSVs can be merged."""
    from ..core.config import replace
    from ..core.errors import ConfigError
    from ..core.plan import make_plan
    from ..core.workdir import WorkDir, resume
    from ..runner.outputs import write_all
    from ..runner.pipeline import assemble
    try:
        config.require_paths(*model_keys(config))
    except ConfigError:
        return None
    plan = make_plan(replace(config, output=output))
    stores = [WorkDir(csv, plan.key) for csv in shard_csvs]

    def load(batch: int):
        return next((r for r in (s.load(batch) for s in stores if s.file(batch).exists()) if r is not None), None)
    records = resume(load, list(plan.files), plan.batches)
    if len(records) < len(plan.batches):
        return None
    result = assemble(plan, records)
    result.output, result.written = write_all(plan, result)
    for store in stores:
        store.remove()
    return result


def submit_on_devices(config: Config, config_file: str, devices: Sequence[str], extra: Optional[Sequence[str]] = None,
                      progress: bool = False):
    """Run ``submit --images lo:hi:total --records-only`` per device in parallel, then write every output here.

    The plan (plan.py) is made here, once: the images, and the ranges as contiguous runs of whole batches of
    the config's caption batch size. Each process sees only its own GPU, gets its own share of this process's
    cores (so loader workers and torch threads do not compete), checks the folder still holds the images
    counted here, and saves its batches' records in the output's work folder under their numbers in the whole
    run. This process then runs the plan itself: every batch is resumed from those records (nothing is
    computed again), and every format is written as a single run writes it. A failed process leaves its
    finished batches there: rerunning the command resumes them. Returns the pipeline.RunResult.
    """
    from ..core.config import replace
    from ..runner.pipeline import run
    from ..core.plan import make_plan
    kinds = {d.split(":")[0] for d in devices}
    if len(kinds) != 1:
        raise InterrogatorError(f"--devices: give devices of one kind (all cpu or all cuda), got {','.join(devices)}")
    config = replace(config, device=kinds.pop())  # the records' key names the device type the children run on
    plan = make_plan(config)
    ranges = shard_ranges(plan.total, len(devices), config.stage_batch_size("caption"))
    pairs = [(d, r) for d, r in zip(devices, ranges) if r[1] > r[0]]  # more devices than batches: fewer processes
    shares = split_cores(os.sched_getaffinity(0), len(pairs)) if hasattr(os, "sched_getaffinity") else None
    procs = []
    for i, (device, (lo, hi)) in enumerate(pairs):
        env, child_device = child_environment(device)
        cmd = [sys.executable, "-m", "interrogator", "submit", "--config", config_file,
               "--images", f"{lo}:{hi}:{plan.total}", "--device", child_device, "--output", config.output,
               "--records-only", "--no-progress", *(extra or [])]
        procs.append(subprocess.Popen(cmd, env=env, preexec_fn=_pin_to(shares[i] if shares else None)))
    failed = [(i, p.wait()) for i, p in enumerate(procs)]
    failed = [(i, code) for i, code in failed if code != 0]
    if failed:
        raise InterrogatorError(f"device process(es) {', '.join(f'{i} (exit {c})' for i, c in failed)} failed; "
                                f"nothing was written. Rerun the same command to resume them.")
    return run(config, progress=progress)
