"""``prompt``: each image's prompt on standard output, equal to what ``submit`` writes for it; every config key
as a flag made from the schema (commands/flags.py)."""
import json
import shutil
from dataclasses import replace

import pandas as pd
import pytest

from conftest import REPO, SAMPLES
from helpers import demo_config
from interrogator.commands.cli import main
from interrogator.core.config import KEY_HELP, load_config, user_keys
from interrogator.runner.pipeline import run

IMAGES = sorted(SAMPLES.glob("*.png"))[:2]
SUBMIT_OWN = {"output": "--output", "batch_size": "--batch-size", "device": "--device", "data_path": "--data-path",
              "formats": "--format", "overwrite": "--overwrite", "replace_outputs": "--replace-outputs"}


@pytest.fixture(scope="module")
def dicts(tmp_path_factory, small_dicts):
    """The small lists and the first 300 artists (classic, fast and best rank them)."""
    folder = tmp_path_factory.mktemp("dicts")
    shutil.copytree(small_dicts, folder, dirs_exist_ok=True)
    artists = (REPO / "dicts" / "artists.txt").read_text(encoding="utf-8").splitlines()[:300]
    (folder / "artists.txt").write_text("\n".join(artists) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    data = tmp_path_factory.mktemp("two")
    for image in IMAGES:
        shutil.copy(image, data)
    return data


def submitted(config, folder, out) -> dict:
    """{file name: prompt} as ``submit`` writes them (the csv format)."""
    result = run(replace(config, data_path=str(folder), output=str(out / "s.csv"), formats=["csv"]), progress=False)
    chain = config.mode in ("best", "negative")  # the stage is named for what ran: the chain, or the ranking
    assert ("chain" in result.stage_seconds, "tags" in result.stage_seconds) == (chain, config.mode != "caption"
                                                                                 and not chain)
    frame = pd.read_csv(out / "s.prompts.csv", keep_default_na=False)
    return dict(zip(frame.file, frame.prompt))


@pytest.mark.parametrize("mode", ["seed", "classic", "fast", "best", "negative", "caption"])
def test_the_prompt_is_what_submit_writes(mode, folder, tmp_path, demo_models, dicts, capsys):
    path = demo_config(tmp_path, demo_models, dicts, max_new_tokens=4)
    want = submitted(load_config(path, mode=mode), folder, tmp_path / "out")
    assert main(["prompt", str(folder), "--mode", mode, "--config", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [(r["image"], r["prompt"]) for r in rows] == [(str(folder / n), p) for n, p in sorted(want.items())]
    assert captured.err.splitlines()[-1] == f"prompt: {mode} mode, config {path}"
    if mode == "fast":  # one image: the prompt alone, as clip-interrogator prints it
        assert main(["prompt", str(folder / IMAGES[0].name), "--mode", mode, "--config", str(path)]) == 0
        assert capsys.readouterr().out == want[IMAGES[0].name] + "\n"


def test_without_a_config_the_demo_models_say_so(folder, tmp_path, demo_models, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.config/interrogator/config.json
    monkeypatch.delenv("INTERROGATOR_CONFIG", raising=False)
    monkeypatch.setenv("INTERROGATOR_DEMO_DIR", str(demo_models.blip_path.parent))
    assert main(["prompt", str(folder / IMAGES[1].name), "--mode", "caption"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1] == (
        f"prompt: caption mode, the demo models in {demo_models.blip_path.parent} (random weights: the prompts show "
        f"what the tool does; give --config for real ones)")
    config = load_config(None, blip_path=str(demo_models.blip_path), embedding_path=str(demo_models.embedding_path),
                         device="cpu", max_new_tokens=12, mode="caption")
    assert captured.out == submitted(config, folder, tmp_path / "out")[IMAGES[1].name] + "\n"


def test_every_config_key_has_a_flag_with_its_help_line(capsys):
    """Made from the schema: a new key without a flag (or without a help line) fails here."""
    for command in ("submit", "prompt", "app"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        for key in user_keys():
            flag = SUBMIT_OWN.get(key, "--" + key.replace("_", "-")) if command == "submit" \
                else "--" + key.replace("_", "-")
            assert flag in text, (command, key)
    assert set(KEY_HELP) == set(user_keys())


def test_flags_override_the_file_and_are_checked_as_parsed(tmp_path, demo_models, small_dicts, capsys):
    path = demo_config(tmp_path, demo_models, small_dicts, recursive=True, undesired_tags=["x"])
    assert main(["submit", "--config", str(path), "--mode", "fast", "--max-flavors", "5", "--no-recursive",
                 "--undesired-tags", "a", "b", "--blend", "0.5", "0.25", "0.25", "--tag-threshold", "0.5",
                 "--batch-size", "3", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {k: printed[k] for k in ("mode", "max_flavors", "recursive", "undesired_tags", "blend", "tag_threshold",
                                    "batch_size")} == {"mode": "fast", "max_flavors": 5, "recursive": False,
                                                       "undesired_tags": ["a", "b"], "blend": [0.5, 0.25, 0.25],
                                                       "tag_threshold": 0.5, "batch_size": 3}
    assert printed["blip_path"] == str(demo_models.blip_path)  # the file's, where no flag is given
    assert main(["app", "--config", str(path), "--mode", "best", "--max-flavors", "12", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)  # the app's flags, likewise (before Gradio or a model loads)
    assert (printed["mode"], printed["max_flavors"], printed["recursive"]) == ("best", 12, True)
    for argv, line in ((["--max-flavors", "0"], "argument --max-flavors: config key 'max_flavors': expected a whole "
                                                "number >= 1 and <= 1000, got 0"),
                       (["--mode", "fastest"], "argument --mode: config key 'mode': expected one of seed, caption, "
                                               "classic, fast, best, negative, got 'fastest'")):
        with pytest.raises(SystemExit) as info:
            main(["submit", "--config", str(path), *argv])
        assert info.value.code == 2 and capsys.readouterr().err.strip().splitlines()[-1] == f"error: submit: {line}"
