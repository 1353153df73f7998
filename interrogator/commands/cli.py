"""``python -m interrogator <subcommand>``: each command group adds its own subcommands (prompt_cli, run_cli, metric_cli,
app_cli, toolkit_cli, learned_cli, draw_cli) under its TITLE; ``main`` turns every error into one line."""
from __future__ import annotations

import argparse
import difflib
import logging
import re
import sys
import traceback
from typing import Dict, List, Optional, Tuple

from ..core.offline import enforce_offline

enforce_offline()

from ..core.version import __version__  # noqa: E402
from ..core.console import quiet_libraries  # noqa: E402
from ..core.errors import InterrogatorError  # noqa: E402
from . import app_cli, captions_cli, draw_cli, learned_cli, metric_cli, prompt_cli, run_cli, toolkit_cli  # noqa: E402
from .arguments import DEBUG_HELP, ArgParser, check_outputs, output_paths  # noqa: E402
from ..core.owned import record_written  # noqa: E402

GROUPS = (prompt_cli, run_cli, metric_cli, app_cli, captions_cli, toolkit_cli, learned_cli, draw_cli)
NOISY = ("httpx", "urllib3", "huggingface_hub", "transformers", "sentence_transformers", "faiss", "faiss.loader",
         "matplotlib", "bitsandbytes", "diffusers", "kernels")  # their log lines: errors only, unless --debug


USAGE = """Offline image-to-prompt, captioning and CLIP tools.

  python -m interrogator prompt photo.jpg --mode best       one image's prompt
  python -m interrogator submit --config C.json             a folder to a submission CSV and caption files
  python -m interrogator <command> --help                   a command's options
"""


class Commands:
    """The subparsers as each group adds to them, recording every command's parser and one-line help under the
    group's title (the top-level help lists them by group); each command's help is its description too, and its
    example (the group's EXAMPLES) closes its help."""

    def __init__(self, sub):
        self.sub, self.title = sub, ""
        self.groups: Dict[str, List[Tuple[str, str]]] = {}
        self.parsers: Dict[str, ArgParser] = {}

    def add_parser(self, name: str, **options):
        line = options.pop("help", "")  # listed by group in the description, not again by argparse
        self.groups.setdefault(self.title, []).append((name, line))
        options.setdefault("description", line[:1].upper() + line[1:] + ".")
        options.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)  # the example's lines kept
        self.parsers[name] = self.sub.add_parser(name, **options)
        return self.parsers[name]

    def add_examples(self, examples: Dict[str, str]) -> None:
        for name, example in examples.items():
            self.parsers[name].epilog = f"example:\n  python -m interrogator {example}"

    def listing(self) -> str:
        width = max(len(n) for names in self.groups.values() for n, _ in names) + 2
        return "\n".join(f"{title}:\n" + "\n".join(f"  {n:<{width}}{h}" for n, h in names) + "\n"
                         for title, names in self.groups.items())


def build_parser() -> ArgParser:
    """The parser of every command (its ``commands``: the Commands that list them)."""
    parser = ArgParser(prog="python -m interrogator", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    parser.add_argument("--version", action="version", version=f"interrogator {__version__}",
                        help="print the version and exit")
    commands = Commands(parser.add_subparsers(dest="command", required=True, metavar="<command>",
                                              help="one of the commands above"))
    for group in GROUPS:
        commands.title = group.TITLE
        group.add_commands(commands)
        commands.add_examples(group.EXAMPLES)
    parser.description = USAGE + "\n" + commands.listing()
    parser.commands = commands
    return parser


def parse(argv: Optional[List[str]]):
    """The arguments; an unknown one is ``error: <command>: unrecognized argument --x`` with the closest flag."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = parser.commands.parsers[args.command]
        flags = sorted(set(re.findall(r"--[a-z0-9][a-z0-9-]*", command.format_help())))
        close = difflib.get_close_matches(extra[0].split("=")[0], flags, n=1)
        command.error(f"unrecognized argument {extra[0]}" + (f"; did you mean {close[0]}?" if close else ""))
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.NOTSET if args.debug else logging.ERROR)
    if args.debug:
        logging.getLogger("interrogator").setLevel(logging.DEBUG)
    quiet_libraries(debug=args.debug)
    try:
        check_outputs(args)
        code = args.func(args)
        if code == 0:
            record_written(output_paths(args))
        return code
    except InterrogatorError as exc:
        return _failed(args, f"error: {exc}", 2)
    except OSError as exc:  # a file this command reads or writes: a full or read-only disk, a vanished file
        where = f" {exc.filename}" if exc.filename else ""
        return _failed(args, f"error: cannot use{where}: {exc.strerror or exc}", 2)
    except Exception as exc:  # a bug: still one line, with the way to the traceback
        return _failed(args, f"error: unexpected {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''} (rerun with --debug for the traceback)", 1)
    except KeyboardInterrupt:
        print("interrupted; no submission was written at the output path", file=sys.stderr)
        return 130


def _failed(args, line: str, code: int) -> int:
    """One line on stderr (the traceback before it with --debug), and the exit code."""
    if args.debug:
        traceback.print_exc()
    print(line, file=sys.stderr)
    return code
