"""``python -m interrogator <subcommand>``: each command group adds its own subcommands (prompt_cli, run_cli, metric_cli,
app_cli, toolkit_cli, learned_cli, draw_cli); ``main`` turns every error into one line."""
from __future__ import annotations

import logging
import sys
import traceback
from typing import List, Optional

from ..core.offline import enforce_offline

enforce_offline()

from ..core.version import __version__  # noqa: E402
from ..core.console import quiet_libraries  # noqa: E402
from ..core.errors import InterrogatorError  # noqa: E402
from . import app_cli, draw_cli, learned_cli, metric_cli, prompt_cli, run_cli, toolkit_cli  # noqa: E402
from .arguments import DEBUG_HELP, ArgParser, check_outputs, output_paths  # noqa: E402
from ..core.owned import record_written  # noqa: E402

GROUPS = (prompt_cli, run_cli, metric_cli, app_cli, toolkit_cli, learned_cli, draw_cli)
NOISY = ("httpx", "urllib3", "huggingface_hub", "transformers", "sentence_transformers", "faiss", "faiss.loader",
         "matplotlib", "bitsandbytes", "diffusers")


def build_parser() -> ArgParser:
    parser = ArgParser(prog="python -m interrogator", description=__doc__)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    parser.add_argument("--version", action="version", version=f"interrogator {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, help="what to do")
    for group in GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.ERROR)
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
