"""Hostile inputs, all-or-nothing output, resume after SIGKILL, OOM fallback, low-memory mode."""
import io
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import KILL_ON_THIRD_CAPTION, REPO, SAMPLES, run_cli
from interrogator import load_config, run
from interrogator.core.config import replace
from interrogator.core.record import BatchRecord
from interrogator.models.caption import Captioner
from interrogator.models.clip import Clip
from helpers import SAMPLE_IDS, check_submission


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    for p in SAMPLES.glob("*.png"):
        shutil.copy(p, folder)
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, format="PNG")
    (folder / "truncated.png").write_bytes(buf.getvalue()[:80])
    (folder / "zero.jpg").write_bytes(b"")
    Image.new("RGBA", (40, 30), (0, 128, 255, 100)).save(folder / "rgba.png")
    Image.new("CMYK", (32, 32), (10, 200, 30, 0)).save(folder / "cmyk.jpg")
    Image.new("I;16", (32, 32), 40000).save(folder / "grey16.png")
    Image.new("P", (1, 1)).save(folder / "tiny.gif")
    Image.new("L", (12000, 12000), 90).save(folder / "huge.png", compress_level=1)
    (folder / "text.png").write_text("this is a text file with a .png extension\n")
    (folder / "notes.txt").write_text("not an image, skipped by the folder rule")
    (folder / ".hidden.png").write_bytes(b"skipped: hidden")
    return folder


def saved_stages(work):
    """{batch: the last stage its saved record finished} in a work folder."""
    stages = {}
    for path in sorted(work.glob("batch-*.safetensors")):
        record = BatchRecord.load(path)
        stages[int(path.stem.split("-")[1])] = next(p for p in ("embed", "tag", "caption") if record.done(p))
    return stages


HOSTILE_IDS = sorted(SAMPLE_IDS + ["truncated", "zero", "rgba", "cmyk", "grey16", "tiny", "huge", "text"])


def test_every_image_gets_an_answer(write_config, hostile_folder, tmp_path):
    proc = run_cli("submit", "--config", str(write_config(data_path=str(hostile_folder))), "--no-progress")
    vectors = check_submission(tmp_path / "out" / "submission.csv", HOSTILE_IDS)
    assert "images: 15 done, 3 undecodable (fallback prompt)" in proc.stdout
    for bad in ("text", "truncated", "zero"):
        assert f"  undecodable: {bad}: cannot decode" in proc.stdout
        assert f"{bad}.{'jpg' if bad == 'zero' else 'png'}: cannot decode" in proc.stderr
    # the three undecodable images share the fallback prompt's embedding
    rows = {i: v for i, v in zip(HOSTILE_IDS, vectors)}
    assert np.allclose(rows["text"], rows["zero"]) and np.allclose(rows["text"], rows["truncated"])
    assert not np.allclose(rows["text"], rows["huge"])


def test_strict_turns_undecodable_images_into_an_error(write_config, hostile_folder, tmp_path):
    proc = run_cli("submit", "--config", str(write_config(data_path=str(hostile_folder))), "--strict",
                   "--no-progress", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: --strict: 3 images could not be decoded: text (cannot decode")
    assert not (tmp_path / "out" / "submission.csv").exists()




def test_sigkill_then_rerun_resumes_byte_identical(write_config, tmp_path, monkeypatch):
    reference = tmp_path / "reference.csv"
    config = write_config(batch_size=2)
    run_cli("submit", "--config", str(config), "--output", str(reference), "--no-progress")

    script = KILL_ON_THIRD_CAPTION.format(captioner="Captioner", repo=str(REPO), config=str(config))
    proc = subprocess.run([sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL
    out = tmp_path / "out" / "submission.csv"
    assert not out.exists() and not list(out.parent.glob("*tmp"))  # no partial file at the output path
    (work,) = (out.parent / ".submission.csv.work").iterdir()
    assert saved_stages(work) == {0: "embed", 1: "embed"}

    captioned = []
    original = Captioner.caption
    monkeypatch.setattr(Captioner, "caption", lambda self, px: captioned.append(len(px)) or original(self, px))
    result = run(load_config(config), progress=False)
    assert captioned == [2, 1]  # batches 0 and 1 were not recomputed
    assert result.resumed_batches == 2
    assert out.read_bytes() == reference.read_bytes()
    assert not (out.parent / ".submission.csv.work").exists()


def test_only_settings_that_change_output_change_the_key(write_config, tmp_path):
    from interrogator.core.identity import digest
    from interrogator.runner.planner import identity_of as run_identity
    from interrogator.runner.labels import TABLE_NAMES, label_file
    config = load_config(write_config())
    labels = [label_file(config.dicts, n) for n in TABLE_NAMES]
    key = digest(run_identity(config, labels))
    neutral = dict(output="elsewhere.csv", num_workers=7, low_memory=True, label_cache=str(tmp_path / "other"),
                   data_path=str(tmp_path), blip_model="x", embedding_model="y", device="cpu")
    for name, value in neutral.items():
        assert digest(run_identity(replace(config, **{name: value}), labels)) == key, name
    for name, value in dict(max_flavors=5, batch_size=2, num_beams=2, max_new_tokens=3, dtype="bf16",
                            fallback_prompt="x", chunk_size=3, clip_batch_size=1, embed_batch_size=5).items():
        assert digest(run_identity(replace(config, **{name: value}), labels)) != key, name


def test_injected_oom_is_recovered_by_halving(write_config, tmp_path, monkeypatch, caplog):
    config = load_config(write_config(batch_size=8))
    reference = run(config, progress=False, write=False)

    def refuse_large(method):
        def wrapped(self, pixels, *args, **kwargs):
            if len(pixels) > 4:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (test double)")
            return method(self, pixels, *args, **kwargs)
        return wrapped
    seen = []
    original_caption = Captioner.caption
    monkeypatch.setattr(Captioner, "caption", refuse_large(lambda self, px: seen.append(len(px)) or original_caption(self, px)))
    monkeypatch.setattr(Clip, "encode_images", refuse_large(Clip.encode_images))
    result = run(config, progress=False, write=False)
    assert seen == [4, 3]
    assert "caption: CUDA out of memory at batch 8; retrying at 4 for the rest of the run" in caplog.text
    assert "clip: CUDA out of memory at batch 8; retrying at 4" in caplog.text
    assert result.prompts == reference.prompts
    np.testing.assert_array_equal(result.embeddings, reference.embeddings)


def test_low_memory_gives_the_same_submission(write_config, tmp_path):
    normal = run(load_config(write_config()), progress=False)
    normal_bytes = normal.output.read_bytes()
    low = run(load_config(write_config(low_memory=True)), progress=False)
    assert low.output.read_bytes() == normal_bytes


KILL_LOW_MEMORY_IN_TAG_PHASE = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from interrogator.models.clip import Clip
from interrogator.commands.cli import main
original = Clip.encode_images
calls = []
def encode_images(self, pixels, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, pixels, *args, **kwargs)
Clip.encode_images = encode_images
main(["submit", "--config", {config!r}, "--no-progress"])
"""


def test_low_memory_resumes_inside_its_stages(write_config, tmp_path, monkeypatch):
    reference = tmp_path / "reference.csv"
    config = write_config(batch_size=2, low_memory=True)
    run_cli("submit", "--config", str(config), "--output", str(reference), "--no-progress")
    proc = subprocess.run([sys.executable, "-c", KILL_LOW_MEMORY_IN_TAG_PHASE.format(repo=str(REPO), config=str(config))],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL
    out = tmp_path / "out" / "submission.csv"
    (work,) = (out.parent / ".submission.csv.work").iterdir()
    assert saved_stages(work) == {0: "tag", 1: "caption", 2: "caption", 3: "caption"}

    captioned, encoded = [], []
    original_caption, original_encode = Captioner.caption, Clip.encode_images
    monkeypatch.setattr(Captioner, "caption", lambda self, px: captioned.append(len(px)) or original_caption(self, px))
    monkeypatch.setattr(Clip, "encode_images",
                        lambda self, px, *a: encoded.append(len(px)) or original_encode(self, px, *a))
    run(load_config(config), progress=False)
    assert captioned == [] and encoded == [2, 2, 1]
    assert out.read_bytes() == reference.read_bytes()
