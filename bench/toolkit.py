"""CLIP toolkit benchmark: `index` throughput and exact search latency over a large feature store.

    python bench/toolkit.py                           # demo CLIP and ViT-L-14 (random weights), 1M x 768 search
    python bench/toolkit.py --vectors 20000 --index-images 14 --clips demo-tiny-clip   # a quick check

Index throughput runs the project's `build_index` (loader workers, CLIP stage, feature store written) on
the 7 sample images repeated, with the demo CLIP and with the real ViT-L-14 architecture (random weights,
the same compute as real weights). Search latency is `nearest()` over unit-norm random vectors of
ViT-L-14's width (768), fp32, for 1 and 16 queries at k = 20, with the torch backend (the chunked exact
top-k) and, when installed, faiss's exact IndexFlatIP. Writes bench/results/toolkit-<device>.json and .md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import torch  # noqa: E402

from report import header, sync, write_report  # noqa: E402

from interrogator.core.config import load_config  # noqa: E402
from interrogator.tools.features import build_index  # noqa: E402
from interrogator.tools.nearest import nearest  # noqa: E402

SAMPLES = REPO / "samples"


def make_clip_file(name: str, folder: Path) -> Path:
    """A checkpoint of the architecture with random weights, saved like real weights."""
    import open_clip
    from safetensors.torch import save_file
    from interrogator.models.clip_checkpoint import register_model_configs
    register_model_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None)
    path = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def index_rate(name: str, folder: Path, images: int, device: str, batch: int, workers: int) -> float:
    src = folder / "images"
    if not src.exists():
        src.mkdir()
        samples = sorted(SAMPLES.glob("*.png"))
        for i in range(images):
            shutil.copy(samples[i % len(samples)], src / f"{i:06d}.png")
    config_path = folder / f"{name}.json"
    config_path.write_text(json.dumps({"clip_model": name, "clip_path": str(make_clip_file(name, folder)),
                                       "device": device, "batch_size": batch, "num_workers": workers}))
    config = load_config(config_path)
    from interrogator.tools.toolkit import load_toolkit_clip
    clip = load_toolkit_clip(config)
    build_index(config, str(src), str(folder / "warm.safetensors"), progress=False, clip=clip)  # warm-up
    sync(device)
    start = time.perf_counter()
    report = build_index(config, str(src), str(folder / f"{name}-index.safetensors"), progress=False, clip=clip)
    sync(device)
    assert report.encoded == images
    return images / (time.perf_counter() - start)


def search_latency(vectors: int, dim: int, queries: int, backend: str, device: str, repeats: int) -> float:
    gen = torch.Generator().manual_seed(0)
    keys = torch.nn.functional.normalize(torch.randn(vectors, dim, generator=gen), dim=-1).to(device)
    q = torch.nn.functional.normalize(torch.randn(queries, dim, generator=gen), dim=-1).to(device)
    nearest(q, keys, 20, backend)  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        nearest(q, keys, 20, backend)
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clips", default="demo-tiny-clip,ViT-L-14", help="architectures to index with")
    parser.add_argument("--index-images", type=int, default=56)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    result = {**header(args.device, "toolkit.py"), "index_images": args.index_images,
              "batch": args.batch_size, "loader_workers": args.workers, "vectors": args.vectors, "dim": args.dim}
    folder = Path(tempfile.mkdtemp(prefix="bench-toolkit-"))
    try:
        for name in args.clips.split(","):
            result[f"index_img_s[{name}]"] = round(index_rate(name, folder, args.index_images, args.device,
                                                              args.batch_size, args.workers), 2)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    backends = ["torch"]
    try:
        import faiss  # noqa: F401
        backends.append("faiss")
    except ImportError:
        pass
    for backend in backends:
        for queries in (1, 16):
            seconds = search_latency(args.vectors, args.dim, queries, backend, args.device, args.repeats)
            result[f"search_ms[{backend}, {queries} queries]"] = round(seconds * 1000, 1)
    write_report(result, args.out, f"toolkit-{args.device.split(':')[0]}")


if __name__ == "__main__":
    main()
