"""One core that every engine and every command runs: the same outputs from every engine, and the core's
promises (one-line errors before any model loads, nothing written, no silent wrong answer) in every command."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, SAMPLES
from helpers import read_outputs
from interrogator.commands.cli import build_parser, main
from interrogator.core.config import load_config, replace

ALL = ["kaggle", "txt", "csv", "jsonl", "parquet"]


def files_under(folder):
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- the engine matrix ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The 7 samples in nested folders, with an undecodable image among them."""
    root = tmp_path_factory.mktemp("tree") / "images"
    samples = sorted(SAMPLES.glob("*.png"))
    for i, path in enumerate(samples):
        folder = root / ("" if i < 2 else "a" if i < 4 else "a/b" if i < 6 else "c")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / path.name)
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return root


@pytest.fixture(scope="module")
def learned(tmp_path_factory, demo_models):
    """A head and a bank on the demo CLIP's weights (random pairs: the engines only need to agree)."""
    import torch
    from interrogator.learn.bank import Bank
    from interrogator.models.clip_checkpoint import resolve_clip
    from interrogator.learn.head import save_head, train_head
    folder = tmp_path_factory.mktemp("learned")
    weights = resolve_clip("demo-tiny-clip", demo_models.clip_path).weights(demo_models.clip_path).identity
    from interrogator.models.clip import load_clip
    dim = load_clip("demo-tiny-clip", str(demo_models.clip_path), "cpu", torch.float32).embed_dim
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, dim)).astype(np.float32)
    y = rng.standard_normal((16, 384)).astype(np.float32)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    save_head(train_head(x, y, "demo-tiny-clip", weights, epochs=2, val_fraction=0.25), str(folder / "head"))
    xs = torch.from_numpy(x / np.linalg.norm(x, axis=1, keepdims=True))
    Bank([str(i) for i in range(16)], xs, torch.from_numpy(y), "demo-tiny-clip", weights).save(str(folder / "bank"))
    return folder


@pytest.fixture
def matrix_config(write_config, tree, learned, tmp_path):
    def make(name, **changes):
        values = dict(data_path=str(tree), recursive=True, negative_prompt=True, formats=ALL, batch_size=2,
                      head_path=str(learned / "head"), bank_path=str(learned / "bank"), blend=[0.6, 0.3, 0.1],
                      intermediate_count=64, output=str(tmp_path / name / "out.csv"), txt_dir=str(tmp_path / name / "txt"))
        values.update(changes)
        path = write_config(**values)
        return path, tmp_path / name
    return make


def test_every_engine_writes_the_same_files(matrix_config, ray_cluster, tmp_path, capsys):
    from interrogator.runner.pipeline import run
    from interrogator.engines.ray_engine import run_ray
    path, plain = matrix_config("plain")
    config = load_config(path)
    result = run(config, progress=False)
    assert set(result.failed) == {"a/broken.png"} and result.negatives is not None
    want = read_outputs(plain)
    assert sorted(want) == sorted([".interrogator-outputs.json", "out.csv", "out.prompts.csv", "out.jsonl",
                                   "out.parquet"]
                                  + [f"txt/{r}" for r in ("a/broken.txt", *(f.replace(".png", ".txt")
                                                                           for f in result.files if "broken" not in f))])
    ids = {line.split(",")[0].rsplit("_", 1)[0] for line in want["out.csv"].decode().splitlines()[1:]}
    assert ids == {p.stem for p in SAMPLES.glob("*.png")} | {"broken"}  # file stems, never relative paths
    rows = [json.loads(line) for line in want["out.jsonl"].decode().splitlines()]
    assert any("/" in r["file"] for r in rows) and all(r["negative_prompt"] for r in rows if not r["failed"])

    run(replace(config, low_memory=True, output=str(tmp_path / "low" / "out.csv"),
                txt_dir=str(tmp_path / "low" / "txt")), progress=False)
    assert read_outputs(tmp_path / "low") == want

    devices, folder = matrix_config("devices")
    capsys.readouterr()
    assert main(["submit", "--config", str(devices), "--devices", "cpu,cpu", "--no-progress"]) == 0
    assert "resumed" not in capsys.readouterr().out  # a fresh run: the device processes made every batch
    assert read_outputs(folder) == want

    run_ray(replace(config, txt_dir=str(tmp_path / "ray" / "txt")), str(tmp_path / "ray-parquet"),
            csv=str(tmp_path / "ray" / "out.csv"), actors=1, progress=False)
    assert read_outputs(tmp_path / "ray") == want

    shards, folder = matrix_config("shards")
    for i in (0, 1):  # each shard writes its own files under its own name; merge writes the run's
        assert main(["submit", "--config", str(shards), "--shard", f"{i}/2", "--format", "kaggle", "--output",
                     str(tmp_path / "shard-out" / f"s{i}.csv"), "--no-progress"]) == 0
    assert main(["merge", str(tmp_path / "shard-out" / "s0.csv"), str(tmp_path / "shard-out" / "s1.csv"),
                 "--output", str(folder / "out.csv"), "--config", str(shards)]) == 0
    assert read_outputs(folder) == want
    assert not [p for p in (tmp_path / "shard-out").iterdir() if p.name.endswith(".work")]  # merged, then removed


def test_strict_refuses_the_same_way_on_every_engine(matrix_config, ray_cluster, tmp_path, capsys):
    """``--strict`` with an undecodable image: exit 2, one line naming it, and nothing written, on every engine
    (on 0.3.0 the Ray engine ignored it and wrote the CSV, and a local run had written the caption files of its
    finished batches). low_memory is a schedule of the plain loop, which ends in the same ``finish``. The work
    folder stays, so the same command without --strict resumes."""
    def strict(name, changes, *extra):
        path, folder = matrix_config(name, **changes)
        code = main(["submit", "--config", str(path), "--strict", "--no-progress", *extra])
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]  # Ray forwards
        # its workers' log lines (the undecodable image's warning) to this stderr too
        written = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                         if p.is_file() and ".work" not in str(p)) if folder.exists() else []
        return code, err, written
    code, err, written = strict("plain", {})
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --strict: 1 images could not be decoded: "
                                                             "a/broken.png (cannot decode")
    assert written == []
    assert strict("devices", {}, "--devices", "cpu,cpu") == (2, err, written)
    assert strict("ray", {}, "--engine", "ray", "--output", str(tmp_path / "ray" / "out.csv"),
                  "--parquet-dir", str(tmp_path / "ray-parquet")) == (2, err, written)
    shards = [strict(f"shard{i}", {}, "--shard", f"{i}/2", "--format", "kaggle", "--output",
                     str(tmp_path / f"shard{i}" / "s.csv"))[:2] for i in (0, 1)]
    assert sorted(shards) == [(0, []), (2, err)]  # the shard that holds the image refuses


def test_precomputed_labels_serve_a_negative_prompt_run(write_config, tmp_path, capsys, monkeypatch):
    config = write_config(negative_prompt=True, intermediate_count=64)
    assert main(["precompute-labels", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "negative: " in out and "flavors: " in out
    from interrogator.runner.pipeline import run
    result = run(load_config(config), progress=False)
    assert set(result.label_cache_hits) == {"mediums", "movements", "flavors", "negative"}
    assert all(result.label_cache_hits.values())


# ---- bad input: one line, exit 2, nothing written, for every subcommand ---------------------------
def bad_arguments(inputs):
    """{subcommand: [(argv, words the error line holds)]}: a subcommand without cases fails the test."""
    c, folder, afile, shard = inputs["config"], inputs["folder"], inputs["file"], inputs["shard"]
    nested = str(afile / "x.csv")
    return {
        "submit": [(["--config", c, "--batch-size", "0"], "--batch-size: expected a whole number >= 1"),
                   (["--config", c, "--engine", "ray", "--actors", "-1"], "--actors: expected a whole number >= 1"),
                   (["--config", c, "--device", "cuda"], "--device: 'cuda' is not available"),
                   (["--config", c, "--device", "gpu"], "--device: expected auto, cpu, cuda or cuda:N"),
                   (["--config", c, "--shard", "2/2"], "--shard: expected i/N with 0 <= i < N"),
                   (["--config", c, "--images", "3:1:7"], "--images: expected 0 <= lo <= hi <= total"),
                   (["--config", c, "--output", folder], "is a folder"),
                   (["--config", c, "--output", nested], "is a file"),
                   (["--config", c, "--engine", "ray", "--parquet-dir", str(afile)], "is a file, not a folder"),
                   (["--config", c, "--format", "xml"], "--format: invalid choice"),
                   (["--config", c, "--records-only"], "--records-only goes with --images")],
        "prompt": [(["--mode", "fastest", afile], "--mode: invalid choice"),
                   ([afile, "--max-flavors", "0"], "--max-flavors: config key 'max_flavors': expected a whole number"),
                   ([afile, "--mxa-flavors", "3"], "unrecognized argument --mxa-flavors; did you mean --max-flavors?"),
                   ([str(afile) + ".png", "--config", c], "no such image or folder")],
        "precompute-labels": [(["--config", c, "--device", "cuda:3"], "--device: 'cuda:3' is not available"),
                              ([], "the following arguments are required: --config")],
        "embed": [(["--prompts", afile, "--output", "o.csv", "--embedding-path", folder, "--batch-size", "-3"],
                   "--batch-size: expected a whole number >= 1"),
                  (["--prompts", afile, "--output", folder, "--embedding-path", folder], "is a folder")],
        "score": [(["--submission", afile, "--prompts", afile, "--embedding-path", folder, "--batch-size", "x"],
                   "--batch-size: expected a whole number >= 1, got 'x'")],
        "merge": [([shard, "--output", folder], "is a folder"), ([shard, "--output", "m.csv"],
                                                                  "2 values per image; a submission holds 384")],
        "tune": [(["--config", c, "--prompts", afile, "--holdout", "1"], "--holdout: expected a number in [0, 1)"),
                 (["--config", c, "--prompts", afile, "--flavor-counts", "abc"],
                  "--flavor-counts: expected whole numbers >= 1 separated by commas"),
                 (["--config", c, "--prompts", afile, "--modes", "seed,nope"], "--modes: expected some of"),
                 (["--config", c, "--prompts", afile, "--show", "0"], "--show: expected a whole number >= 1")],
        "make-demo-models": [(["--folder", str(afile)], "--folder: " + f"{afile} is a file, not a folder")],
        "app": [(["--config", c, "--port", "0"], "--port: expected a whole number >= 1"),
                (["--config", c, "--max-upload-mb", "-1"], "--max-upload-mb: expected a whole number >= 1"),
                (["--config", c, "--device", "gpu"], "--device: expected auto, cpu, cuda or cuda:N")],
        "captions-stats": [([str(afile)], f"config key 'data_path': not a folder: {afile}"),
                           ([folder, "--top", "-1"], "--top: expected a whole number >= 0"),
                           ([folder, "--state", "nope"], "--state: invalid choice")],
        "captions-edit": [([folder], "one of the arguments --add --remove-tag"),
                          ([folder, "--remove-tag", " "], "edit remove-tag: give the text"),
                          ([folder, "--add", "x", "--at", "middle"], "--at: invalid choice"),
                          ([folder, "--add", "x"], "no images")],
        "captions-undo": [([folder], "no images")],
        "captions-redo": [([folder, "--txt-extension", "txt"], "--txt-extension: config key 'txt_extension'")],
        "captions-export": [([folder, "--format", "zip"], "--format: invalid choice"),
                            ([folder, "--format", "csv", "--output", folder], "is a folder")],
        "draw": [(["--config", c, "--prompt", "x", "--size", "64"], "--size: expected 2 arguments"),
                 (["--config", c, "--prompt", "x", "--steps", "0"], "--steps: expected a whole number >= 1"),
                 (["--config", c, "--prompt", "x", "--noise", "-1", "0"], "--noise: expected a number in [0, inf]"),
                 (["--config", c, "--prompt", "x", "--noise", "0.3", "0.1"], "--noise and --crop-scale take LOW HIGH"),
                 (["--config", c, "--prompt", "x", "--out", afile], "is a file, not a folder"),
                 (["--config", c, "--prompt", "x", "--video", "avi"], "--video: invalid choice")],
        "convert-vqgan": [(["--vqgan", folder, "--out", afile], "is a file, not a folder"),
                          (["--vqgan", folder, "--out", str(inputs["folder"]) + "/new"], "holds no taming checkpoint")],
        "index": [(["--config", c, "--images", folder, "--out", folder], "is a folder")],
        "features": [(["--config", c, "--images", folder, "--out", nested], "is a file")],
        "search": [(["--index", afile, "--text", "x", "-k", "0"], "-k: expected a whole number >= 1"),
                   (["--index", afile, "--text", "x", "--backend", "annoy"], "--backend: invalid choice")],
        "classify": [(["--config", c, "--images", folder, "--labels", afile, "--template", "a photo"],
                      "--template: expected a template with exactly one '{}'"),
                     (["--config", c, "--images", folder, "--labels", afile, "--template", "{} and {}"],
                      "--template: expected a template with exactly one '{}'"),
                     (["--config", c, "--images", folder, "--labels", afile, "--template", "a {x}"],
                      "--template: expected a template with exactly one '{}'"),
                     (["--config", c, "--images", folder, "--labels", afile, "--threshold", "1.5"],
                      "--threshold: expected a number in [0, 1]"),
                     (["--config", c, "--images", folder, "--labels", afile, "--output", folder], "is a folder")],
        "similarity": [(["--config", c, "--images", afile, "--texts", "x", "--output", folder], "is a folder"),
                       (["--config", c, "--images", afile, "--texts", "x", "--plot", nested], "is a file")],
        "rerank": [(["--config", c, "--prompt", "x", "--images", folder, "--best", "-2", "--copy-to", "best"],
                    "--best: expected a whole number >= 1"),
                   (["--config", c, "--prompt", "x", "--images", folder, "--best", "2"], "--best needs --copy-to"),
                   (["--config", c, "--prompt", "x", "--images", folder, "--output", folder], "is a folder")],
        "finetune-clip": [(["--config", c, "--pairs", afile, "--out", "ft", "--epochs", "0"],
                           "--epochs: expected a whole number >= 1"),
                          (["--config", c, "--pairs", afile, "--out", "ft", "--lr", "nan"],
                           "--lr: expected a finite number > 0")],
        "train-head": [(["--config", c, "--pairs", afile, "--out", "h", "--val-fraction", "2"],
                        "--val-fraction: expected a number in [0, 1]"),
                       (["--config", c, "--pairs", afile, "--out", str(afile)], "is a file, not a folder")],
        "build-bank": [(["--config", c, "--pairs", afile, "--out", str(afile)], "is a file, not a folder")],
        "tune-blend": [(["--config", c, "--prompts", afile, "--step", "0"], "--step: expected a number in (0, 1]"),
                       (["--config", c, "--prompts", afile, "--step", "1.5"], "--step: expected a number in (0, 1]")],
    }


def subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(action.choices)


def test_every_bad_argument_of_every_subcommand_is_one_line(write_config, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("interrogator.models.embed.load_sentence_model", lambda *a, **k: pytest.fail("a model loaded"))
    inputs_dir = tmp_path / "inputs"
    inputs_dir.mkdir()
    afile = inputs_dir / "afile.txt"
    afile.write_text("imgId,prompt\na,b\n")
    shard = inputs_dir / "two-values.csv"
    shard.write_text("imgId_eId,val\na_0,0.6\na_1,0.8\n")
    (inputs_dir / "folder").mkdir()
    inputs = {"config": str(write_config()), "folder": str(inputs_dir / "folder"), "file": afile, "shard": str(shard)}
    cases = bad_arguments(inputs)
    assert sorted(cases) == subcommands(), "every subcommand needs bad-argument cases here"
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = files_under(tmp_path)
    for command, rows in cases.items():
        for argv, words in rows:
            argv = [str(a) for a in argv]
            try:
                code = main([command, *argv])
            except SystemExit as exit_:
                code = exit_.code
            err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]  # Ray forwards
        # its workers' log lines (the undecodable image's warning) to this stderr too
            assert code == 2, (command, argv, err)
            assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], (command, argv, err)
            assert files_under(tmp_path) == before and not any(work.iterdir()), (command, argv)


def test_a_bug_is_still_one_line_with_the_way_to_its_traceback(capsys, monkeypatch, write_config):
    import interrogator.commands.cli as cli
    import interrogator.commands.run_cli as run_cli
    monkeypatch.setattr(run_cli, "cmd_merge", lambda args: {}["no such key"])
    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_merge(parser(), run_cli))
    assert main(["merge", "x.csv", "--output", "y.csv"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unexpected KeyError: 'no such key' (rerun with --debug for the traceback)"]


def _with_merge(parser, cli):
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    action.choices["merge"].set_defaults(func=cli.cmd_merge)
    return parser


# ---- each class of the promises, seen failing before the fix -------------------------------------
def test_two_images_that_would_write_one_txt_are_an_error_naming_both(write_config, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("interrogator.models.embed.load_sentence_model", lambda *a, **k: pytest.fail("a model loaded"))
    folder = tmp_path / "imgs" / "sub"
    folder.mkdir(parents=True)
    first = sorted(SAMPLES.glob("*.png"))[0]
    shutil.copy(first, folder / "a.png")
    from PIL import Image
    Image.open(first).convert("RGB").save(folder / "a.jpg")
    config = write_config(data_path=str(tmp_path / "imgs"), recursive=True, formats=["txt"])
    assert main(["submit", "--config", str(config), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: the .txt of sub/a.jpg and the .txt of sub/a.png would both be "
                                               f"written to {folder / 'a.txt'}; rename one image")


def _unshare_works():
    return shutil.which("unshare") and subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare -rm to mount a folder read-only")
def test_txt_beside_images_in_a_read_only_folder_fails_before_any_work(write_config, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(SAMPLES, images)
    config = write_config(data_path=str(images), formats=["kaggle", "txt"])
    script = (f"mount --bind {images} {images} && mount -o remount,ro,bind {images} && "
              f"{sys.executable} -m interrogator submit --config {config} --no-progress")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: config key 'data_path': the .txt outputs: cannot write in folder {images}: it is read-only"]
    assert not (tmp_path / "out").exists()  # no CSV, no work folder: it stopped before any model loaded


def test_txt_dir_that_is_a_file_and_an_infinite_blend_weight_fail_before_any_work(write_config, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    config = write_config(formats=["txt"], txt_dir=str(tmp_path / "afile"))
    assert main(["submit", "--config", str(config), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: config key 'txt_dir': the .txt outputs: cannot write in "
                                               f"folder {tmp_path / 'afile'}: {tmp_path / 'afile'} is a file")
    (tmp_path / "inf.json").write_text(json.dumps({"blend": [float("inf"), 0, 1]}))
    assert main(["submit", "--config", str(tmp_path / "inf.json"), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: config key 'blend': expected three finite weights >= 0 (prompt, head, bank), not all 0, "
        f"got [inf, 0, 1] (in {tmp_path / 'inf.json'})")


def test_a_config_that_is_not_utf8_is_one_line(tmp_path, capsys):
    path = tmp_path / "latin1.json"
    path.write_bytes('{"fallback_prompt": "caf\xe9"}'.encode("latin-1"))
    assert main(["submit", "--config", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: config file {path} is not UTF-8 text (byte 24); save it as UTF-8"


def test_checkpoint_identity_sees_a_change_in_the_middle_and_is_hashed_once(tmp_path, monkeypatch):
    from interrogator import identity
    path = tmp_path / "weights.bin"
    data = bytearray(np.random.default_rng(0).integers(0, 255, 5 << 20, dtype=np.uint8).tobytes())
    path.write_bytes(bytes(data))
    before, legacy = identity.content_identity(path), identity.legacy_file_identity(path, with_mtime=False)
    st = path.stat()
    data[len(data) // 2] ^= 1  # a middle layer changed: same size, same first and last MiB, same mtime
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert identity.legacy_file_identity(path, with_mtime=False) == legacy  # what the old key could not see
    after = identity.content_identity(path)
    assert after != before
    identity._MEMO.clear()
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: (reads.append(str(p)), real_open(p, *a, **k))[1])
    assert identity.content_identity(path) == after and str(path) not in reads  # remembered: not read again


def test_tune_refuses_a_split_with_an_empty_side_and_counts_unmatched_prompts(write_config, tmp_path, capsys,
                                                                              monkeypatch, caplog):
    import interrogator.models.caption as caption
    monkeypatch.setattr("interrogator.models.embed.load_sentence_model", lambda *a, **k: pytest.fail("a model loaded"))
    monkeypatch.setattr("interrogator.runner.loading.load_captioner", lambda *a, **k: pytest.fail("a model loaded"))
    prompts = tmp_path / "prompts.csv"
    prompts.write_text((SAMPLES / "prompts.csv").read_text() + "nosuchimage,a prompt\nnorthis,another\n")
    config = write_config()
    assert main(["tune", "--config", str(config), "--prompts", str(prompts), "--holdout", "0.05",
                 "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --holdout 0.05: of 7 labelled images it holds out 0; both the "
                                               "ranked and the held-out images need at least one")
    assert "tune: 2 of the 9 prompts in" in caplog.text and "'northis', 'nosuchimage'" in caplog.text


# ---- layout ---------------------------------------------------------------------------------------
def test_the_documented_import_paths_are_the_modules_themselves(monkeypatch):
    import importlib
    import warnings
    from interrogator import _aliases
    for old, new in _aliases.ALIASES.items():
        sys.modules.pop(old, None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert importlib.import_module(old) is importlib.import_module(new), old
        assert [str(w.message) for w in caught if w.category is DeprecationWarning] == [
            f"{old} is deprecated: import {new} (the old name goes in interrogator 0.5.0)"], old
    from interrogator.ray_engine import InterrogateActor, read_output, run_ray  # noqa: F401
    from interrogator.toolkit import classify, rerank, search, similarity  # noqa: F401
    from interrogator.features import build_index  # noqa: F401
    from interrogator.finetune import finetune_clip  # noqa: F401
    from interrogator.pipeline import run
    import interrogator.stages as old_stages
    import interrogator.runner.stages as stages
    monkeypatch.setattr(old_stages, "run_stages", "patched")
    assert stages.run_stages == "patched" and run.__module__ == "interrogator.runner.pipeline"
    assert InterrogateActor.__module__ == "interrogator.engines.ray_engine"  # what a pickle names
