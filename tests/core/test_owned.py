"""The tool writes only what it owns: no command writes over an input image, the config, a label list or a
checkpoint, and none writes a file with an image extension (core/owned.py). Each case is one line, exit 2,
before any model loads, and every input keeps its bytes."""
import hashlib
import shutil

import pytest

from conftest import SAMPLES
from interrogator.commands.cli import main
from interrogator.core.errors import ConfigError


@pytest.fixture
def inputs(write_config, tmp_path, demo_models, small_dicts):
    """A folder of images, a config naming it, prompts and pairs CSVs; the targets a write must never touch."""
    data = tmp_path / "data"
    shutil.copytree(SAMPLES, data)
    config = write_config(data_path=str(data))
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("imgId,prompt\n20057f34d,a cat\n", encoding="utf-8")
    image = data / "20057f34d.png"
    targets = {"an input image": image, "the config": config, "a label list": small_dicts / "mediums.txt",
               "a checkpoint": demo_models.clip_path}
    return config, prompts, data, targets


def digests(paths):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


COMMANDS = {  # a command that writes, with its output option last
    "submit": lambda c, p, d: ["submit", "--config", str(c), "--output"],
    "embed": lambda c, p, d: ["embed", "--prompts", str(p), "--config", str(c), "--output"],
    "merge": lambda c, p, d: ["merge", str(p), "--config", str(c), "--output"],
    "tune": lambda c, p, d: ["tune", "--config", str(c), "--prompts", str(p), "--output"],
    "tune-blend": lambda c, p, d: ["tune-blend", "--config", str(c), "--prompts", str(p), "--output"],
    "classify": lambda c, p, d: ["classify", "--config", str(c), "--images", str(d), "--labels", str(p), "--output"],
    "rerank": lambda c, p, d: ["rerank", "--config", str(c), "--images", str(d), "--prompt", "a cat", "--output"],
    "similarity": lambda c, p, d: ["similarity", "--config", str(c), "--images", str(d / "227ef0887.png"),
                                   "--texts", "a", "--output"],
    "index": lambda c, p, d: ["index", "--config", str(c), "--images", str(d), "--out"],
    "search": lambda c, p, d: ["search", "--index", str(p), "--text", "a cat", "--output"],
    "search --sheet": lambda c, p, d: ["search", "--index", str(p), "--text", "a cat", "--sheet"],
    "classify --kept": lambda c, p, d: ["classify", "--config", str(c), "--images", str(d), "--labels", str(p),
                                        "--output", str(d.parent / "k.csv"), "--kept"],
    "similarity --plot": lambda c, p, d: ["similarity", "--config", str(c), "--images", str(d / "227ef0887.png"),
                                          "--texts", "a", "--plot"],
    "build-bank": lambda c, p, d: ["build-bank", "--config", str(c), "--pairs", str(p), "--out", str(d.parent / "b"),
                                   "--features"],
    "train-head": lambda c, p, d: ["train-head", "--config", str(c), "--pairs", str(p), "--out", str(d.parent / "h"),
                                   "--features"],
}


PICTURES = ("search --sheet", "similarity --plot")  # outputs that may have an image extension


@pytest.mark.parametrize("command", sorted(set(COMMANDS) - {"search", "search --sheet"}))  # search reads none of them
def test_no_command_writes_over_an_input(command, inputs, capsys, monkeypatch):
    monkeypatch.setattr("interrogator.runner.loading.load_models", lambda *a, **k: pytest.fail("a model loaded"))
    monkeypatch.setattr("interrogator.models.clip.load_clip", lambda *a, **k: pytest.fail("a model loaded"))
    config, prompts, data, targets = inputs
    every = [*data.iterdir(), config, prompts, *targets.values()]
    before = digests(every)
    for what, target in targets.items():
        assert main([*COMMANDS[command](config, prompts, data), str(target)]) == 2, (command, what)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --") and str(target) in err[0], (command, what, err)
        refused = "this tool never writes over what it reads"  # an image: also for its extension
        assert refused in err[0] or (what == "an input image" and "has an image extension" in err[0]) or (
            command in PICTURES and what == "an input image" and "was not written by this tool" in err[0]), (command, err)
    assert digests(every) == before


def test_a_config_output_or_caption_extension_that_would_replace_an_input_is_refused(inputs, write_config, capsys):
    config, prompts, data, targets = inputs
    before = digests(data.iterdir())
    cases = {"output": (dict(output=str(data / "a4e1c55a9.png")), "the kaggle output"),
             "txt_extension": (dict(formats=["txt"], txt_extension=".png", existing_txt="overwrite"),
                               "config key 'txt_extension': '.png' is an image extension"),
             "txt beside the config": (dict(formats=["txt"], txt_extension=".json", txt_dir=str(config.parent),
                                            existing_txt="overwrite"), "is the config")}
    for name, (changes, expected) in cases.items():
        path = write_config(data_path=str(data), **changes)
        written = path.read_bytes()
        if name == "txt beside the config":  # an image whose caption file would be the config itself
            shutil.copy(data / "20057f34d.png", data / "config.png")
            before[data / "config.png"] = digests([data / "config.png"])[data / "config.png"]
        assert main(["submit", "--config", str(path), "--no-progress"]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (name, err)
        assert path.read_bytes() == written
    assert digests(before) == before


def test_the_apps_folder_tab_goes_through_the_same_check(inputs, tmp_path):
    from interrogator.app.paths import Roots
    from interrogator.app.service import Service
    from interrogator.core.config import load_config
    config, prompts, data, targets = inputs
    before = digests(data.iterdir())
    service = Service(load_config(config), Roots.of(tmp_path))
    with pytest.raises(ConfigError, match="has an image extension"):
        service.run_folder(str(data), str(data / "20057f34d.png"), ["kaggle"])
    with pytest.raises(ConfigError, match="is the config"):
        service.run_folder(str(data), str(config), ["kaggle"])
    assert digests(data.iterdir()) == before and service.loads == 0


def test_a_link_or_dotdot_to_an_input_is_the_input(tmp_path):
    from interrogator.core.owned import Inputs, check_write
    config = tmp_path / "config.json"
    config.write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "out.csv").symlink_to(config)
    (tmp_path / "sub" / "up").symlink_to(tmp_path)
    inputs = Inputs().add(config, "the config")
    for path in (tmp_path / "out.csv", tmp_path / "sub" / ".." / "config.json", tmp_path / "sub" / "up" / "config.json"):
        with pytest.raises(ConfigError, match="is the config: this tool never writes over what it reads"):
            check_write(path, "--output", inputs)
    check_write(tmp_path / "sub" / "new.csv", "--output", inputs)  # not an input: fine


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_command_replaces_a_file_it_did_not_write(command, inputs, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("interrogator.runner.loading.load_models", lambda *a, **k: pytest.fail("a model loaded"))
    monkeypatch.setattr("interrogator.models.clip.load_clip", lambda *a, **k: pytest.fail("a model loaded"))
    config, prompts, data, _ = inputs
    theirs = tmp_path / "theirs" / "notes.csv"
    theirs.parent.mkdir()
    theirs.write_bytes(b"the user's own file\n")
    assert main([*COMMANDS[command](config, prompts, data), str(theirs)]) == 2, command
    option = {"train-head": "features", "build-bank": "features", "index": "out", "search --sheet": "sheet",
              "classify --kept": "kept", "similarity --plot": "plot"}.get(command, "output")
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --{option} {theirs} "
        f"exists and was not written by this tool: choose another path, or pass --replace-outputs (config key "
        f"'replace_outputs') to replace it"]
    assert theirs.read_bytes() == b"the user's own file\n" and sorted(theirs.parent.iterdir()) == [theirs]


def test_a_run_replaces_its_own_outputs_and_no_one_elses(inputs, write_config, capsys):
    """The ledger (.interrogator-outputs.json): a rerun replaces what the tool wrote; a file the user made or
    changed since is refused before any model loads, unless --replace-outputs."""
    from interrogator.core.owned import LEDGER
    config, prompts, data, _ = inputs
    out = config.parent / "out"
    out.mkdir()
    (out / "s.csv").write_bytes(b"mine\n")
    args = ["submit", "--config", str(config), "--output", str(out / "s.csv"), "--no-progress"]
    assert main(args) == 2
    assert "s.csv exists and was not written by this tool" in capsys.readouterr().err
    assert (out / "s.csv").read_bytes() == b"mine\n" and not (out / LEDGER).exists()
    assert main(args + ["--replace-outputs"]) == 0
    first = (out / "s.csv").read_bytes()
    assert first.startswith(b"imgId_eId,val\n") and (out / LEDGER).is_file()
    capsys.readouterr()
    assert main(args) == 0 and (out / "s.csv").read_bytes() == first  # its own file, unchanged: replaced
    capsys.readouterr()
    with open(out / "s.csv", "ab") as f:
        f.write(b"an edit\n")
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --output {out / 's.csv'} exists and was changed since this tool wrote it: choose another path, or "
        f"pass --replace-outputs (config key 'replace_outputs') to replace it")
    assert (out / "s.csv").read_bytes() == first + b"an edit\n"


def _record_one_by_one(folder, worker: int) -> None:
    from interrogator.core.owned import record_written
    for i in range(40):
        record_written([folder / f"{worker}-{i}.csv"])


def test_processes_recording_into_one_folder_at_once_keep_every_entry(tmp_path):
    """Ray's actors record the shard outputs they write into one folder's ledger at once: each update is read and
    written under a lock on the folder, so no process drops another's entry."""
    import multiprocessing
    from interrogator.core.owned import ledger_of
    names = [f"{w}-{i}.csv" for w in range(4) for i in range(40)]
    for name in names:
        (tmp_path / name).write_text(name)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_record_one_by_one, args=(tmp_path, w)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert sorted(ledger_of(str(tmp_path))) == sorted(names)
