"""data_path as WebDataset shards, Parquet files with image bytes, or a file list: the same answers per key as a
folder of the same images, every engine reading the samples in place; one-line errors before any model loads."""
import io
import json
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import KILL_ON_NTH_CAPTION, REPO, SAMPLES

pytest.importorskip("braceexpand", reason="brace patterns need braceexpand (the test extra has it)")
pytest.importorskip("pyarrow", reason="Parquet inputs and outputs need pyarrow (the test extra has it)")
from interrogator.commands.cli import main
from interrogator.core.config import load_config, replace
from interrogator.runner.pipeline import run

IMAGES = sorted(SAMPLES.glob("*.png"))


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def samples(count: int = 10):
    """(key, image bytes) of ``count`` samples: the 7 pictures in turn, keys with leading zeros (img2dataset's)."""
    return [(f"{i:09d}", IMAGES[i % len(IMAGES)].read_bytes()) for i in range(count)]


def write_shards(folder: Path, items, per_shard: int = 4, extra=()) -> list:
    """img2dataset's layout: ``00000.tar`` ... with ``key.jpg`` (here PNG bytes, as with re-encoding off),
    ``key.txt`` and ``key.json`` per sample; ``extra``: (key, name, bytes) members appended to the last shard."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for n, start in enumerate(range(0, len(items), per_shard)):
        path = folder / f"{n:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for key, data in items[start:start + per_shard]:
                add(tar, f"{key}.jpg", data)
                add(tar, f"{key}.txt", f"alt text {key}".encode())
                add(tar, f"{key}.json", json.dumps({"key": key, "status": "success"}).encode())
            if start + per_shard >= len(items):
                for key, name, data in extra:
                    add(tar, name, data)
        shards.append(path)
    return shards


def folder_of(folder: Path, items) -> Path:
    folder.mkdir(parents=True)
    for key, data in items:
        (folder / f"{key}.png").write_bytes(data)
    return folder


def rows(path: Path) -> dict:
    import pandas as pd
    table = pd.read_csv(path, keep_default_na=False, dtype=str)
    return {r["imgId"]: (r["caption"], r["prompt"]) for r in table.to_dict("records")}


@pytest.fixture
def config(write_config, tmp_path):
    return load_config(write_config(formats=["csv"]))


def run_on(config, data_path, out: Path) -> dict:
    run(replace(config, data_path=str(data_path), output=str(out / "s.csv")), progress=False)
    return rows(out / "s.prompts.csv")


def test_shards_a_brace_pattern_parquet_and_a_list_give_a_folders_answers_per_key(config, tmp_path):
    items = samples(10)
    expected = run_on(config, folder_of(tmp_path / "folder", items), tmp_path / "o-folder")
    write_shards(tmp_path / "shards", items)
    got = run_on(config, tmp_path / "shards" / "{00000..00002}.tar", tmp_path / "o-shards")
    assert got == expected and list(got)[0] == "000000000"  # keys stay strings with their zeros
    assert run_on(config, f"{tmp_path}/shards/00000.tar::{tmp_path}/shards/00001.tar::{tmp_path}/shards/00002.tar",
                  tmp_path / "o-list-of-shards") == expected
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"key": [k for k, _ in items], "jpg": [d for _, d in items]}), tmp_path / "s.parquet",
                   row_group_size=3)
    assert run_on(config, tmp_path / "s.parquet", tmp_path / "o-parquet") == expected
    (tmp_path / "folder" / "list.txt").write_text("".join(f"{k}.png\n" for k, _ in items))
    listed = run_on(config, tmp_path / "folder" / "list.txt", tmp_path / "o-list")  # ids: the paths as listed
    assert {Path(k).stem: v for k, v in listed.items()} == expected and list(listed)[0] == "000000000.png"


def test_an_undecodable_sample_and_one_without_an_image_get_the_fallback_and_are_named(config, tmp_path, caplog):
    items = samples(5)
    shards = write_shards(tmp_path / "shards", items, extra=[("000000098", "000000098.jpg", b"not an image"),
                                                             ("000000099", "000000099.txt", b"alt text only")])
    got = run_on(config, tmp_path / "shards" / "{00000..00001}.tar", tmp_path / "o")
    assert list(got) == [k for k, _ in items] + ["000000098", "000000099"]
    assert got["000000098"][1] == got["000000099"][1] == config.fallback_prompt
    warned = caplog.text
    assert f"{shards[1].name}:000000098: cannot decode" in warned
    assert f"{shards[1].name}:000000099: the sample has no image member (000000099.txt)" in warned


def test_the_engines_read_shards_to_the_same_bytes(write_config, tmp_path, ray_cluster, monkeypatch, capsys, caplog):
    """img2dataset's 4 shards (re-encoding off: 60 images, one file that is not an image, and a sample without an
    image) on the plain run, --shard + merge, Ray and --devices: the same bytes, and per key a folder run's answers
    and, on Ray, img2dataset's Parquet files' answers. Batches of 8 never cross a shard; --shard and --devices
    split by input shard, so each --shard run writes its own shards' outputs, and on Ray the actors write them,
    the shards read by Ray Data's read_webdataset (read_parquet)."""
    shards = i2d_shards(tmp_path / "shards")
    c = write_config(formats=["csv", "kaggle", "shard-parquet", "wds"], batch_size=8,
                     data_path=str(tmp_path / "shards" / "{00000..00003}.tar"))
    assert main(["submit", "--config", str(c), "--output", str(tmp_path / "plain" / "s.csv")]) == 0
    assert "00001.tar:0000114: cannot decode" in caplog.text  # the file that is not an image, named
    for i in (0, 1):
        assert main(["submit", "--config", str(c), "--output", str(tmp_path / "shard" / f"s{i}.csv"),
                     "--shard", f"{i}/2"]) == 0
    assert main(["merge", str(tmp_path / "shard" / "s0.csv"), str(tmp_path / "shard" / "s1.csv"),
                 "--output", str(tmp_path / "shard" / "s.csv"), "--config", str(c)]) == 0
    capsys.readouterr()
    hashed = []
    with monkeypatch.context() as driver:  # on Ray the actors write each shard's outputs, and the driver none;
        driver.setattr("interrogator.runner.finish.write_wds", lambda *a: pytest.fail("the driver wrote a shard"))
        driver.setattr("interrogator.runner.finish.write_shard_parquet", lambda *a: pytest.fail("the driver wrote"))
        driver.setattr("interrogator.runner.finish.file_digest", lambda *a: pytest.fail("the driver hashed a file"))
        driver.setattr("interrogator.core.workdir.unchanged", lambda saved, files: hashed.extend(files) or set())
        assert main(["submit", "--config", str(c), "--engine", "ray", "--ray-address", ray_cluster,
                     "--output", str(tmp_path / "ray" / "s.csv")]) == 0
    assert hashed == []  # nor does it read a sample again: it takes the batches and marks the actors just made
    assert len(list((tmp_path / "ray" / "s.parquet").glob("*/shards/*.json"))) == 8  # the actors' marks
    assert "the shards read by Ray Data's read_webdataset, 0 samples of them by offset" in capsys.readouterr().out
    assert main(["submit", "--config", str(c), "--devices", "cpu,cpu", "--output", str(tmp_path / "devices" / "s.csv")]) == 0
    plain = (tmp_path / "plain" / "s.csv").read_bytes()
    for i, names in enumerate((["00000", "00001"], ["00002", "00003"])):
        assert sorted(p.stem for p in (tmp_path / "shard" / f"s{i}.shards").glob("*.tar")) == names
    import pyarrow.parquet as pq
    for engine in ("shard", "ray", "devices"):
        assert (tmp_path / engine / "s.csv").read_bytes() == plain, engine
        assert (tmp_path / engine / "s.prompts.csv").read_bytes() == (tmp_path / "plain" / "s.prompts.csv").read_bytes()
        for name in ("00000", "00001", "00002", "00003"):  # the outputs per input shard: the same bytes and table
            assert (tmp_path / engine / "s.shards" / f"{name}.tar").read_bytes() == \
                (tmp_path / "plain" / "s.shards" / f"{name}.tar").read_bytes(), (engine, name)
            assert pq.read_table(tmp_path / engine / "s.shards" / f"{name}.parquet").equals(
                pq.read_table(tmp_path / "plain" / "s.shards" / f"{name}.parquet")), (engine, name)
    config = load_config(write_config(formats=["csv"], batch_size=8))
    expected = run_on(config, unpack(shards, tmp_path / "folder"), tmp_path / "o-folder")
    got = rows(tmp_path / "plain" / "s.prompts.csv")
    assert {k: v for k, v in got.items() if k != NO_IMAGE} == expected and len(got) == 62
    assert got[NO_IMAGE][1] == config.fallback_prompt and expected["0000114"][1] == config.fallback_prompt
    c = write_config(formats=["csv"], batch_size=8, data_path=str(I2D / "parquet" / "{00000..00001}.parquet"))
    capsys.readouterr()
    assert main(["submit", "--config", str(c), "--engine", "ray", "--ray-address", ray_cluster,
                 "--output", str(tmp_path / "ray-parquet" / "s.csv")]) == 0
    assert "the shards read by Ray Data's read_parquet, 0 samples of them by offset" in capsys.readouterr().out
    parquet = rows(tmp_path / "ray-parquet" / "s.prompts.csv")  # img2dataset's Parquet of the first 2 shards' samples
    assert parquet == {k: expected[k] for k in parquet} and len(parquet) == 32 and "0000114" in parquet


def test_bad_stored_inputs_are_one_line_before_any_model_loads(write_config, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("interrogator.runner.loading.load_models", lambda *a, **k: pytest.fail("a model loaded"))
    shards = write_shards(tmp_path / "shards", samples(8))
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(shards[0].read_bytes()[:1500])
    write_shards(tmp_path / "twice", samples(3) + samples(1), per_shard=3)  # key 000000000 in shards 0 and 1
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"key": ["a"], "image": [b"x"]}), tmp_path / "other.parquet")
    for name, members in (("apart", ["a.jpg", "b.jpg", "a.txt"]), ("twice", ["a.jpg", "a.txt", "a.jpg"])):
        with tarfile.open(tmp_path / f"{name}.tar", "w") as tar:
            for member in members:
                add(tar, member, IMAGES[0].read_bytes())
    cases = [
        (str(tmp_path / "apart.tar"), f"error: config key 'data_path': the shard {tmp_path / 'apart.tar'} holds the "
         f"members of one sample apart (a.jpg and a.txt, with other samples between them); WebDataset readers need "
         f"a sample's members side by side: make the shard again with its members sorted by name"),
        (str(tmp_path / "twice.tar"), f"error: config key 'data_path': the shard {tmp_path / 'twice.tar'} holds "
         f"a.jpg twice; make it again"),
        (str(tmp_path / "shards" / "{00000..00003}.tar"),
         f"error: config key 'data_path': the shard {tmp_path}/shards/00002.tar does not exist"),
        (str(truncated), f"error: config key 'data_path': the shard {truncated} is not a whole tar file ("),
        (str(tmp_path / "other.parquet"),
         f"error: config key 'image_column': {tmp_path / 'other.parquet'} has no column 'jpg' (its columns: key, image)"),
        (str(tmp_path / "twice" / "{00000..00001}.tar"),
         "error: config key 'data_path': two samples share the key '000000000': 00000.tar:000000000 and "
         "00001.tar:000000000"),
    ]
    for data_path, line in cases:
        c = write_config(formats=["csv"], data_path=data_path)
        assert main(["submit", "--config", str(c)]) == 2, data_path
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(line), (err, line)
    c = write_config(formats=["txt"], data_path=str(shards[0]))
    assert main(["submit", "--config", str(c)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: config key 'formats': txt writes a caption file beside each image, and data_path {shards[0]} holds "
        f"no loose images; give txt_dir, or write csv, jsonl or parquet")


I2D = Path(__file__).resolve().parent.parent / "data" / "img2dataset"  # made by img2dataset itself (make_shards.py)


def unpack(shards, folder: Path) -> Path:
    """Each sample's image member as a loose file ``<key>.jpg`` (its bytes as they are)."""
    folder.mkdir(parents=True)
    for shard in shards:
        with tarfile.open(shard) as tar:
            for info in tar:
                if info.name.endswith(".jpg"):
                    (folder / info.name).write_bytes(tar.extractfile(info).read())
    return folder


NO_IMAGE = "0000399"


def i2d_shards(folder: Path, layout: str = "raw", count: int = 4) -> list:
    """Copies of img2dataset's first ``count`` shards, the last with a sample that has no image (a failed download)."""
    import shutil
    folder.mkdir(parents=True, exist_ok=True)
    shards = [Path(shutil.copy(p, folder)) for p in sorted((I2D / layout).glob("*.tar"))[:count]]
    with tarfile.open(shards[-1], "a") as tar:
        add(tar, f"{NO_IMAGE}.txt", b"a caption without its image")
    return shards


def test_reencoded_img2dataset_shards_give_a_folders_answers_per_key(config, tmp_path):
    """img2dataset with re-encoding on (JPEGs; the file that is not an image left out): its first shard, of 16
    (the raw layout, re-encoding off, is the engines test's input)."""
    shards = i2d_shards(tmp_path, "reencoded", 1)
    expected = run_on(config, unpack(shards, tmp_path / "folder"), tmp_path / "o-folder")
    got = run_on(config, tmp_path / "00000.tar", tmp_path / "o-shards")
    assert {k: v for k, v in got.items() if k != NO_IMAGE} == expected
    assert got[NO_IMAGE][1] == config.fallback_prompt and len(got) == 17


def members(path: Path) -> list:
    """(name, bytes) of every member of a tar, in order."""
    with tarfile.open(path) as tar:
        return [(i.name, tar.extractfile(i).read()) for i in tar if i.isfile()]


def test_per_shard_parquet_and_wds_shards_out(write_config, tmp_path, capsys):
    import shutil
    import pyarrow.parquet as pq
    webdataset = pytest.importorskip("webdataset", reason="webdataset is not installed")
    shards = [Path(shutil.copy(p, tmp_path)) for p in sorted((I2D / "raw").glob("*.tar"))[:2]]
    data_path = str(tmp_path / "{00000..00001}.tar")
    c = write_config(formats=["csv", "shard-parquet", "wds"], data_path=data_path)
    assert main(["submit", "--config", str(c), "--output", str(tmp_path / "out" / "s.csv")]) == 0
    assert f"per shard: 4 files in {tmp_path / 'out' / 's.shards'}" in capsys.readouterr().out  # the ledger not one
    c = write_config(formats=["txt"], data_path=data_path, txt_dir=str(tmp_path / "txt"))
    assert main(["submit", "--config", str(c), "--output", str(tmp_path / "txtrun" / "s.csv")]) == 0
    folder = tmp_path / "out" / "s.shards"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "00000.parquet", "00000.tar", "00001.parquet", "00001.tar"]  # and the ledger of what the tool wrote
    table = rows(tmp_path / "out" / "s.prompts.csv")
    for shard in shards:
        original, new = members(shard), members(folder / shard.name)
        added = [(n, d) for n, d in new if n.endswith((".caption", ".interrogator.json"))]
        assert [m for m in new if m not in added] == original  # every original member, its bytes, its order
        keys = list(dict.fromkeys(n.split(".")[0] for n, _ in original))
        assert [n for n, _ in added] == [f"{k}.{e}" for k in keys for e in ("caption", "interrogator.json")]
        read = list(webdataset.WebDataset(str(folder / shard.name), shardshuffle=False))
        assert [s["__key__"] for s in read] == keys
        for sample in read:
            key = sample["__key__"]
            assert sample["caption"].decode() == (tmp_path / "txt" / f"{key}.txt").read_text().rstrip("\n")
            assert json.loads(sample["interrogator.json"])["prompt"] == table[key][1]
            assert sample["txt"] == dict(original)[f"{key}.txt"]  # img2dataset's alt text, untouched
        parquet = pq.read_table(folder / f"{shard.stem}.parquet").to_pylist()
        assert [r["key"] for r in parquet] == keys and all(isinstance(r["key"], str) for r in parquet)
        assert [(r["caption"], r["prompt"]) for r in parquet] == [table[k] for k in keys]


def test_per_shard_outputs_refuse_a_taken_member_name_and_a_file_not_theirs(write_config, tmp_path, capsys,
                                                                            monkeypatch):
    monkeypatch.setattr("interrogator.runner.loading.load_models", lambda *a, **k: pytest.fail("a model loaded"))
    shards = write_shards(tmp_path / "shards", samples(4))
    c = write_config(formats=["wds"], data_path=str(shards[0]), wds_caption_extension=".txt")
    assert main(["submit", "--config", str(c), "--output", str(tmp_path / "o" / "s.csv")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: config key 'wds_caption_extension': the shard {shards[0]} already holds '<key>.txt' members, which "
        f"the wds output would add again; choose another extension")
    (tmp_path / "o" / "s.shards").mkdir(parents=True)
    (tmp_path / "o" / "s.shards" / "00000.parquet").write_bytes(b"img2dataset's")
    c = write_config(formats=["shard-parquet"], data_path=str(shards[0]))
    assert main(["submit", "--config", str(c), "--output", str(tmp_path / "o" / "s.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: the shard-parquet output of 00000.tar {tmp_path}/o/s.shards/00000.parquet exists "
                          f"and was not written by this tool"), err
    c = write_config(formats=["wds"], data_path=str(tmp_path / "s.parquet"))
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"key": ["a"], "jpg": [b"x"]}), tmp_path / "s.parquet")
    assert main(["submit", "--config", str(c)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: config key 'formats': wds copies each sample's tar members, and data_path {tmp_path / 's.parquet'} "
        f"is Parquet; write shard-parquet")


def test_a_run_killed_in_shard_3_keeps_shards_1_and_2_and_redoes_a_changed_one(write_config, tmp_path, monkeypatch):
    """Four input shards of two batches each; the run is killed as shard 3's second batch starts. Shard 2's alt
    text then changes (its images do not): the rerun leaves shard 1's files as they are, writes shard 2's again
    from the shard as it is now, computes only the three batches never finished, and ends as an uninterrupted
    run."""
    from interrogator.models.caption import Captioner
    shards = write_shards(tmp_path / "shards", samples(16), per_shard=4)
    keys = {"formats": ["csv", "shard-parquet", "wds"], "batch_size": 2,
            "data_path": str(tmp_path / "shards" / "{00000..00003}.tar")}
    assert main(["submit", "--config", str(write_config(**keys, output=str(tmp_path / "ref" / "s.csv")))]) == 0
    config = str(write_config(**keys, output=str(tmp_path / "out" / "s.csv")))
    script = KILL_ON_NTH_CAPTION.format(captioner="Captioner", repo=str(REPO), config=config, nth=6)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    folder = tmp_path / "out" / "s.shards"
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if not p.name.startswith(".")}
    assert sorted(before) == ["00000.parquet", "00000.tar", "00001.parquet", "00001.tar"]
    with tarfile.open(shards[1], "a") as tar:  # shard 2 changes: a second alt text for its last sample
        add(tar, "000000007.de.txt", b"another alt text")

    captioned = []
    original = Captioner.caption
    monkeypatch.setattr(Captioner, "caption", lambda self, px: captioned.append(len(px)) or original(self, px))
    assert main(["submit", "--config", config]) == 0
    assert captioned == [2, 2, 2]  # shard 3's second batch and shard 4's two
    after = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if not p.name.startswith(".")}
    assert {n: after[n] for n in ("00000.parquet", "00000.tar")} == {n: before[n] for n in ("00000.parquet", "00000.tar")}
    assert all(after[n] != before[n] for n in ("00001.parquet", "00001.tar"))
    assert members(folder / "00001.tar")[-3] == ("000000007.de.txt", b"another alt text")
    reference = tmp_path / "ref"
    for name in ("s.prompts.csv", *(f"s.shards/{n}" for n in sorted(after) if n != "00001.tar")):
        assert (tmp_path / "out" / name).read_bytes() == (reference / name).read_bytes(), name
    assert not (tmp_path / "out" / ".s.csv.work").exists()
