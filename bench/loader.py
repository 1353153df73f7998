"""Image loading alone: each batch split over all workers (the project's loader) against one worker per batch.

Decodes N files cycling the 7 samples, with BLIP-2's image processor and CLIP ViT-L-14's preprocess, and
reports when the first batch arrives and the images per second over all of them.

    python bench/loader.py --images 768 --batch-size 128 --workers 2 --repeats 3
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from interrogator.core.images import scan_folder

from interrogator.core.batches import Transforms, image_batches  # noqa: E402
from throughput import image_folder  # noqa: E402


def timed(files, transforms, batches, workers: int, min_part: int):
    start, first = time.perf_counter(), None
    for _ in image_batches(files, batches, transforms, workers, pin_memory=False, min_part=min_part):
        first = first if first is not None else time.perf_counter() - start
    return first, len(files) / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=768)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import open_clip
    from transformers import BlipImageProcessor
    processor = BlipImageProcessor(size={"height": 224, "width": 224})
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        files = scan_folder(image_folder(args.images, Path(scratch))).files
        transforms = Transforms(lambda im: processor(im, return_tensors="pt")["pixel_values"][0],
                                open_clip.image_transform(224, is_train=False))
        compare(files, transforms, args)


def compare(files, transforms: Transforms, args) -> None:
    n, b = args.images, args.batch_size
    batches = [list(range(i, min(i + b, n))) for i in range(0, n, b)]
    print(f"| loader ({n} images, batch {b}, {args.workers} workers) | first batch | images/s |\n| --- | --- | --- |")
    for _ in range(args.repeats):
        for name, min_part in (("one worker per batch", b), ("batch split over workers", 8)):
            first, rate = timed(files, transforms, batches, args.workers, min_part)
            print(f"| {name} | {first:.2f} s | {rate:.0f} |")


if __name__ == "__main__":
    main()
