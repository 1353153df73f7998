"""Datasets in shards: how fast the one batch path reads samples from WebDataset shards and Parquet against the
same images as loose files, and what listing a large input costs the plan.

    python bench/shards.py                                  # 2,000 images; plans of 1M and 10M listed paths, a 1M folder, 10k shards
    python bench/shards.py --images 200 --lists 10000 --folder 1000 --shards 50 --out /tmp/b   # quick
    python bench/shards.py --ray --lists '' --shards 10 --out /tmp/b            # Ray's readers against by offset

Reading: ``image_batches`` (core/batches.py: read, hash, decode) over every image, batches of 32, no loader
workers, with a transform that keeps nothing, so no model runs and the reader is what is measured. The images are
JPEGs of 256x192 (about 10 KB), written as loose files, as 4 tar shards in img2dataset's layout (``key.jpg``,
``key.txt``, ``key.json``) and as one Parquet file with a ``jpg`` column. With ``--ray``, the same for the Ray
engine's reader stage (``ray_read_rate``) over the shards and the Parquet file.

Planning: ``make_plan`` (the listing, the duplicate-key check, the batches and every output path checked, before
any model loads; a ``csv`` output, the models taken as given) in a fresh process each, its wall time and
the process's peak memory (and its memory after the imports, before the listing), and what the plan holds when
made (the resident memory it added, over the entries: bytes an entry), over a generated file list of 1M and 10M paths, a folder of 1M empty files and 10k shards
of 10 samples.
Writes bench/results/shards-cpu.json and .md.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from PIL import Image  # noqa: E402

from report import header, scratch_folder, write_report  # noqa: E402

PLAN = """
import gc, os, resource, sys, time
sys.path.insert(0, {repo!r})
from interrogator.core.config import load_config
from interrogator.runner.planner import make_plan
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
config = load_config(data_path={data_path!r}, output={output!r}, formats=["csv"])
before, held_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, resident()
start = time.perf_counter()
plan = make_plan(config, models_given=True, key=False)
seconds = time.perf_counter() - start
gc.collect()
print(len(plan.files), seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, before,
      resident() - held_before)
"""


def jpegs(count: int, seed: int = 0):
    rng = random.Random(seed)
    base = Image.effect_noise((256, 192), 40).convert("RGB")
    for i in range(count):
        tint = Image.new("RGB", (256, 192), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        buffer = io.BytesIO()
        Image.blend(base, tint, 0.6).save(buffer, format="JPEG", quality=85)
        yield f"{i:09d}", buffer.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_inputs(root: Path, count: int) -> dict:
    """The same images as loose files, 4 tar shards and one Parquet file; {kind: data_path}."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    items = list(jpegs(count))
    (root / "loose").mkdir()
    for key, data in items:
        (root / "loose" / f"{key}.jpg").write_bytes(data)
    (root / "shards").mkdir()
    per = -(-count // 4)
    for n in range(4):
        with tarfile.open(root / "shards" / f"{n:05d}.tar", "w") as tar:
            for key, data in items[n * per:(n + 1) * per]:
                add(tar, f"{key}.jpg", data)
                add(tar, f"{key}.txt", b"alt text")
                add(tar, f"{key}.json", json.dumps({"key": key}).encode())
    pq.write_table(pa.table({"key": [k for k, _ in items], "jpg": [d for _, d in items]}), root / "images.parquet",
                   row_group_size=256)
    return {"loose files": str(root / "loose"), "tar shards": str(root / "shards" / "{00000..00003}.tar"),
            "parquet": str(root / "images.parquet")}


def read_rate(data_path: str, repeats: int) -> float:
    """Images per second through image_batches (read, hash, decode), the best of ``repeats``."""
    import torch
    from interrogator.core.batches import Transforms, image_batches
    from interrogator.core.config import load_config
    from interrogator.core.plan import scan_images
    files = scan_images(load_config(data_path=data_path).running).files
    batches = [list(range(i, min(i + 32, len(files)))) for i in range(0, len(files), 32)]
    keep_nothing = Transforms(clip=lambda image: torch.zeros(1))
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        done = sum(len(b.indices) for b in image_batches(files, batches, keep_nothing))
        best = max(best, done / (time.perf_counter() - start))
        assert done == len(files)
    return best


def keep_nothing(image):
    import torch
    return torch.zeros(1)


def ray_read_rate(data_path: str, reader: str, repeats: int) -> float:
    """Samples per second through the Ray engine's reader stage alone (engines/ray_read.py: read, hash, decode and
    pickle each batch for the actors, which do not run here), on a local cluster of this machine's CPUs, the best
    of ``repeats``: ``offset`` (a row per batch, each sample read by its offset) or ``ray`` (Ray Data's own
    read_webdataset / read_parquet, regrouped into the plan's batches)."""
    from interrogator.core.batches import Transforms
    from interrogator.core.config import load_config
    from interrogator.engines.ray_engine import connect
    from interrogator.engines.ray_read import offset_dataset, shard_dataset
    from interrogator.runner.planner import make_plan
    import ray
    connect()
    plan = make_plan(load_config(data_path=data_path, batch_size=32, formats=["csv"]), write=False,
                     models_given=True, key=False)
    make = shard_dataset if reader == "ray" else offset_dataset
    ray.data.DataContext.get_current().enable_progress_bars = False
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        ds = make(ray, plan, range(len(plan.batches)), Transforms(clip=keep_nothing), 0.5)
        rows = [(int(row["batch"]), int(row["reread"])) for row in ds.iter_rows()]
        best = max(best, len(plan.files) / (time.perf_counter() - start))
        assert sorted(b for b, _ in rows) == list(range(len(plan.batches)))
        assert reader == "offset" or sum(r for _, r in rows) == 0  # every sample from Ray's rows
    return best


def make_list(path: Path, count: int) -> str:
    with open(path, "w") as f:
        for i in range(count):
            f.write(f"d{i // 10000:04d}/{i:09d}.jpg\n")
    return str(path)


def make_folder(folder: Path, count: int) -> str:
    """A flat folder of ``count`` empty ``.jpg`` files: what the plan lists of a folder is names, not bytes."""
    folder.mkdir()
    for i in range(count):
        os.close(os.open(folder / f"{i:09d}.jpg", os.O_CREAT | os.O_WRONLY, 0o644))
    return str(folder)


def make_many_shards(folder: Path, shards: int, per: int = 10) -> str:
    folder.mkdir()
    data = next(jpegs(1))[1]
    for n in range(shards):
        with tarfile.open(folder / f"{n:05d}.tar", "w") as tar:
            for i in range(per):
                add(tar, f"{n * per + i:09d}.jpg", data)
    return str(folder / f"{{00000..{shards - 1:05d}}}.tar")


def plan_cost(data_path: str, scratch: Path) -> dict:
    output = str(scratch / "plan-output" / "out.csv")
    out = subprocess.run([sys.executable, "-c", PLAN.format(repo=str(REPO), data_path=data_path, output=output)],
                         capture_output=True, text=True, check=True).stdout.split()
    entries, peak, imports, held = int(out[0]), float(out[2]), float(out[3]), float(out[4])
    return {"entries": entries, "seconds": round(float(out[1]), 2), "peak_rss_mib": round(peak),
            "imports_rss_mib": round(imports), "held_bytes_per_entry": round(held * 2**20 / entries)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lists", default="1000000,10000000", help="file-list sizes whose plan is timed")
    parser.add_argument("--folder", type=int, default=1000000, help="empty files in the folder whose plan is timed")
    parser.add_argument("--shards", type=int, default=10000, help="shards of 10 samples whose plan is timed")
    parser.add_argument("--ray", action="store_true", help="also the Ray engine's reader: by offset and Ray's own")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    result = {**header("cpu", "shards.py"), "images": args.images}
    with scratch_folder("bench-shards-") as scratch:
        for kind, data_path in make_inputs(scratch, args.images).items():
            result[f"read_img_s[{kind}]"] = round(read_rate(data_path, args.repeats), 1)
            for reader in ("offset", "ray") if args.ray and kind != "loose files" else ():
                result[f"ray_read_img_s[{kind}, {reader}]"] = round(ray_read_rate(data_path, reader, args.repeats), 1)
        for size in (int(s) for s in args.lists.split(",") if s):
            cost = plan_cost(make_list(scratch / f"list-{size}.txt", size), scratch)
            result[f"plan_s[file list, {size:,} paths]"] = cost["seconds"]
            result[f"plan_peak_rss_mib[file list, {size:,} paths]"] = cost["peak_rss_mib"]
            result[f"plan_held_bytes_per_entry[file list, {size:,} paths]"] = cost["held_bytes_per_entry"]
        if args.folder:
            cost = plan_cost(make_folder(scratch / "folder", args.folder), scratch)
            result[f"plan_s[folder, {args.folder:,} files]"] = cost["seconds"]
            result[f"plan_peak_rss_mib[folder, {args.folder:,} files]"] = cost["peak_rss_mib"]
            result[f"plan_held_bytes_per_entry[folder, {args.folder:,} files]"] = cost["held_bytes_per_entry"]
        if args.shards:
            cost = plan_cost(make_many_shards(scratch / "many", args.shards), scratch)
            result[f"plan_s[{args.shards:,} shards, {cost['entries']:,} samples]"] = cost["seconds"]
            result[f"plan_peak_rss_mib[{args.shards:,} shards]"] = cost["peak_rss_mib"]
        result["plan_imports_rss_mib"] = cost["imports_rss_mib"]  # the same in every fresh process
    write_report(result, args.out, "shards-cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
