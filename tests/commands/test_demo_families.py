"""``make-demo-models --family``: each family's miniature and ready config, and each config run as printed."""
import json
import re
import shutil
import subprocess
import sys

from conftest import REPO, SAMPLES, needs_new_transformers
from interrogator.commands.cli import main


@needs_new_transformers
def test_every_family_builds_and_its_printed_config_runs_end_to_end(tmp_path, capsys):
    folder = tmp_path / "demo"
    assert main(["make-demo-models", "--family", "all", "--folder", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "random weights" in out.splitlines()[0]
    printed = dict(re.findall(r"^(\w+): .*\n  config: (\S+)\n  try it: ", out, flags=re.M))
    assert list(printed) == ["blip2", "florence2", "qwen2_vl", "idefics3", "llava", "git", "tagger", "vqgan"]
    images = tmp_path / "images"
    images.mkdir()
    for name in sorted(p.name for p in SAMPLES.glob("*.png"))[:2]:
        shutil.copy(SAMPLES / name, images / name)
    for family in ("florence2", "qwen2_vl", "idefics3", "llava", "git", "tagger"):
        assert main(["submit", "--config", printed[family], "--data-path", str(images), "--no-progress"]) == 0, family
        rows = [json.loads(line) for line in (folder / "runs" / family / "captions.jsonl").read_text().splitlines()]
        texts = sorted(p.read_text() for p in (folder / "runs" / family / "txt").glob("*.txt"))
        assert len(rows) == 2 and texts == sorted(r["text" if family == "tagger" else "prompt"] + "\n" for r in rows)
    assert sorted(p.name for p in images.iterdir()) == sorted(p.name for p in SAMPLES.glob("*.png"))[:2]  # untouched
    capsys.readouterr()
    assert main(["prompt", str(images), "--config", printed["blip2"], "--mode", "fast"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    # the draw demo, as a user runs it: and no library prints a line on the console (a kernels hub warning did)
    proc = subprocess.run([sys.executable, "-m", "interrogator", "draw", "--config", printed["vqgan"], "--prompt",
                           "a lighthouse", "--steps", "2", "--size", "32", "32", "--crops", "2", "--out",
                           str(tmp_path / "drawn"), "--no-progress"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith(f"wrote {tmp_path / 'drawn' / '000-a-lighthouse.png'} (loss ")
