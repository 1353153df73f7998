"""train-head throughput at real ViT-L-14 feature size (768 -> 384), on planted pairs.

    python bench/head.py                      # 50,000 pairs, linear and MLP-1024 heads, CPU
    python bench/head.py --device cuda --pairs 400000

Runs the project's `train_head` (AdamW, cosine schedule, a validation score per epoch) for a fixed number
of epochs (early stopping off) and reports training pairs per second, validation included, and the
validation score reached on the planted relation. Writes bench/results/head-<device>.json and .md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
from report import header, write_report  # noqa: E402

from interrogator.learn.head import train_head  # noqa: E402


def planted(n: int, dim: int, out: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = x @ rng.standard_normal((out, dim)).astype(np.float32).T
    return x, (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pairs", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", default="0,1024", help="head widths to time (0: linear)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    x, y = planted(args.pairs, args.dim, 384)
    result = {**header(args.device, "head.py"), "pairs": args.pairs, "features": f"{args.dim} -> 384",
              "epochs": args.epochs, "batch": args.batch_size}
    for hidden in (int(h) for h in args.hidden.split(",")):
        start = time.perf_counter()
        trained = train_head(x, y, "bench", "bench", hidden=hidden, epochs=args.epochs, batch_size=args.batch_size,
                             lr=1e-2, patience=args.epochs, device=args.device)
        seconds = time.perf_counter() - start
        name = "linear" if hidden == 0 else f"mlp {hidden}"
        result[f"pairs_s[{name}]"] = round(args.pairs * args.epochs / seconds)
        result[f"val_score[{name}]"] = round(trained.val_score, 4)
    write_report(result, args.out, f"head-{args.device.split(':')[0]}")


if __name__ == "__main__":
    main()
