"""Every command the README shows in a bash block is one the command line takes as written: its subcommand,
its flags and their values (paths aside: they name the reader's files)."""
import contextlib
import io
import re
import shlex

from conftest import REPO
from interrogator.commands.cli import build_parser


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
