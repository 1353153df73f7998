"""Every command the README shows in a bash block is one the command line takes as written: its subcommand,
its flags and their values (paths aside: they name the reader's files)."""
import contextlib
import io
import re
import shlex
import shutil

from conftest import REPO, needs_new_transformers
from interrogator.commands.cli import build_parser, main


def readme_commands():
    """Each ``python -m interrogator ...`` line of the README's bash blocks (continuations joined, comments cut)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("python -m interrogator "):
                found.append(line)
    return found


def test_every_readme_command_parses_as_written():
    parser = build_parser()
    commands = readme_commands()
    assert len(commands) >= 25
    seen = set()
    for line in commands:
        argv = shlex.split(line)[3:]
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
                args = parser.parse_args(argv)
        except SystemExit:
            raise AssertionError(f"{line}: {errors.getvalue().strip()}") from None
        seen.add(args.command)
    assert {"prompt", "submit", "make-demo-models", "draw", "app", "search"} <= seen


@needs_new_transformers
def test_the_readme_commands_on_the_demo_models_run_as_written(tmp_path, monkeypatch, demo_models, capsys):
    """Those that name only the repository's demo config, its samples and the demo models (the others name the
    reader's own files and weights), in README order, in a copy of the repository's layout."""
    for name in ("samples", "dicts"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / "configs").mkdir()
    shutil.copy(REPO / "configs" / "demo_config.json", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INTERROGATOR_DEMO_DIR", str(demo_models.blip_path.parent))  # the prompt's demo, built
    monkeypatch.delenv("INTERROGATOR_CONFIG", raising=False)
    ran = []
    for line in readme_commands():
        argv = shlex.split(line)[3:]
        if argv[0] == "app" or not any(w.startswith(("samples", "configs/demo", "demo_models")) for w in argv):
            continue
        assert main(argv) == 0, line
        ran.append(argv[0])
        out = capsys.readouterr().out
        if argv[0] == "prompt":
            assert out.strip() and "\n" not in out.strip()
    assert ran == ["prompt", "make-demo-models", "submit", "index", "make-demo-models", "draw"]
    assert len(list((tmp_path / "demo_models" / "runs" / "tagger" / "txt").glob("*.txt"))) == 7
    assert (tmp_path / "index.safetensors").is_file() and (tmp_path / "drawings" / "000-a-lighthouse-at-dusk.png").is_file()
