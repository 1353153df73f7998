"""End to end on the 7 real sample images with miniature random models."""
import subprocess
import sys

import numpy as np
import pandas as pd

from conftest import REPO, SAMPLES, run_cli

SAMPLE_IDS = sorted(p.stem for p in SAMPLES.glob("*.png"))


def check_submission(path, ids):
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["imgId_eId", "val"]
    assert frame.imgId_eId.tolist() == [f"{i}_{e}" for i in ids for e in range(384)]
    vectors = frame.val.to_numpy(np.float64).reshape(len(ids), 384)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    return vectors


def test_submit_end_to_end_then_cache_hit(write_config, tmp_path):
    config = write_config()
    first = run_cli("submit.py", "--config", str(config), "--no-progress")
    out = tmp_path / "out" / "submission.csv"
    check_submission(out, SAMPLE_IDS)
    assert "images: 7 done, 0 undecodable" in first.stdout
    assert "label tables: mediums encoded, movements encoded, flavors encoded" in first.stdout
    assert f"submission: {out}" in first.stdout
    second = run_cli("submit", "--config", str(config), "--output", str(tmp_path / "b.csv"), "--no-progress")
    assert "label tables: mediums cache hit, movements cache hit, flavors cache hit" in second.stdout
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
    from interrogator.pipeline import RunResult
    result = RunResult(["a"], ["c"], ["p"], np.zeros((1, 384)), loader_workers=3,
                       stage_seconds={"decode": 4.0, "caption": 10.0, "tags": 1.0})
    assert "the models waited 4.0 s (27%) for image decoding (3 workers): more num_workers helps" in result.summary()
    result.stage_seconds["decode"] = 2.0  # 15%
    assert "image decoding" not in result.summary()
    short = RunResult(["a"], ["c"], ["p"], np.zeros((1, 384)), stage_seconds={"decode": 3.0, "caption": 3.0})
    assert "image decoding" not in short.summary()  # runs under 10 s say nothing
