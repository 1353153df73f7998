"""Resume that is never stale and never stuck: identity, damaged records, hostile folders and names."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SAMPLES
from interrogator import load_config, run
from interrogator.models.caption import Captioner
from interrogator.commands.cli import main
from interrogator.core.errors import ConfigError
from interrogator.core.record import BatchRecord
from interrogator.core.workdir import work_root


class Interrupted(Exception):
    pass


class CaptionCalls:
    """The batch sizes the captioner saw; with ``fail_at = n`` the n-th call raises Interrupted."""

    def __init__(self):
        self.calls, self.fail_at = [], 0


@pytest.fixture
def captions(monkeypatch):
    seen = CaptionCalls()
    original = Captioner.caption

    def caption(self, pixels):
        seen.calls.append(len(pixels))
        if len(seen.calls) == seen.fail_at:
            raise Interrupted("killed")
        return original(self, pixels)
    monkeypatch.setattr(Captioner, "caption", caption)
    return seen


def interrupted(config, captions, at=2):
    """Run until the at-th caption call raises: the batches before it are saved in the work folder."""
    captions.calls.clear()
    captions.fail_at = at
    with pytest.raises(Interrupted):
        run(config, progress=False)
    captions.fail_at = 0
    captions.calls.clear()
    (key,) = work_root(config.output).iterdir()
    return key


def images_folder(tmp_path, name="images"):
    folder = tmp_path / name
    shutil.copytree(SAMPLES, folder)
    return folder


def fresh_bytes(config, tmp_path):
    """The submission a run with no work folder gives for this config."""
    from interrogator.core.config import replace
    return run(replace(config, output=str(tmp_path / "fresh" / "fresh.csv")), progress=False).output.read_bytes()


# ---- every image answered ---------------------------------------------------------------------------
def test_a_batch_of_only_undecodable_images(write_config, tmp_path, captions):
    folder = images_folder(tmp_path)
    (folder / "00-bad.png").write_bytes(b"not an image")
    (folder / "00-empty.png").write_bytes(b"")
    config = load_config(write_config(data_path=str(folder), batch_size=2))
    result = run(config, progress=False)
    assert sorted(result.failed) == ["00-bad", "00-empty"]
    assert captions.calls == [2, 2, 2, 1]  # the failed batch never reached the captioner
    fallback = result.embeddings[result.image_ids.index("00-bad")]
    np.testing.assert_array_equal(fallback, result.embeddings[result.image_ids.index("00-empty")])
    assert result.prompts[:2] == [config.fallback_prompt] * 2 and result.captions[:2] == ["", ""]
    again = run(config, progress=False)
    assert again.output.read_bytes() == result.output.read_bytes()


# ---- identity ---------------------------------------------------------------------------------------
def _same_mtime(path, action):
    st = path.stat()
    action()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_label_list_edited_in_place_is_not_reused(write_config, tmp_path, small_dicts, captions):
    dicts = tmp_path / "dicts"
    shutil.copytree(small_dicts, dicts)
    config = load_config(write_config(dicts=str(dicts), label_cache=None))
    before = fresh_bytes(config, tmp_path)
    interrupted(config, captions)
    mediums = dicts / "mediums.txt"
    _same_mtime(mediums, lambda: mediums.write_text("\n".join(f"medium number {i}" for i in range(95)) + "\n"))
    after = run(config, progress=False)
    assert after.resumed_batches == 0 and len(captions.calls) == 2
    assert after.output.read_bytes() == fresh_bytes(config, tmp_path) != before


def test_weights_replaced_at_the_same_path_are_not_reused(write_config, tmp_path, demo_models, captions):
    from interrogator.models.demo import build_clip
    clip = tmp_path / "clip.safetensors"
    shutil.copy(demo_models.clip_path, clip)
    config = load_config(write_config(clip_path=str(clip), label_cache=None))
    before = fresh_bytes(config, tmp_path)
    interrupted(config, captions)
    size = clip.stat().st_size
    _same_mtime(clip, lambda: build_clip(clip, seed=1))
    assert clip.stat().st_size == size
    after = run(config, progress=False)
    assert after.resumed_batches == 0
    assert after.output.read_bytes() == fresh_bytes(config, tmp_path) != before


def test_image_rewritten_with_same_size_and_time_is_redone(write_config, tmp_path, captions):
    folder = tmp_path / "bmp"
    folder.mkdir()
    for i, p in enumerate(sorted(SAMPLES.glob("*.png"))):
        Image.open(p).convert("RGB").resize((64, 64)).save(folder / f"{p.stem}.bmp")
    config = load_config(write_config(data_path=str(folder), batch_size=2))
    before = fresh_bytes(config, tmp_path)
    interrupted(config, captions, at=3)  # batches 0 and 1 saved
    first = sorted(folder.iterdir())[0]
    size = first.stat().st_size
    _same_mtime(first, lambda: Image.new("RGB", (64, 64), (250, 0, 0)).save(first))
    assert first.stat().st_size == size
    after = run(config, progress=False)
    assert after.resumed_batches == 1 and captions.calls == [2, 2, 1]  # batch 0 redone, batch 1 reused
    assert after.output.read_bytes() == fresh_bytes(config, tmp_path) != before


def test_settings_that_cannot_change_output_keep_the_work(write_config, tmp_path, demo_models, small_dicts,
                                                           captions):
    from interrogator.core.config import replace
    config = load_config(write_config(batch_size=2, data_path=str(images_folder(tmp_path))))
    before = fresh_bytes(config, tmp_path)
    interrupted(config, captions, at=3)
    moved = {"data_path": tmp_path / "moved-images", "dicts": tmp_path / "moved-dicts",
             "blip_path": tmp_path / "moved-blip"}
    for key, target in moved.items():
        shutil.copytree(getattr(config, key), target, copy_function=shutil.copy2)
    changed = replace(config, num_workers=1, low_memory=True, label_cache=str(tmp_path / "other-cache"),
                      blip_model="renamed", **{k: str(v) for k, v in moved.items()})
    after = run(changed, progress=False)
    assert after.resumed_batches == 2 and captions.calls == [2, 1]
    assert after.output.read_bytes() == before


def test_chunk_size_is_part_of_the_identity(write_config, tmp_path, captions):
    """chunk_size 7 reorders two flavors that tokenize alike (their scores tie up to the last bit)."""
    from interrogator.core.config import replace
    config = load_config(write_config(batch_size=2))
    interrupted(config, captions, at=3)
    changed = replace(config, chunk_size=7)
    after = run(changed, progress=False)
    assert after.resumed_batches == 0
    assert after.output.read_bytes() == fresh_bytes(changed, tmp_path)


def test_other_keys_work_folders_are_removed_after_a_write(write_config, tmp_path, captions):
    from interrogator.core.config import replace
    config = load_config(write_config(batch_size=2))
    old = interrupted(replace(config, max_flavors=1), captions)
    assert old.is_dir()
    run(config, progress=False)
    assert not work_root(config.output).exists()


# ---- damaged records --------------------------------------------------------------------------------
def _wrong_header(path):
    from safetensors.numpy import save
    path.write_bytes(save({}, metadata={"format": "1", "record": json.dumps({"ids": "not a list"})}))


def _rewrite(path, change):
    record = BatchRecord.load(path)
    change(record)
    path.write_bytes(record.to_bytes())


DAMAGE = {
    "empty file": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(os.urandom(300)),
    "cut short": lambda p: p.write_bytes(p.read_bytes()[:-100]),
    "wrong record shape": _wrong_header,
    "wrong array shape": lambda p: _rewrite(p, lambda r: setattr(r, "embeddings", r.embeddings[:, :100].copy())),
    "NaN": lambda p: _rewrite(p, lambda r: r.embeddings.__setitem__((0, 0), np.nan)),
    "stages out of order": lambda p: _rewrite(p, lambda r: setattr(r, "captions", None)),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_damaged_record_is_redone_with_one_warning(write_config, tmp_path, captions, caplog, damage):
    config = load_config(write_config(batch_size=2))
    before = fresh_bytes(config, tmp_path)
    key = interrupted(config, captions, at=3)
    DAMAGE[damage](key / "batch-000000.safetensors")
    after = run(config, progress=False)
    assert captions.calls == [2, 2, 1]  # batch 0 redone, batch 1 reused
    warnings = [r.getMessage() for r in caplog.records if "cannot be read back" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("work folder: batch-000000.safetensors cannot be read back (")
    assert warnings[0].endswith("); redoing that batch")
    assert after.output.read_bytes() == before


# ---- names ------------------------------------------------------------------------------------------
ODD_NAMES = ["a,b", 'quote"d', "NA", "nan", "  lead", "trail ", "#hash", "x_1", "é漢字", "semi;colon", "'single'",
             "back\\slash", "null"]


def test_odd_legal_names_round_trip_through_the_csv(write_config, tmp_path):
    from interrogator.runner.submission import first_id_lost_in_csv, read_submission
    assert first_id_lost_in_csv(ODD_NAMES) is None
    folder = tmp_path / "odd"
    folder.mkdir()
    for name, sample in zip(ODD_NAMES, sorted(SAMPLES.glob("*.png")) * 2):
        shutil.copy(sample, folder / f"{name}.png")
    result = run(load_config(write_config(data_path=str(folder), batch_size=8)), progress=False)
    ids, vectors = read_submission(result.output)
    assert ids == sorted(ODD_NAMES)
    np.testing.assert_array_equal(vectors, result.embeddings)


@pytest.mark.parametrize("raw, says", [(b"bad\xff.png", "is not valid UTF-8"),
                                       (b"new\nline.png", "holds the control character '\\n'"),
                                       (b"tab\t.png", "holds the control character '\\t'"),
                                       (b"bell\x07.png", "holds the control character '\\x07'")])
def test_names_that_cannot_be_ids_are_refused_before_any_model_loads(write_config, tmp_path, capsys, monkeypatch,
                                                                        raw, says):
    folder = images_folder(tmp_path)
    shutil.copy(SAMPLES / "20057f34d.png", os.path.join(os.fsencode(folder), raw))
    monkeypatch.setattr("interrogator.models.embed.load_sentence_model", lambda *a, **k: pytest.fail("a model loaded"))
    code = main(["submit", "--config", str(write_config(data_path=str(folder))), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: config key 'data_path': the file name {os.fsdecode(raw)!r} in {folder} ")
    assert says in err[0]


def test_written_csv_is_read_back_from_disk(tmp_path, monkeypatch):
    import interrogator.runner.submission as submission
    from interrogator.core.errors import SubmissionError
    vectors = np.eye(2, 384, dtype=np.float32)
    original = submission._csv_chunk
    monkeypatch.setattr(submission, "_csv_chunk", lambda *a: original(*a).replace("b_3,", "b_3 ,"))
    with pytest.raises(SubmissionError, match="does not read back|not unique, complete"):
        submission.write_submission(["a", "b"], vectors, tmp_path / "s.csv")
    assert list(tmp_path.iterdir()) == []


# ---- early errors, clean failure ------------------------------------------------------------------
def submit_error(capsys, config):
    code = main(["submit", "--config", str(config), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    return err[-1]


def test_output_that_is_a_folder(write_config, tmp_path, capsys):
    (tmp_path / "sub.csv").mkdir()
    assert submit_error(capsys, write_config(output=str(tmp_path / "sub.csv"))) == (
        f"error: config key 'output': {tmp_path / 'sub.csv'} is a folder; name a file such as "
        f"{tmp_path / 'sub.csv' / 'submission.csv'}")


def test_output_name_too_long_for_its_temp_name(write_config, tmp_path, capsys):
    name = "x" * 240 + ".csv"
    assert submit_error(capsys, write_config(output=str(tmp_path / name))) == (
        f"error: config key 'output': the name '{name}' is too long: its temp and work names need 282 bytes, "
        f"the file system allows 255")


@pytest.mark.parametrize("content, says", [(b"oil\n\xff\xfepaint\n", "is not UTF-8 text (byte 4, line 2)"),
                                           (b"\n   \n\n", "holds no labels (only blank lines)")])
def test_bad_label_file_is_refused_before_any_model_loads(write_config, tmp_path, small_dicts, capsys, monkeypatch,
                                                          content, says):
    dicts = tmp_path / "dicts"
    shutil.copytree(small_dicts, dicts)
    (dicts / "movements.txt").write_bytes(content)
    monkeypatch.setattr("interrogator.models.embed.load_sentence_model", lambda *a, **k: pytest.fail("a model loaded"))
    assert submit_error(capsys, write_config(dicts=str(dicts))) == (
        f"error: config key 'dicts': label file {dicts / 'movements.txt'} {says}")


def test_stale_temp_files_of_killed_writes_are_removed(write_config, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = _dead_pid()
    stale = [out / f".submission.csv.{dead}.abcdefgh.interrogator-tmp",
             tmp_path / "label_cache" / f".mediums-x.safetensors.{dead}.q1w2e3r4.interrogator-tmp"]
    for path in stale:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half")
    alive = out / f".other.csv.{os.getpid()}.abcdefgh.interrogator-tmp"
    alive.write_bytes(b"being written")
    # files of the user's (an editor's swap and backup files, another tool's temps) with a dead pid in them
    users = [out / f".notes.txt.{dead}.abcdefgh.tmp", out / f".draft.{dead}.x.tmp", out / f"a.{dead}.b.tmp"]
    for path in users:
        path.write_bytes(b"mine")
    run(load_config(write_config()), progress=False)
    assert not any(p.exists() for p in stale) and alive.exists()
    assert all(p.read_bytes() == b"mine" for p in users)


def _dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_outputs_follow_the_umask(write_config, tmp_path):
    old = os.umask(0o027)
    try:
        result = run(load_config(write_config()), progress=False)
    finally:
        os.umask(old)
    assert result.output.stat().st_mode & 0o777 == 0o640
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "label_cache").iterdir()} == {0o640}


def test_skipped_entries_are_named_in_a_warning_and_the_summary(write_config, tmp_path, caplog):
    folder = images_folder(tmp_path)
    (folder / "folder.png").mkdir()
    os.symlink(tmp_path / "missing.png", folder / "broken.png")
    os.mkfifo(folder / "pipe.jpg")
    result = run(load_config(write_config(data_path=str(folder))), progress=False)
    expected = "broken.png (broken symlink), folder.png (a folder), pipe.jpg (a FIFO)"
    assert f"skipped 3 entries of {folder} named like images: {expected}" in caplog.text
    assert f"skipped 3 entries named like images: {expected}" in result.summary()
    assert len(result.image_ids) == 7


# ---- full disk --------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 40 KiB tmpfs: room for the work records of 7 images, not for their 2,688-row CSV."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40k", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_for_the_submission_is_one_line(write_config, small_disk, capsys):
    out = small_disk / "submission.csv"
    assert submit_error(capsys, write_config(output=str(out), label_cache=None)) == (
        f"error: cannot write the submission {out}: the disk is full")
    assert [p.name for p in small_disk.iterdir()] == [".submission.csv.work"]  # work kept for a rerun, no temp


def test_full_disk_for_the_label_cache_warns_and_goes_on(write_config, small_disk, tmp_path, caplog):
    result = run(load_config(write_config(label_cache=str(small_disk / "cache"))), progress=False)
    assert result.output.is_file()
    assert f"label cache: cannot save {small_disk / 'cache'}" in caplog.text and "the disk is full" in caplog.text
    assert not [p for p in (small_disk / "cache").iterdir() if p.name.endswith("tmp")]


# ---- prompt fitting ---------------------------------------------------------------------------------
def test_max_flavors_1000_counts_tokens_a_few_times_per_prompt(write_config, monkeypatch):
    from interrogator.models.clip import Clip
    counted = []
    original = Clip.count_tokens
    monkeypatch.setattr(Clip, "count_tokens", lambda self, texts: counted.append(len(texts)) or original(self, texts))
    result = run(load_config(write_config(max_flavors=1000)), progress=False, write=False)
    assert len(counted) <= 7 * 11  # full prompt, then a binary search over 1,003 parts: 1 + log2(1003) each
    assert all(len(p.split(", ")) < 60 for p in result.prompts)


def test_max_flavors_has_an_upper_bound(write_config):
    with pytest.raises(ConfigError, match="config key 'max_flavors': expected a whole number >= 1 and <= 1000, "
                                          "got 1001"):
        load_config(write_config(max_flavors=1001))


def test_a_run_interrupted_by_version_0_2_resumes_after_the_upgrade(write_config, tmp_path, captions):
    """0.2 keyed the work folder by an identity that hashed checkpoints at their edges: its records are adopted."""
    from interrogator.core.identity import digest
    from interrogator.runner.planner import identity_of as run_identity
    from interrogator.runner.needs import mode_label_files
    config = load_config(write_config(batch_size=2))
    before = fresh_bytes(config, tmp_path)
    interrupted(config, captions, at=3)  # batches 0 and 1 saved
    (key,) = work_root(config.output).iterdir()
    legacy = digest(run_identity(config, mode_label_files(config), legacy=True))
    assert legacy != key.name
    key.rename(key.with_name(legacy))  # the folder as 0.2 left it
    after = run(config, progress=False)
    assert after.resumed_batches == 2 and captions.calls == [2, 1]
    assert after.output.read_bytes() == before
