"""Output formats: txt beside images (never overwriting), csv, jsonl, parquet; resume after a kill; recursive ids."""
import json
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import KILL_ON_THIRD_CAPTION, REPO, SAMPLES
from interrogator.commands.cli import main
from interrogator.core.config import load_config
from interrogator.runner.pipeline import run

ALL = ["kaggle", "txt", "csv", "jsonl", "parquet"]


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(SAMPLES, folder)
    return folder


def outputs_of(folder, stem="out"):
    """Every output file's bytes (parquet: its table), by name."""
    import pyarrow.parquet as pq
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            rel = path.relative_to(folder).as_posix()
            found[rel] = pq.read_table(path).to_pylist() if path.suffix == ".parquet" else path.read_bytes()
    return found




def test_every_format_resumes_after_a_kill_with_identical_content(write_config, tmp_path, images):
    pytest.importorskip("pyarrow")
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = write_config(batch_size=2, data_path=str(images), formats=ALL, output=str(ref_dir / "out.csv"),
                       txt_dir=str(ref_dir / "txt"))
    assert main(["submit", "--config", str(ref), "--no-progress"]) == 0
    cfg = tmp_path / "killed.json"
    values = json.loads(ref.read_text())
    values.update(output=str(run_dir / "out.csv"), txt_dir=str(run_dir / "txt"))
    cfg.write_text(json.dumps(values))
    script = KILL_ON_THIRD_CAPTION.format(captioner="Captioner", repo=str(REPO), config=str(cfg))
    proc = subprocess.run([sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL
    # the caption files of the two finished batches were written as each finished; nothing else was
    assert not (run_dir / "out.jsonl").exists()
    finished = {p.name: p.stat().st_mtime_ns for p in (run_dir / "txt").iterdir()}
    assert len(finished) == 4
    result = run(load_config(cfg), progress=False)
    assert result.resumed_batches == 2
    assert {n: (run_dir / "txt" / n).stat().st_mtime_ns for n in finished} == finished  # not rewritten
    want, got = outputs_of(ref_dir), outputs_of(run_dir)
    assert sorted(want) == sorted(got) == sorted(
        ["out.csv", "out.prompts.csv", "out.jsonl", "out.parquet"] + [f"txt/{p.stem}.txt" for p in SAMPLES.glob("*.png")])
    assert got == want
    rows = [json.loads(line) for line in (run_dir / "out.jsonl").read_text().splitlines()]
    assert [r["imgId"] for r in rows] == sorted(p.stem for p in SAMPLES.glob("*.png"))
    assert all((run_dir / "txt" / f"{r['imgId']}.txt").read_text() == r["prompt"] + "\n" for r in rows)
    table = got["out.parquet"]
    assert np.allclose([len(r["embedding"]) for r in table], 384)
    assert table[0]["prompt"] == rows[0]["prompt"] and table[0]["flavors"] == rows[0]["flavors"]


def test_txt_beside_images_never_overwrites_unless_asked(write_config, images, caplog):
    first = sorted(images.glob("*.png"))[0]
    (images / f"{first.stem}.txt").write_text("my own caption\n")
    config = write_config(data_path=str(images), formats=["txt"])
    result = run(load_config(config), progress=False)
    assert result.written["txt"] == {"written": 6, "unchanged": 0, "kept": 1}
    assert (images / f"{first.stem}.txt").read_text() == "my own caption\n"
    assert "txt: 1 existing caption files hold other text and were kept (existing_txt: overwrite" in caplog.text
    again = run(load_config(config), progress=False)
    assert again.written["txt"] == {"written": 0, "unchanged": 6, "kept": 1}
    assert main(["submit", "--config", str(config), "--format", "txt", "--overwrite", "--no-progress"]) == 0
    assert (images / f"{first.stem}.txt").read_text() == again.prompts[0] + "\n"


def test_recursive_ids_are_relative_paths_and_kaggle_needs_unique_stems(write_config, tmp_path, capsys):
    folder = tmp_path / "tree"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    samples = sorted(SAMPLES.glob("*.png"))
    shutil.copy(samples[0], folder / "a" / "x.png")
    shutil.copy(samples[1], folder / "b" / "x.png")
    shutil.copy(samples[2], folder / "top.png")
    config = write_config(data_path=str(folder), recursive=True, formats=["jsonl", "txt"])
    result = run(load_config(config), progress=False)
    assert result.image_ids == ["a/x.png", "b/x.png", "top.png"]
    assert (folder / "a" / "x.txt").read_text() == result.prompts[0] + "\n"
    lines = [json.loads(x) for x in (tmp_path / "out" / "submission.jsonl").read_text().splitlines()]
    assert [r["file"] for r in lines] == ["a/x.png", "b/x.png", "top.png"]
    clash = write_config(data_path=str(folder), recursive=True, formats=["kaggle"])
    assert main(["submit", "--config", str(clash), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: config key 'formats': the kaggle format needs unique file stems, and 'a/x.png' and 'b/x.png' "
        "share 'x'; leave kaggle out of formats or rename one")


def test_negative_prompt_beside_the_prompt_equals_the_negative_mode(write_config, tmp_path):
    from interrogator.core.config import replace
    dicts = tmp_path / "dicts"
    shutil.copytree(load_config(write_config()).dicts, dicts)
    shutil.copy(REPO / "dicts" / "negative.txt", dicts)
    base = load_config(write_config(dicts=str(dicts), max_flavors=4, min_flavors=1, intermediate_count=32))
    run(replace(base, negative_prompt=True, formats=["jsonl"]), progress=False)
    alone = run(replace(base, mode="negative", output=str(tmp_path / "neg.csv")), progress=False)
    rows = [json.loads(x) for x in (tmp_path / "out" / "submission.jsonl").read_text().splitlines()]
    assert [r["negative_prompt"] for r in rows] == alone.prompts
    assert [r["prompt"] for r in rows] == run(base, progress=False, write=False).prompts


def test_the_competition_layout_writes_caption_files_beside_the_images(write_config, tmp_path):
    """data_path holding only images/: the caption files go beside the images, and ``file`` names images/."""
    import json
    import shutil
    from interrogator.core.config import load_config
    from interrogator.runner.pipeline import run
    competition = tmp_path / "competition"
    shutil.copytree(SAMPLES, competition / "images", ignore=shutil.ignore_patterns("*.csv"))
    result = run(load_config(write_config(data_path=str(competition), formats=["txt", "jsonl", "kaggle"],
                                          output=str(tmp_path / "out" / "s.csv"))), progress=False)
    stems = sorted(p.stem for p in SAMPLES.glob("*.png"))
    assert result.files == [f"images/{s}.png" for s in stems] and result.kaggle_ids == stems
    assert sorted(p.name for p in competition.iterdir()) == ["images"]  # nothing beside the images/ folder
    assert sorted(p.name for p in (competition / "images").glob("*.txt")) == [f"{s}.txt" for s in stems]
    rows = [json.loads(line) for line in (tmp_path / "out" / "s.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["file"] for r in rows] == [f"images/{s}.png" for s in stems]
