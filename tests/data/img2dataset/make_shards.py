"""Makes the img2dataset shards the stored-input tests read (run once; its output is committed beside it).

img2dataset pins webdataset<0.3 and pandas<3, so it runs in a venv of its own, not the project's:

    python3 -m venv /tmp/i2d && /tmp/i2d/bin/pip install img2dataset pillow
    /tmp/i2d/bin/python tests/data/img2dataset/make_shards.py tests/data/img2dataset

60 small PNGs of plain colours (48-107 px wide) and one file that is not an image, listed by ``file://`` URL in
a CSV (urllib opens them), downloaded by img2dataset into WebDataset shards of 16 samples, twice: with
re-encoding (``raw/`` is ``disable_all_reencoding``: the PNG bytes kept in ``.jpg`` members, the broken file
kept too; ``reencoded/``: JPEGs of 64 px, the broken file left out as ``failed_to_resize``), and once more as
Parquet files with the image bytes (``parquet/``: img2dataset's ``output_format="parquet"``, re-encoding off). The source images
and the URL list are removed; the shards, img2dataset's Parquet and stats files stay as it wrote them.
"""
import csv
import random
import shutil
import sys
from pathlib import Path

from PIL import Image


def sources(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    rows = []
    for i in range(60):
        path = folder / f"img{i:02d}.png"
        Image.new("RGB", (48 + i, 40), (rng.randrange(256), rng.randrange(256), rng.randrange(256))).save(path)
        rows.append((path.resolve().as_uri(), f"caption {i}"))
    (folder / "bad.png").write_bytes(b"not an image at all")
    rows.insert(30, ((folder / "bad.png").resolve().as_uri(), "broken"))
    urls = folder / "urls.csv"
    with open(urls, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["url", "caption"])
        writer.writerows(rows)
    return urls


def main(out: Path) -> None:
    from img2dataset import download
    urls = sources(out / "src")
    for name, reencode, kind in (("raw", False, "webdataset"), ("reencoded", True, "webdataset"),
                                 ("parquet", False, "parquet")):
        shutil.rmtree(out / name, ignore_errors=True)
        download(url_list=str(urls), input_format="csv", url_col="url", caption_col="caption",
                 output_format=kind, output_folder=str(out / name), processes_count=1, thread_count=4,
                 number_sample_per_shard=16, image_size=64, disable_all_reencoding=not reencode,
                 enable_wandb=False, distributor="multiprocessing")
    shutil.rmtree(out / "src")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
