"""Helpers only the tests use (the package keeps none of its own for them)."""
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from PIL import Image

from interrogator.core.images import ImageFile, scan_folder
from interrogator.core.shards import select_range


def list_images(folder) -> List[ImageFile]:
    """The images of a folder, sorted by id (``scan_folder`` without the skipped entries)."""
    return scan_folder(Path(folder)).files


def select(files: Sequence[ImageFile], batch_size: int, shard: Optional[Tuple[int, int]] = None,
           images: Optional[Tuple[int, int, int]] = None) -> List[ImageFile]:
    """The files of ``--shard i/N`` or of ``--images lo:hi:total``; all of them without either."""
    lo, hi = select_range(len(files), batch_size, shard, images)
    return list(files[lo:hi])


def captioning(blip_path: str, **keys):
    """The captioner section of a config naming ``blip_path`` and these keys (what load_captioner takes)."""
    from interrogator.core.config import load_config
    return load_config(None, blip_path=blip_path, **keys).captioning


SAMPLE_IDS = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "samples").glob("*.png"))


def check_submission(path, ids):
    """A submission CSV's header, ids in order, and finite unit vectors; the vectors."""
    import numpy as np
    import pandas as pd
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["imgId_eId", "val"]
    assert frame.imgId_eId.tolist() == [f"{i}_{e}" for i in ids for e in range(384)]
    vectors = frame.val.to_numpy(np.float64).reshape(len(ids), 384)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    return vectors


def demo_config(folder, demo_models, dicts, name: str = "config.json", **keys):
    """A config file in ``folder`` for the demo models on the 7 samples (CPU, small batches); ``keys`` override."""
    import json
    values = {"blip_path": str(demo_models.blip_path), "clip_model": "demo-tiny-clip",
              "clip_path": str(demo_models.clip_path), "embedding_path": str(demo_models.embedding_path),
              "dicts": str(dicts), "data_path": str(Path(__file__).resolve().parent.parent / "samples"),
              "label_cache": str(Path(folder) / "cache"), "batch_size": 4, "max_new_tokens": 6, "device": "cpu",
              "num_workers": 0, **keys}
    path = Path(folder) / name
    path.write_text(json.dumps(values))
    return path


def read_outputs(folder):
    """Every file under folder by relative name: its bytes, Parquet as a table (its footer names the writer's
    version), and the ledger of outputs (core/owned.py) as the names it records (it holds their times)."""
    import json
    import pyarrow.parquet as pq
    from interrogator.core.owned import LEDGER
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): pq.read_table(p).to_pylist() if p.suffix == ".parquet"
            else sorted(json.loads(p.read_text())) if p.name == LEDGER
            else p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- a small captioned folder (the workspace's and the Dataset tab's tests) --------------------------
CAPTIONS = {  # image name -> caption file text (None: no caption file)
    "a.png": "1girl, solo, smile",
    "b.png": "1boy, solo, hat, solo",
    "c.png": "a photo of a cat, cat, outdoors, general",
    "d.png": "landscape, mountains, explicit",
    "e.png": "",
    "f.png": None,
    "g.jpg": "solo, hat",
}


def make_folder(folder: Path, captions=CAPTIONS, size=(40, 30), sources: Sequence[Path] = ()) -> Path:
    """The images of ``captions`` (plain colours, or the pictures of ``sources`` in turn) with their caption files."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, text) in enumerate(captions.items()):
        if sources:
            Image.open(sources[i % len(sources)]).convert("RGB").save(folder / name)
        else:
            Image.new("RGB", size, (i * 30, 200 - i * 20, 90)).save(folder / name)
        if text is not None:
            (folder / name).with_suffix(".txt").write_bytes(text.encode("utf-8") + b"\n")
    return folder


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
