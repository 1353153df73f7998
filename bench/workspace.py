"""The training-set workspace on a large folder: opening it, a page of thumbnails (the first time, when each is
made, and again, from the cache), the tag table, and a batch edit over 1,000 caption files, with its undo.

    python bench/workspace.py                       # 10,000 images of 256x192 (JPEG), each with a caption file
    python bench/workspace.py --images 200 --edit 50 --out /tmp/b   # a quick check

The folder is made in a temporary folder and removed at the end. Each caption holds 6-12 tags drawn from 500;
the tag ``trigger`` is in exactly ``--edit`` of them, and the batch edit removes it (preview, then apply).
Writes bench/results/workspace-cpu.json and .md.
"""
from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from PIL import Image  # noqa: E402

from report import header, scratch_folder, write_report  # noqa: E402

from interrogator.core.config import load_config  # noqa: E402
from interrogator.workspace.edits import Edit  # noqa: E402
from interrogator.workspace.view import Query  # noqa: E402
from interrogator.workspace.workspace import Workspace  # noqa: E402


def make_folder(folder: Path, images: int, edit: int, seed: int = 0) -> None:
    """``images`` small JPEGs of gradients and noise, and their caption files (module docstring)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    words = [f"tag{i:03d}" for i in range(500)]
    base = Image.effect_noise((256, 192), 40).convert("RGB")
    tagged = set(rng.sample(range(images), edit))
    for i in range(images):
        tint = Image.new("RGB", (256, 192), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        Image.blend(base, tint, 0.6).save(folder / f"{i:06d}.jpg", quality=85)
        tags = rng.sample(words, rng.randint(6, 12)) + (["trigger"] if i in tagged else [])
        rng.shuffle(tags)
        (folder / f"{i:06d}.txt").write_text(", ".join(tags) + "\n", encoding="utf-8")


def timed(fn, repeats: int = 1):
    """(median seconds, the last result)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def measure(folder: Path, work: Path, edit: int, repeats: int) -> dict:
    config = load_config(data_path=str(folder))
    open_s, space = timed(lambda: Workspace(config, work), repeats)
    first_s, page = timed(lambda: space.page(Query(), 1, 100))
    again_s, _ = timed(lambda: space.page(Query(), 1, 100), repeats)
    filter_s, kept = timed(lambda: space.select(Query(tag="trigger")), repeats)
    space.tokens("warm the tokenizer")
    stats_s, stats = timed(lambda: space.stats(), repeats)
    preview_s, plan = timed(lambda: space.preview(Edit("remove-tag", "trigger"), query=Query(tag="trigger")))
    apply_s, written = timed(lambda: space.apply(plan))
    undo_s, _ = timed(space.undo)
    assert len(page.cards) == 100 and len(kept) == edit and written == edit and len(stats.tokens) == len(space.entries)
    return {"open_s": round(open_s, 3), "first_page_100_thumbs_s": round(first_s, 3),
            "page_100_again_s": round(again_s, 4), "filter_by_tag_s": round(filter_s, 4),
            "tag_table_and_tokens_s": round(stats_s, 3), f"preview_{edit}_files_s": round(preview_s, 3),
            f"apply_{edit}_files_s": round(apply_s, 3), f"undo_{edit}_files_s": round(undo_s, 3)}


def measure_app(folder: Path, work: Path, repeats: int) -> dict:
    """The same through the app: the service's workspace (every path checked against the allowed folders) and
    the Dataset tab's page handler (a fresh thumbnail cache: the first page makes its thumbnails again)."""
    from interrogator.app.dataset_tab import DatasetHandlers
    from interrogator.app.paths import Roots
    from interrogator.app.service import Service
    service = Service(load_config(data_path=str(folder)), Roots.of(folder.parent), work=str(work))
    handlers = DatasetHandlers(service)
    filters = ("", "", "", "", "all", "", "name", False)
    open_s, _ = timed(lambda: service.workspace(str(folder), reload=True), repeats)
    first_s, shown = timed(lambda: handlers.show(str(folder), 1, *filters))
    again_s, _ = timed(lambda: handlers.show(str(folder), 1, *filters), repeats)
    assert len(shown[0]) == 100
    return {"app_open_s": round(open_s, 3), "app_first_page_s": round(first_s, 3), "app_page_again_s": round(again_s, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--edit", type=int, default=1_000, help="caption files the batch edit changes")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each repeatable step (the median)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    with scratch_folder("bench-workspace-") as scratch:
        start = time.perf_counter()
        make_folder(scratch / "set", args.images, args.edit)
        made = time.perf_counter() - start
        result = {**header("cpu", "workspace.py"), "images": args.images, "folder_made_s": round(made, 1),
                  **measure(scratch / "set", scratch / "work", args.edit, args.repeats),
                  **measure_app(scratch / "set", scratch / "app-work", args.repeats),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    write_report(result, args.out, "workspace-cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
