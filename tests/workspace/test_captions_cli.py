"""The captions-* commands: the workspace's operations from the command line, in-process (cli.main)."""
import json

from interrogator.commands.cli import main
from helpers import CAPTIONS, make_folder, snapshot


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_stats_edit_undo_redo_and_export_from_the_command_line(tmp_path, capsys):
    folder = make_folder(tmp_path / "set")
    work = ["--work", str(tmp_path / "work")]
    code, out, _ = run(capsys, "captions-stats", str(folder), *work, "--top", "2")
    assert code == 0 and out.splitlines() == [
        "images: 7; caption files: 6 (1 missing, 1 empty)",
        "tokens: 0 captions over CLIP's 77; 0-20: 6, 21-40: 0, 41-60: 0, 61-77: 0, 78-150: 0, 151+: 0",
        "solo        3    50.0%", "hat         2    33.3%"]
    original = snapshot(folder)
    code, out, _ = run(capsys, "captions-edit", str(folder), *work, "--add", "sks", "--tag", "hat", "--dry-run")
    assert code == 0 and out.splitlines()[0] == "add 'sks' at the start: 2 of 2 caption files change"
    assert out.splitlines()[-1] == "dry run: nothing was written" and snapshot(folder) == original
    code, out, _ = run(capsys, "captions-edit", str(folder), *work, "--add", "sks", "--tag", "hat")
    assert code == 0 and (folder / "b.txt").read_text() == "sks, 1boy, solo, hat, solo\n"
    assert (folder / "g.txt").read_text() == "sks, solo, hat\n" and (folder / "a.txt").read_bytes() == original["a.txt"]
    assert run(capsys, "captions-undo", str(folder), *work)[1] == "undid: add 'sks' at the start (2 files)\n"
    assert snapshot(folder) == original
    assert run(capsys, "captions-redo", str(folder), *work)[1] == "redid: add 'sks' at the start (2 files)\n"
    code, out, _ = run(capsys, "captions-export", str(folder), *work, "--format", "kohya",
                       "--output", str(tmp_path / "meta.json"))
    assert code == 0 and json.loads((tmp_path / "meta.json").read_text())["g"] == {"caption": "sks, solo, hat"}
    assert len(json.loads((tmp_path / "meta.json").read_text())) == sum(t is not None for t in CAPTIONS.values())


def test_bad_input_is_one_line(tmp_path, capsys):
    folder = make_folder(tmp_path / "set")
    work = ["--work", str(tmp_path / "work")]
    assert run(capsys, "captions-edit", str(folder), *work, "--remove-tag", " ") == (
        2, "", "error: edit remove-tag: give the text\n")
    assert run(capsys, "captions-export", str(folder), *work, "--format", "kohya") == (
        2, "", "error: export kohya: give the output path\n")
    code, _, err = run(capsys, "captions-export", str(folder), *work, "--format", "csv", "--output", str(folder / "a.txt"))
    assert code == 2 and err.startswith(f"error: --output {folder / 'a.txt'} ") and len(err.splitlines()) == 1
    assert run(capsys, "captions-stats", str(tmp_path / "none"), *work) == (
        2, "", f"error: config key 'data_path': not a folder: {tmp_path / 'none'}\n")
    assert run(capsys, "captions-undo", str(folder), *work) == (0, "nothing to undo\n", "")
