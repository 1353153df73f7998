"""A property over generated configs and output paths (hypothesis): no run changes, adds or removes a file
outside the set it reports as written (RunResult.files_written), and a refused run changes nothing at all.
The images, the config and a file the user made beside the outputs are among the files a run could reach."""
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import SAMPLES
from interrogator.core.config import EXISTING_TXT, IMAGE_EXTENSIONS, load_config
from interrogator.core.errors import InterrogatorError
from interrogator.runner.loading import load_models
from interrogator.runner.needs import needs_of
from interrogator.runner.pipeline import run

IMAGES = sorted(SAMPLES.glob("*.png"))[:3]
OUTPUTS = ["out/s.csv", "out/notes.csv", "data/s.csv", "config.json", "data/{image}.png", "out/s.png",
           "data/{image}.txt", "out/link.csv"]
PRIOR = [None, b"", b"caf\xe9 au lait", "a caption\n".encode("utf-8")]  # an image's caption file before the run


@pytest.fixture(scope="module")
def setup(demo_models, tmp_path_factory):
    """The models of a caption-mode run, loaded once, and the keys every generated config shares."""
    keys = {"blip_path": str(demo_models.blip_path), "embedding_path": str(demo_models.embedding_path),
            "mode": "caption", "batch_size": 2, "max_new_tokens": 4, "device": "cpu", "num_workers": 0,
            "label_cache": str(tmp_path_factory.mktemp("labels"))}
    return keys, load_models(load_config(None, **keys), needs_of(load_config(None, **keys)))


def snapshot(root: Path) -> dict:
    """Each file's bytes and mode; a link as where it points (a write through it changes its target)."""
    return {p.relative_to(root).as_posix(): ("link", os.readlink(p)) if p.is_symlink()
            else (p.read_bytes(), stat.S_IMODE(p.lstat().st_mode)) for p in root.rglob("*") if p.is_file()}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(formats=st.sets(st.sampled_from(["kaggle", "csv", "jsonl", "txt"]), min_size=1),
       existing=st.sampled_from(EXISTING_TXT), extension=st.sampled_from([".txt", ".caption", ".png", ".json"]),
       txt_dir=st.sampled_from([None, "data", "out", "captions"]), output=st.sampled_from(OUTPUTS),
       prior=st.lists(st.tuples(st.sampled_from(PRIOR), st.booleans()), min_size=3, max_size=3),
       replace=st.booleans(), runs=st.integers(1, 2))
def test_no_run_touches_a_file_it_does_not_report(setup, formats, existing, extension, txt_dir, output, prior,
                                                   replace, runs):
    keys, models = setup
    root = Path(tempfile.mkdtemp(prefix="owned-"))
    try:
        (root / "data").mkdir()
        (root / "out").mkdir()
        (root / "out" / "notes.csv").write_bytes(b"the user's notes\n")
        (root / "out" / "link.csv").symlink_to(root / "out" / "notes.csv")
        for image, (text, read_only) in zip(IMAGES, prior):
            shutil.copy(image, root / "data")
            if text is not None:
                caption = root / (txt_dir or "data") / f"{image.stem}{extension}"
                caption.parent.mkdir(exist_ok=True)
                if not caption.exists():  # the .png extension: the caption file would be the image itself
                    caption.write_bytes(text)
                    if read_only:
                        caption.chmod(0o444)
        config = root / "config.json"
        config.write_text(json.dumps({**keys, "data_path": str(root / "data"), "formats": sorted(formats),
                                      "existing_txt": existing, "txt_extension": extension,
                                      "txt_dir": txt_dir and str(root / txt_dir), "replace_outputs": replace,
                                      "output": str(root / output.format(image=IMAGES[0].stem))}))
        for _ in range(runs):
            before = snapshot(root)
            try:
                result = run(load_config(config), progress=False, models=models)
            except InterrogatorError as exc:
                event(f"refused: {str(exc).split(' ')[0]} {str(exc).split(' ')[1]}")
                assert snapshot(root) == before  # refused: nothing changed, nothing added, nothing removed
                continue
            after = snapshot(root)
            event("ran")
            reported = {Path(os.path.realpath(p)).relative_to(root.resolve()).as_posix() for p in result.files_written}
            changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
            assert changed <= reported, (changed - reported)
            assert not {p for p in reported if Path(p).suffix.lower() in IMAGE_EXTENSIONS or p == "config.json"}
            assert before["out/notes.csv"] == after["out/notes.csv"] or replace
    finally:
        for p in root.rglob("*"):
            if p.is_file() and not p.is_symlink():
                p.chmod(0o644)
        shutil.rmtree(root)
