"""Host-side costs of a full-size run that no GPU speeds up: prompt assembly and writing the submission.

At 500 img/s on a GPU, 16,000 images take 32 s; every second the host spends serially on top of that is
lost end-to-end throughput. This measures, for N images (default 16,000, the Kaggle test size):

- prompt assembly (``build_prompt``, which counts CLIP tokens to fit 77) with the project's tokenizer and
  with open_clip's own, on captions and tags drawn from the real label lists;
- the submission: building the frame, validating it, writing the CSV.

    python bench/host_costs.py                 # 16,000 images
    python bench/host_costs.py --images 500    # quick
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from interrogator.models.clip import token_lengths, UNCAPPED_CONTEXT  # noqa: E402
from interrogator.core.config import DEFAULT_DICTS  # noqa: E402
from interrogator.runner.labels import read_labels  # noqa: E402
from interrogator.runner.prompt import build_prompt  # noqa: E402
from interrogator.runner.submission import to_frame, validate, write_csv_atomic  # noqa: E402
from interrogator.models.tokenizer import fast_tokenizer  # noqa: E402


def synthetic_parts(n: int, seed: int = 0):
    """n (caption, medium, movement, 3 flavors) drawn from the real label lists."""
    rng = random.Random(seed)
    tables = {name: read_labels(DEFAULT_DICTS / f"{name}.txt") for name in ("mediums", "movements", "flavors")}
    words = [w for label in tables["flavors"][:5000] for w in label.split()]
    return [(" ".join(rng.choices(words, k=rng.randint(6, 14))), rng.choice(tables["mediums"]),
             rng.choice(tables["movements"]), rng.sample(tables["flavors"], 3)) for _ in range(n)]


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return round(time.perf_counter() - start, 3)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16_000)
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args(argv)
    import open_clip

    n = args.images
    parts = synthetic_parts(n)
    simple = open_clip.get_tokenizer("ViT-L-14")
    fast = fast_tokenizer(simple)

    def open_clip_count(texts):
        return token_lengths(simple(list(texts), context_length=UNCAPPED_CONTEXT)).tolist()

    prompts = {}
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": " ".join(["python bench/host_costs.py", *(argv if argv is not None else sys.argv[1:])]),
              "machine": f"cpu ({platform.processor() or platform.machine()})", "images": n}
    for name, count in (("project", fast.count), ("open_clip", open_clip_count)):
        result[f"prompts_{name}_s"] = seconds(lambda: prompts.__setitem__(name, [build_prompt(*p, count) for p in parts]))
    result["prompts_identical"] = prompts["project"] == prompts["open_clip"]

    ids = [f"{i:09x}" for i in range(n)]
    vectors = np.random.default_rng(0).standard_normal((n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    frame = {}
    result["frame_s"] = seconds(lambda: frame.__setitem__("f", to_frame(ids, vectors)))
    result["validate_s"] = seconds(lambda: validate(frame["f"], ids, 384))
    with tempfile.TemporaryDirectory() as folder:
        result["write_csv_s"] = seconds(lambda: write_csv_atomic(frame["f"], Path(folder) / "submission.csv"))
    write_reports(result, Path(args.out))
    return result


def markdown(r: dict) -> str:
    rows = [("machine", r["machine"]), ("date", r["date"]), ("command", f"`{r['command']}`"), ("images", r["images"]),
            ("prompt assembly, project tokenizer", f"{r['prompts_project_s']} s"),
            ("prompt assembly, open_clip tokenizer", f"{r['prompts_open_clip_s']} s"),
            ("same prompts", r["prompts_identical"]),
            ("submission: build frame / validate / write CSV", f"{r['frame_s']} / {r['validate_s']} / {r['write_csv_s']} s")]
    return "| measure | value |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"


def write_reports(result: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "host-costs.json").write_text(json.dumps(result, indent=1) + "\n")
    (folder / "host-costs.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
