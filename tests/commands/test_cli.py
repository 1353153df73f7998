"""The command-line entry points: in-process through ``main`` where a process adds nothing, and as a user runs them
(subprocesses) where the process is what is tested (its imports, its exit, its console)."""
import re

import numpy as np
import pytest
import pandas as pd

from conftest import SAMPLE, needs_shared, run_cli
from interrogator.commands.cli import main


def in_process(capsys, *argv) -> str:
    """``python -m interrogator ARGV`` in this process: its stdout (it must exit 0)."""
    capsys.readouterr()
    assert main(list(argv)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


@needs_shared
def test_embed_reproduces_the_official_vectors(tmp_path, minilm_path, capsys):
    out = tmp_path / "sub.csv"
    stdout = in_process(capsys, "embed", "--prompts", str(SAMPLE / "prompts.csv"), "--output", str(out),
                        "--embedding-path", str(minilm_path))
    assert f"submission: {out} (7 images x 384)" in stdout
    mine, official = pd.read_csv(out), pd.read_csv(SAMPLE / "sample_submission.csv")
    assert mine.imgId_eId.tolist() == official.imgId_eId.tolist()
    assert np.abs(mine.val.to_numpy() - official.val.to_numpy()).max() < 1e-6


@needs_shared
def test_score_of_official_vectors_is_one(minilm_path, capsys):
    lines = in_process(capsys, "score", "--submission", str(SAMPLE / "sample_submission.csv"),
                       "--prompts", str(SAMPLE / "prompts.csv"), "--embedding-path", str(minilm_path)).strip().splitlines()
    assert len(lines) == 8 and lines[0].startswith("20057f34d ")
    assert all(abs(float(line.split()[1]) - 1.0) < 1e-6 for line in lines[:7])
    assert lines[-1].startswith("score ") and abs(float(lines[-1].split()[1]) - 1.0) < 1e-6


@needs_shared
def test_score_of_a_known_wrong_submission(tmp_path, minilm_path, capsys):
    """Every image gets the vector of the first prompt: its score is the mean cosine to that prompt."""
    official = pd.read_csv(SAMPLE / "sample_submission.csv")
    vectors = official.val.to_numpy(np.float64).reshape(7, 384)
    wrong = official.copy()
    wrong["val"] = np.tile(vectors[0], 7).astype(np.float32)
    wrong.to_csv(tmp_path / "wrong.csv", index=False)
    stdout = in_process(capsys, "score", "--submission", str(tmp_path / "wrong.csv"), "--prompts",
                        str(SAMPLE / "prompts.csv"), "--embedding-path", str(minilm_path))
    expected = (vectors @ vectors[0] / np.linalg.norm(vectors, axis=1) / np.linalg.norm(vectors[0])).mean()
    assert abs(float(stdout.strip().splitlines()[-1].split()[1]) - expected) < 1e-5


def test_errors_are_one_line_without_traceback(tmp_path):
    (tmp_path / "c.json").write_text('{"batch_sise": 4}')
    proc = run_cli("submit", "--config", str(tmp_path / "c.json"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: unknown config key 'batch_sise' (in {tmp_path / 'c.json'}); did you mean 'batch_size'?")
    assert "Traceback" not in proc.stderr


def test_help_lists_subcommands():
    out = run_cli("--help").stdout
    for sub in ("submit", "precompute-labels", "embed", "score", "merge", "make-demo-models"):
        assert sub in out


def test_precompute_labels_then_submit_encodes_nothing(write_config, tmp_path, capsys):
    cache = tmp_path / "attached-cache"
    config = write_config(label_cache=None)
    stdout = in_process(capsys, "precompute-labels", "--config", str(config), "--label-cache", str(cache))
    assert stdout.splitlines()[:3] == ["mediums: 95 labels, encoded", "movements: 200 labels, encoded",
                                       "flavors: 2914 labels (86 merged), encoded"]
    assert len(list(cache.glob("*.safetensors"))) == 3
    again = in_process(capsys, "submit", "--config", str(write_config(label_cache=str(cache))), "--no-progress")
    assert "label tables: mediums cache hit, movements cache hit, flavors cache hit" in again


def test_precompute_labels_needs_a_cache_folder(write_config):
    proc = run_cli("precompute-labels", "--config", str(write_config(label_cache=None)), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: config key 'label_cache' is not set")


def test_make_demo_models_builds_loadable_models(tmp_path):
    proc = run_cli("make-demo-models", "--folder", str(tmp_path / "demo"))
    demo = tmp_path / "demo"
    assert proc.stdout.splitlines() == [
        f"demo models in {demo}, with random weights: what they write shows what the tool does, not what it says",
        f"clip: {demo / 'demo-tiny-clip.safetensors'}", f"sentence model: {demo / 'all-MiniLM-L6-v2'}",
        f"blip2: {demo / 'blip2-tiny'}", f"  config: {demo / 'blip2.json'}",
        f"  try it: python -m interrogator prompt IMAGE --config {demo / 'blip2.json'}"]
    for name in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json"):
        assert (tmp_path / "demo" / "blip2-tiny" / name).is_file()
    assert (tmp_path / "demo" / "all-MiniLM-L6-v2" / "modules.json").is_file()


def test_version_and_a_help_line_for_every_option():
    from interrogator import __version__
    from interrogator.commands.cli import build_parser
    assert run_cli("--version").stdout.strip() == f"interrogator {__version__}"
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices  # argparse has no public walk
    for name, sub in {"(top)": parser, **subparsers}.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{name}: {action.option_strings or action.dest} has no help line"


def test_output_is_quiet_when_stderr_is_not_a_terminal(write_config, tmp_path):
    proc = run_cli("submit", "--config", str(write_config()))  # progress bars asked for, stderr is a pipe
    assert "\r" not in proc.stderr and "\x1b[" not in proc.stderr
    assert "INFO root" not in proc.stderr and "No pretrained weights loaded" not in proc.stderr
    assert "Loading weights" not in proc.stderr
    assert proc.stdout.splitlines()[0] == "images: 7 done, 0 undecodable (fallback prompt)"
    debug = run_cli("--debug", "submit", "--config", str(write_config()), "--output", str(tmp_path / "d.csv"))
    assert "INFO root: " in debug.stderr  # --debug shows open_clip's own log lines


def test_fp16_on_the_cpu_is_refused(write_config):
    proc = run_cli("submit", "--config", str(write_config(dtype="fp16")), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: config key 'dtype': fp16 on the CPU runs about 100x slower than fp32; write \"auto\", \"fp32\" or "
        "\"bf16\" for a CPU run (in ")


def test_the_top_level_help_lists_every_command_by_group_with_one_line(capsys):
    from interrogator.commands.cli import GROUPS, build_parser, main
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "python -m interrogator prompt photo.jpg --mode best" in text and "cli.py" not in text
    names = sorted(build_parser().commands.parsers)
    listed = [n for n in re.findall(r"^  ([a-z][a-z-]*) +\S", text, flags=re.M) if n != "python"]
    assert sorted(listed) == names and len(names) == 26
    titles = [line[:-1] for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert [g.TITLE for g in GROUPS] == [t for t in titles if t in {g.TITLE for g in GROUPS}]


HELP_IMPORTS = """
import contextlib, io, sys
from interrogator.commands.cli import build_parser, main
codes = []
for argv in [["--help"], *[[name, "--help"] for name in sorted(build_parser().commands.parsers)], ["submit", "--bogus"],
             ["prompt"], ["draw", "--config"]]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit as exit_:
            codes.append(exit_.code)
print(codes)
print(sorted(m for m in ("torch", "transformers", "open_clip", "sentence_transformers", "pandas", "ray") if m in sys.modules))
"""


def test_help_and_a_parse_error_import_no_torch():
    """Every command's --help and a parse error answer without importing torch or any model library."""
    codes, heavy = run_cli("-c", HELP_IMPORTS).stdout.splitlines()
    assert codes == str([0] * 27 + [2, 2, 2]) and heavy == "[]"


def test_every_command_has_a_description_and_an_example_that_parses():
    from interrogator.commands.cli import build_parser
    parser = build_parser()
    for name, command in parser.commands.parsers.items():
        assert command.description and command.description.endswith("."), name
        head, example = command.epilog.split("\n  python -m interrogator ")
        assert head == "example:" and example.split()[0] == name, name
        args = parser.parse_args([w.strip('"') for w in re.findall(r'"[^"]*"|\S+', example.split("  #")[0])])
        assert args.command == name
