"""Captioning a training set: a VLM and a tagger through the caption template, caption files under each
existing-file policy, written batch by batch (a killed run reruns without rewriting finished files), every part
in the rows, and the same bytes from the local run, ``--devices cpu,cpu`` and Ray."""
import json
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import KILL_ON_THIRD_CAPTION, REPO, SAMPLES, needs_new_transformers
from helpers import read_outputs
from interrogator.commands.cli import main
from interrogator.core.config import load_config
from interrogator.runner.pipeline import run

pytestmark = needs_new_transformers
TEMPLATE = "{trigger}, {tags}, {caption}"


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(SAMPLES, folder, ignore=shutil.ignore_patterns("*.csv"))
    return folder


@pytest.fixture
def training(write_config, vlm_folders, tagger_folder, images, tmp_path):
    """A config: the miniature Qwen2-VL and WD tagger, the template, caption files beside the images."""
    def make(**overrides):
        values = dict(blip_path=str(vlm_folders["qwen2_vl"]), tagger_path=str(tagger_folder), mode="caption",
                      caption_template=TEMPLATE, trigger="ohwx", tag_threshold=0.5, character_threshold=0.5,
                      data_path=str(images), formats=["txt", "jsonl"], output=str(tmp_path / "out" / "rows.csv"),
                      batch_size=2, max_new_tokens=4, min_new_tokens=2, clip_path=None, clip_model=None)
        values.update(overrides)
        return write_config(**values)
    return make


def caption_files(folder, extension=".txt"):
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob(f"*{extension}"))}


def test_the_template_joins_trigger_tags_and_caption_and_rows_keep_every_part(training, images, tmp_path):
    result = run(load_config(training()), progress=False)
    files = caption_files(images)
    assert sorted(files) == sorted(f"{p.stem}.txt" for p in SAMPLES.glob("*.png"))
    rows = [json.loads(line) for line in (tmp_path / "out" / "rows.jsonl").read_text().splitlines()]
    for row, text in zip(rows, result.texts):
        want = ", ".join(part for part in ("ohwx", ", ".join(row["tags"]), row["caption"]) if part)
        assert row["text"] == text == want and files[f"{row['imgId']}.txt"] == want + "\n"
        assert len(row["tag_scores"]) == len(row["tags"]) and all(s >= 0.5 for s in row["tag_scores"])
        assert row["rating"] in ("general", "sensitive", "questionable", "explicit") and row["prompt"] == ""
    assert any(row["tags"] for row in rows) and all(row["caption"] for row in rows)


def test_a_tagger_alone_needs_no_captioner(training, images, tmp_path):
    config = training(blip_path=None, caption_template="{trigger}, {tags}", txt_extension=".caption")
    result = run(load_config(config), progress=False)
    assert result.captions == [""] * 7
    assert caption_files(images, ".caption") and not caption_files(images)
    assert all(text.startswith("ohwx") for text in caption_files(images, ".caption").values())


@pytest.mark.parametrize("family", ["tagger", "captioner"])
def test_a_run_that_embeds_nothing_loads_neither_the_sentence_model_nor_clip(family, training, images, tmp_path,
                                                                             monkeypatch):
    """Caption files and rows hold no vectors: no embedding_path is asked for, and only the text's model loads;
    the texts equal those of a run that embeds as well."""
    import interrogator.runner.loading as loading
    loaded = []
    for name in ("load_sentence", "load_config_clip", "load_captioner", "load_tagger"):
        real = getattr(loading, name)
        monkeypatch.setattr(loading, name, lambda *a, _name=name, _real=real, **k: loaded.append(_name) or _real(*a, **k))
    keys = (dict(blip_path=None, caption_template="{trigger}, {tags}") if family == "tagger"
            else dict(tagger_path=None, caption_template="{trigger}, {caption}"))
    assert main(["submit", "--config", str(training(embedding_path=None, **keys)), "--no-progress"]) == 0
    assert loaded == ["load_" + family]
    rows = (tmp_path / "out" / "rows.jsonl").read_text()
    texts = caption_files(images)
    embedding = training(formats=["kaggle", "txt", "jsonl"], txt_dir=str(tmp_path / "embedded"),
                         output=str(tmp_path / "embedded" / "o.csv"), **keys)
    loaded.clear()
    assert main(["submit", "--config", str(embedding), "--no-progress"]) == 0
    assert loaded == ["load_sentence", "load_" + family]
    assert (tmp_path / "embedded" / "o.jsonl").read_text() == rows
    assert caption_files(tmp_path / "embedded") == texts and len(texts) == 7


_REFERENCE = {}


def reference_texts(training, tmp_path):
    """Each image's text from a run into a folder of its own (one run for the whole module: same images, same
    models)."""
    if "texts" not in _REFERENCE:
        result = run(load_config(training(txt_dir=str(tmp_path / "ref"))), progress=False)
        _REFERENCE["texts"] = dict(zip(result.image_ids, result.texts))
    return _REFERENCE["texts"]


@pytest.mark.parametrize("policy", ["keep", "overwrite", "append", "prepend", "skip"])
def test_each_existing_file_policy(policy, training, images, tmp_path):
    texts = reference_texts(training, tmp_path)
    first, second = sorted(texts)[:2]
    (images / f"{first}.txt").write_text("my own words\n")
    (images / f"{second}.txt").write_text(texts[second] + "\n")  # already what would be written
    mtime = (images / f"{second}.txt").stat().st_mtime_ns
    if policy == "skip":  # a skipped image is not even decoded
        (images / f"{first}.png").write_bytes(b"not a png")
    result = run(load_config(training(existing_txt=policy)), progress=False)
    files = caption_files(images)
    want_first = {"keep": "my own words", "overwrite": texts[first], "skip": "my own words",
                  "append": f"my own words, {texts[first]}", "prepend": f"{texts[first]}, my own words"}[policy]
    assert files[f"{first}.txt"] == want_first + "\n"
    assert files[f"{second}.txt"] == texts[second] + "\n" and (images / f"{second}.txt").stat().st_mtime_ns == mtime
    for image_id in sorted(texts)[2:]:
        assert files[f"{image_id}.txt"] == texts[image_id] + "\n"
    if policy == "skip":
        assert result.image_ids == sorted(texts)[2:] and not result.failed
        assert "skipped 2 images whose caption file exists (existing_txt: skip)" in result.summary()
        assert result.written["txt"] == {"written": 5, "unchanged": 0, "kept": 0}
    else:
        changed = {"keep": 0, "overwrite": 1, "append": 1, "prepend": 1}[policy]
        assert result.written["txt"] == {"written": 5 + changed, "unchanged": 1, "kept": 1 - changed}
    again = run(load_config(training(existing_txt=policy)), progress=False)  # a rerun changes nothing
    assert caption_files(images) == files and again.written["txt"]["written"] == 0


def test_a_killed_run_reruns_without_rewriting_finished_files(training, images, tmp_path):
    reference = tmp_path / "reference"
    run(load_config(training(txt_dir=str(reference), txt_extension=".caption")), progress=False)
    config = training(txt_dir=str(tmp_path / "killed"), txt_extension=".caption")
    script = KILL_ON_THIRD_CAPTION.format(captioner="VlmCaptioner", repo=str(REPO), config=str(config))
    proc = subprocess.run([sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    finished = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "killed").iterdir()}
    assert len(finished) == 4  # the two batches done before the kill, written as each finished
    result = run(load_config(config), progress=False)
    assert result.resumed_batches == 2
    assert {n: (tmp_path / "killed" / n).stat().st_mtime_ns for n in finished} == finished
    assert caption_files(tmp_path / "killed", ".caption") == caption_files(reference, ".caption")
    assert result.written["txt"] == {"written": 3, "unchanged": 4, "kept": 0}


def test_every_engine_writes_the_same_bytes(training, tmp_path, ray_cluster):
    """The local run, low_memory, --shard + merge --config and Ray (--devices: tests/engines/test_core.py; its
    processes run the plan's --images ranges with --records-only, as --shard runs one, and the parent finishes
    as the local run does)."""
    pytest.importorskip("pyarrow")
    from interrogator.engines.ray_engine import run_ray
    every = ["kaggle", "txt", "csv", "jsonl", "parquet"]

    def config_for(name, **more):
        return training(**{"formats": every, "txt_dir": str(tmp_path / name / "txt"),
                           "output": str(tmp_path / name / "o.csv"), **more})
    run(load_config(config_for("local")), progress=False)
    run(load_config(config_for("low", low_memory=True)), progress=False)
    sharded = str(config_for("shards"))
    for i in range(2):
        assert main(["submit", "--config", sharded, "--shard", f"{i}/2", "--output", str(tmp_path / f"s{i}.csv"),
                     "--no-progress"]) == 0
    assert main(["merge", str(tmp_path / "s0.csv"), str(tmp_path / "s1.csv"), "--output",
                 str(tmp_path / "shards" / "o.csv"), "--config", sharded]) == 0
    run_ray(load_config(config_for("ray")), str(tmp_path / "pq"), csv=str(tmp_path / "ray" / "o.csv"), actors=2,
            address=ray_cluster, progress=False)
    local = read_outputs(tmp_path / "local")
    assert len([n for n in local if n.startswith("txt/")]) == 7
    for name in ("low", "shards", "ray"):
        assert read_outputs(tmp_path / name) == local, name
    # a run that embeds nothing (no sentence model given) writes the same rows and caption files, also on Ray
    plain = dict(formats=["txt", "csv", "jsonl"], embedding_path=None)
    run(load_config(config_for("plain-local", **plain)), progress=False)
    run_ray(load_config(config_for("plain-ray", **plain)), str(tmp_path / "pq"), csv=str(tmp_path / "plain-ray" / "o.csv"),
            actors=2, address=ray_cluster, progress=False)
    plain_local = read_outputs(tmp_path / "plain-local")
    assert {n: plain_local[n] for n in ("o.prompts.csv", "o.jsonl")} == {n: local[n] for n in ("o.prompts.csv", "o.jsonl")}
    assert read_outputs(tmp_path / "plain-ray") == plain_local


def test_a_template_part_without_its_model_is_one_line(capsys, training):
    code = main(["submit", "--config", str(training(tagger_path=None)), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: config key 'caption_template' uses {tags}, which the tagger "
                                            "writes: set 'tagger_path'")


@pytest.mark.parametrize("key, value, message", [
    ("caption_template", "{trigger} {flavor}", "config key 'caption_template': unknown field {flavor}; the fields "
                                               "are {trigger}, {tags}, {rating}, {caption}, {prompt}"),
    ("existing_txt", "replace", "config key 'existing_txt': expected one of keep, skip, append, prepend, "
                                "overwrite, got 'replace'"),
    ("txt_extension", "txt", "config key 'txt_extension': expected a dot and up to 16 letters, digits, _ or -, "
                             "such as \".txt\" or \".caption\", got 'txt'"),
    ("tag_threshold", 1.5, "config key 'tag_threshold': expected a number > 0 and <= 1, got 1.5"),
    ("tag_replacements", ["a"], "config key 'tag_replacements': expected a list of \"old=new\" strings, got ['a']"),
])
def test_bad_caption_settings_are_one_line_before_any_model_loads(capsys, training, key, value, message):
    code = main(["submit", "--config", str(training(**{key: value})), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"error: {message}")


def test_skip_with_shards_is_refused(capsys, training):
    code = main(["submit", "--config", str(training(existing_txt="skip")), "--shard", "0/2", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: --shard with existing_txt skip:")


def test_the_resume_identity_covers_the_tagger_and_the_caption_settings(training, tagger_folder, tmp_path):
    from interrogator.runner.planner import identity_of as run_identity
    base = load_config(training())
    identity = run_identity(base, [])
    assert "tagger_path" in identity["checkpoints"] and "onnxruntime" in identity["versions"]
    for key, value in (("tag_threshold", 0.6), ("trigger", "sks"), ("caption_template", "{tags}"),
                       ("tags_first", ["solo"]), ("caption_prompt", "Say more."), ("repetition_penalty", 1.2)):
        assert run_identity(load_config(training(**{key: value})), []) != identity, key
    for key, value in (("existing_txt", "append"), ("txt_extension", ".caption")):  # which files, not what
        assert run_identity(load_config(training(**{key: value})), []) == identity, key
    retrained = tmp_path / "retrained"
    shutil.copytree(tagger_folder, retrained)
    (retrained / "selected_tags.csv").write_text((tagger_folder / "selected_tags.csv").read_text().replace(
        "1girl", "one_girl"))
    assert run_identity(load_config(training(tagger_path=str(retrained))), []) != identity


def test_a_config_without_the_new_keys_keeps_its_identity(write_config):
    """Keys added in 0.4 enter the identity only where set, so a 0.3 run's unfinished work still resumes."""
    from interrogator.core.identity import LATER_KEYS
    from interrogator.runner.planner import identity_of as run_identity
    identity = run_identity(load_config(write_config()), [])
    assert not set(LATER_KEYS) & set(identity)
