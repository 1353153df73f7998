"""The README's demo, the offline guarantee, and no hub ids anywhere."""
import re
import shutil
import socket


from conftest import REPO, run_cli
from helpers import SAMPLE_IDS, check_submission


def test_demo_config_builds_models_and_runs(tmp_path):
    """configs/demo_config.json as shipped, in a copy of the repo layout: builds demo models, writes a valid CSV."""
    (tmp_path / "configs").mkdir()
    shutil.copy(REPO / "configs" / "demo_config.json", tmp_path / "configs")
    for name in ("samples", "dicts"):
        (tmp_path / name).symlink_to(REPO / name)
    proc = run_cli(str(REPO / "submit.py"), "--config",
                   str(tmp_path / "configs" / "demo_config.json"), "--no-progress")
    assert (tmp_path / "demo_models" / "blip2-tiny" / "config.json").is_file()
    check_submission(tmp_path / "output" / "demo_submission.csv", SAMPLE_IDS)
    assert "flavors encoded" in proc.stdout
    shown = proc.stdout.split("the demo models have random weights: their prompts show what the tool does, not "
                              "what the images show; the first prompts it wrote:\n")[1].splitlines()
    assert [line.split(": ")[0] for line in shown] == [f"  {i}" for i in SAMPLE_IDS[:3]]
    assert all(len(line.split(": ", 1)[1].split(", ")) >= 2 for line in shown)  # a caption and its flavors


def test_network_blocked_run_passes(write_config, monkeypatch):
    from interrogator import load_config, run

    def refuse(*args, **kwargs):
        raise OSError("network access attempted during an offline run")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    result = run(load_config(write_config()), progress=False)
    assert result.embeddings.shape == (7, 384)
    assert result.output.is_file()


def test_offline_flags_are_forced(monkeypatch):
    from interrogator.core.offline import enforce_offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    enforce_offline()
    import huggingface_hub.constants as constants
    import os
    assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE is True


HUB_PATTERNS = [re.compile(p) for p in (
    r"Sales" r"force/", r"sentence-" r"transformers/all", r"open" r"ai/clip", r"la" r"ion/", r"hf-" r"hub:",
    r"hugging" r"face\.co")]


def test_no_hub_model_id_in_code_configs_or_tests():
    files = [p for d in ("interrogator", "configs", "tests", "bench") for p in (REPO / d).rglob("*")
             if p.suffix in (".py", ".json") ] + [REPO / "submit.py"]
    offenders = [(p.name, pat.pattern) for p in files for pat in HUB_PATTERNS if pat.search(p.read_text())]
    assert offenders == []
