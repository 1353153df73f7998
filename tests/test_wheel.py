"""A built wheel works without the source tree: label lists and model configs come from the package."""
import json
import site
import subprocess
import sys

from conftest import REPO, SAMPLES

SCRIPT = """
import json, sys
from pathlib import Path
import interrogator
from interrogator import execute
from interrogator.core.config import DEFAULT_DICTS
print(json.dumps({"package": interrogator.__file__, "dicts": str(DEFAULT_DICTS)}))
vectors, frame = execute(data_path=sys.argv[1], extend_path=sys.argv[2], progress=False, return_prompts=True)
print(json.dumps({"shape": list(vectors.shape), "ids": list(frame.imgId)}))
"""


def test_built_wheel_runs_execute_and_the_demo_from_another_folder(tmp_path):
    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(REPO),
                    "-w", str(dist)], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("interrogator-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (venv_site,) = venv.glob("lib/python*/site-packages")
    # the dependencies come from this environment, as a plain path: its .pth files (our editable install) are not run
    (venv_site / "deps.pth").write_text(site.getsitepackages()[0] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(venv_site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    python = str(venv / "bin" / "python")
    work.mkdir()
    run = lambda *args: subprocess.run([python, *args], cwd=work, capture_output=True, text=True, timeout=600)

    # python -m interrogator from the wheel (its __main__ and the command line), then the pipeline through execute
    demo = run("-m", "interrogator", "make-demo-models")
    assert demo.returncode == 0, demo.stderr
    assert (work / "demo_models" / "blip2-tiny" / "config.json").is_file()  # the working directory's, by default
    config = work / "demo.json"
    config.write_text(json.dumps({"blip_path": "demo_models/blip2-tiny", "clip_model": "demo-tiny-clip",
                                  "clip_path": "demo_models/demo-tiny-clip.safetensors",
                                  "embedding_path": "demo_models/all-MiniLM-L6-v2", "device": "cpu",
                                  "max_new_tokens": 4, "output": "out/submission.csv", "demo": True}))
    proc = run("-c", SCRIPT, str(SAMPLES), str(config))
    assert proc.returncode == 0, proc.stderr
    where, result = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert where["package"].startswith(str(venv_site)) and where["dicts"] == str(venv_site / "interrogator" / "dicts")
    assert result == {"shape": [7, 384], "ids": sorted(p.stem for p in SAMPLES.glob("*.png"))}
