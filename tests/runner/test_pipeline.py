"""End to end on the 7 real sample images with miniature random models."""
import subprocess
import sys

import numpy as np
import pytest

from helpers import SAMPLE_IDS, check_submission
from conftest import REPO, SAMPLES, run_cli

def test_submit_end_to_end_then_cache_hit(write_config, tmp_path, capsys):
    config = write_config()
    first = run_cli("submit.py", "--config", str(config), "--no-progress")
    out = tmp_path / "out" / "submission.csv"
    check_submission(out, SAMPLE_IDS)
    assert "images: 7 done, 0 undecodable" in first.stdout
    assert "label tables: mediums encoded, movements encoded, flavors encoded" in first.stdout
    assert f"submission: {out}" in first.stdout
    from interrogator.commands.cli import main
    capsys.readouterr()
    assert main(["submit", "--config", str(config), "--output", str(tmp_path / "b.csv"), "--no-progress"]) == 0
    assert "label tables: mediums cache hit, movements cache hit, flavors cache hit" in capsys.readouterr().out
    assert (tmp_path / "b.csv").read_bytes() == out.read_bytes()


def test_run_in_process_gives_prompts_of_the_right_shape(write_config):
    from interrogator import load_config, run
    result = run(load_config(write_config(max_flavors=2)), progress=False, write=False)
    assert result.image_ids == SAMPLE_IDS
    assert result.embeddings.shape == (7, 384) and result.embeddings.dtype == np.float32
    for caption, prompt in zip(result.captions, result.prompts):
        parts = prompt.split(", ")
        assert prompt.startswith(caption.rstrip(" .,;:!?")) and len(parts) >= 4
    assert result.output is None


def test_execute_through_sys_path_in_a_subprocess(write_config, tmp_path):
    config = write_config()
    script = f"""
import sys
sys.path.append({str(REPO)!r})
from interrogator import execute
import interrogator
assert interrogator.__file__.startswith({str(REPO)!r}), interrogator.__file__
vectors, frame = execute(data_path={str(SAMPLES)!r}, extend_path={str(config)!r}, batch_size=3,
                         max_flavors=2, num_beams=1, progress=False, return_prompts=True)
print(vectors.shape, vectors.dtype, list(frame.imgId))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"(7, 384) float32 {SAMPLE_IDS}"


def test_summary_says_when_the_models_waited_for_image_decoding():
    from interrogator.runner.finish import RunResult
    result = RunResult(["a"], ["c"], ["p"], np.zeros((1, 384)), loader_workers=3,
                       stage_seconds={"decode": 4.0, "caption": 10.0, "tags": 1.0})
    assert "the models waited 4.0 s (27%) for image decoding (3 workers): more num_workers helps" in result.summary()
    result.stage_seconds["decode"] = 2.0  # 15%
    assert "image decoding" not in result.summary()
    short = RunResult(["a"], ["c"], ["p"], np.zeros((1, 384)), stage_seconds={"decode": 3.0, "caption": 3.0})
    assert "image decoding" not in short.summary()  # runs under 10 s say nothing


def test_the_original_call_on_a_competition_folder(demo_models, small_dicts, tmp_path, caplog, monkeypatch):
    """The seed's notebook call, positional order and all, with a config in the seed's format."""
    import json
    import logging
    import shutil
    from conftest import SAMPLE
    import interrogator.commands.api as api
    from interrogator import execute
    competition = tmp_path / "stable-diffusion-image-to-prompts"
    shutil.copytree(SAMPLES, competition / "images")
    shutil.copy(SAMPLE / "prompts.csv", competition)
    shutil.copy(SAMPLE / "sample_submission.csv", competition)
    models, sentence = tmp_path / "models", tmp_path / "sentence"
    shutil.copytree(demo_models.blip_path, models / "blip2-tiny")
    shutil.copy(demo_models.clip_path, models / "clip.safetensors")
    shutil.copytree(demo_models.embedding_path, sentence / "all-MiniLM-L6-v2")
    config = tmp_path / "configs" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({
        "blip_model": "blip2-opt-2.7b", "blip_path": "blip2-tiny", "clip_model": "demo-tiny-clip",
        "clip_path": "clip.safetensors", "dicts": str(small_dicts), "chunk_size": 2048,
        "embedding_model": "all-MiniLM-L6-v2", "embedding_path": "all-MiniLM-L6-v2",
        "data_path": "/kaggle/input/stable-diffusion-image-to-prompts/images", "output": str(tmp_path / "submission.csv"),
        "batch_size": 16, "max_flavors": 3, "num_beams": 1, "max_new_tokens": 4, "device": "cpu", "num_workers": 0}))
    seen = []
    import interrogator.engines.submit as engine
    real_run = engine.run
    monkeypatch.setattr(engine, "run", lambda config, **kw: seen.append(config) or real_run(config, **kw))
    caplog.set_level(logging.INFO)
    vectors = execute(str(models), str(competition), "clip-interrogator-embedding", str(config), str(sentence),
                      16, 3, 6, progress=False)
    assert vectors.shape == (7, 384) and vectors.dtype == np.float32
    assert f"no images in {competition} itself; using its images/ folder" in caplog.text
    assert "model 'clip-interrogator-embedding' is a name, not a folder" in caplog.text
    (used,) = seen
    assert (used.blip_path, used.clip_path) == (str(models / "blip2-tiny"), str(models / "clip.safetensors"))
    assert used.embedding_path == str(sentence / "all-MiniLM-L6-v2") and used.num_beams == 6
    check_submission(tmp_path / "submission.csv", SAMPLE_IDS)  # the config's output is written


def test_execute_leaves_unset_parameters_to_the_config(write_config, monkeypatch):
    import json
    import interrogator.commands.api as api
    from interrogator import execute
    path = write_config(batch_size="auto", max_flavors=1, num_beams=2)
    values = json.loads(path.read_text())
    del values["output"]
    path.write_text(json.dumps(values))
    class Seen(Exception):
        pass

    def capture(config, **kw):
        raise Seen(config, kw)
    monkeypatch.setattr("interrogator.engines.submit.run", capture)
    with pytest.raises(Seen) as seen:
        execute(extend_path=str(path))
    config, kw = seen.value.args
    assert (config.batch_size, config.max_flavors, config.num_beams) == ("auto", 1, 2)
    assert kw["write"] is False  # neither the call nor the config names an output
