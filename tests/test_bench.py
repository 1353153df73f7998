"""bench/throughput.py --tiny runs on this CPU machine and writes its JSON and markdown reports."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO


def test_tiny_benchmark_runs_and_reports(tmp_path, minilm_path):
    weightless = tmp_path / "minilm"  # what the GPU machine gets: config and tokenizer, no weights
    shutil.copytree(minilm_path, weightless, ignore=shutil.ignore_patterns("*.safetensors"))
    cmd = [sys.executable, str(REPO / "bench" / "throughput.py"), "--tiny", "--images", "8", "--reference-images", "2",
           "--flavors", "1000", "--batch-size", "4", "--workers", "0", "--cache-implementation", "static",
           "--embedding-path", str(weightless), "--random-sentence-weights", "--out", str(tmp_path)]
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "TMPDIR": str(scratch)})
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in scratch.iterdir() if p.name.startswith("bench-")] == []  # images, weights removed
    result = json.loads((tmp_path / "throughput-tiny.json").read_text())
    assert result["images"] == 8 and result["reference_images"] == 2 and result["flavors"] == 1000
    assert result["caption_batch"] == 4 and result["loader_workers"] == 0 and result["kv_cache"] == "static"
    assert result["sentence_weights"] == "random"
    for key in ("pipeline_img_s", "caption_stage_img_s", "loader_img_s", "reference_img_s", "label_encode_flavors_s",
                "label_encode_flavors_full_context_s", "label_tokenize_flavors_s", "label_tokenize_flavors_open_clip_s"):
        assert result[key] > 0, key
    assert abs(result["speedup_vs_reference"] - result["pipeline_img_s"] / result["reference_img_s"]) < 0.1 * result["speedup_vs_reference"] + 0.1
    assert set(result["stage_seconds"]) >= {"decode", "caption", "tags", "prompt", "embed", "write"}
    table = (tmp_path / "throughput-tiny.md").read_text()
    assert "| pipeline / reference |" in table and "| caption stage alone |" in table
    assert "| tokenizing 1000 flavors alone: project (worker processes) / open_clip (one process) |" in table


def test_host_costs_benchmark_runs_and_reports(tmp_path):
    cmd = [sys.executable, str(REPO / "bench" / "host_costs.py"), "--images", "300", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "host-costs.json").read_text())
    assert result["images"] == 300 and result["prompts_identical"] is True
    for key in ("prompts_project_s", "prompts_open_clip_s", "frame_s", "validate_s", "write_csv_s"):
        assert result[key] > 0, key
    assert "| prompt assembly, project tokenizer |" in (tmp_path / "host-costs.md").read_text()


def test_loader_benchmark_runs_both_loaders(tmp_path):
    cmd = [sys.executable, str(REPO / "bench" / "loader.py"), "--images", "20", "--batch-size", "10", "--workers", "2",
           "--repeats", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("bench-")] == []
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| one") or line.startswith("| batch")]
    assert [row.split(" | ")[0] for row in rows] == ["| one worker per batch", "| batch split over workers"]


def test_toolkit_benchmark_runs_and_reports(tmp_path):
    cmd = [sys.executable, str(REPO / "bench" / "toolkit.py"), "--clips", "demo-tiny-clip", "--index-images", "8",
           "--batch-size", "4", "--workers", "0", "--vectors", "3000", "--dim", "32", "--repeats", "1",
           "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("bench-")] == []
    result = json.loads((tmp_path / "toolkit-cpu.json").read_text())
    assert result["index_img_s[demo-tiny-clip]"] > 0 and result["search_ms[torch, 16 queries]"] > 0
    assert "| search_ms[torch, 1 queries] |" in (tmp_path / "toolkit-cpu.md").read_text()


def test_head_benchmark_runs_and_reports(tmp_path):
    cmd = [sys.executable, str(REPO / "bench" / "head.py"), "--pairs", "400", "--dim", "32", "--epochs", "2",
           "--hidden", "0,16", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "head-cpu.json").read_text())
    assert result["pairs"] == 400 and result["pairs_s[linear]"] > 0 and result["pairs_s[mlp 16]"] > 0
    assert 0 < result["val_score[linear]"] <= 1


def test_workspace_benchmark_runs_and_reports(tmp_path, monkeypatch):
    import runpy
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # mkdtemp reads TMPDIR again
    monkeypatch.setattr("sys.argv", ["workspace.py", "--images", "150", "--edit", "20", "--repeats", "1",
                                     "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as done:  # in-process: the script's own main, as `python bench/workspace.py`
        runpy.run_path(str(REPO / "bench" / "workspace.py"), run_name="__main__")
    assert done.value.code == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("bench-")] == []  # the folder removed
    result = json.loads((tmp_path / "workspace-cpu.json").read_text())
    assert result["images"] == 150 and result["apply_20_files_s"] > 0 and result["app_first_page_s"] > 0
