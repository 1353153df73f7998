"""The one argument layer of the command line: the parser class, the shared options, the value types.

Every subcommand's parser is an ``ArgParser``: a bad argument is one line, ``error: <command>: <what>``, and
exit 2, never a usage block or a traceback. Every numeric, range, template and path argument is parsed by one
of the types below, so a bad value stops the command before it reads a file, loads a model or writes
anything. Output files are checked (``output_file``: not a folder, its folder writable) as they are parsed.
"""
from __future__ import annotations

import argparse
import math
import string
import sys
from pathlib import Path
from typing import Callable, List, NoReturn, Optional, Sequence

from ..core.config import Config, load_config, replace
from ..core.errors import ConfigError, InterrogatorError
from ..core.owned import Inputs, check_write, config_inputs
from ..core.plan import check_folder, check_output

DEBUG_HELP = "show full tracebacks and the libraries' log lines"
DEVICE_HELP = "cpu, cuda or cuda:N (overrides the config)"


class ArgParser(argparse.ArgumentParser):
    """argparse with one-line errors (``error: ...``, exit 2); its subparsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog.replace('python -m interrogator ', '')}: {message}", file=sys.stderr)
        raise SystemExit(2)


# ---- value types ------------------------------------------------------------------------------
def _number(text: str, kind: Callable, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def int_at_least(least: int, most: Optional[int] = None) -> Callable[[str], int]:
    what = f"a whole number >= {least}" + (f" and <= {most}" if most is not None else "")

    def parse(text: str) -> int:
        value = _number(text, int, what)
        if value < least or (most is not None and value > most):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    parse.__name__ = f"int >= {least}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
port_number = int_at_least(1, 65535)
seed_number = int_at_least(0, 2 ** 63 - 1 - 10 ** 6)  # prompt i draws with seed + i (torch takes < 2**63 here)


def float_in(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    what = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        value = _number(text, float, what)
        if value < low or value > high or (low_open and value == low) or (high_open and value == high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    parse.__name__ = what
    return parse


def positive_float(text: str) -> float:
    value = _number(text, float, "a finite number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


probability = float_in(0.0, 1.0)
grid_step = float_in(0.0, 1.0, low_open=True)
holdout_share = float_in(0.0, 1.0, high_open=True)


def int_list(text: str) -> List[int]:
    """A comma-separated list of whole numbers >= 1, e.g. 1,2,3,5."""
    parts = [p.strip() for p in text.split(",")]
    if not parts or any(not p.isdigit() or int(p) < 1 for p in parts):
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 1 separated by commas, got {text!r}")
    return [int(p) for p in parts]


def choice_list(choices: Sequence[str]) -> Callable[[str], List[str]]:
    def parse(text: str) -> List[str]:
        parts = [p.strip() for p in text.split(",")]
        bad = [p for p in parts if p not in choices]
        if bad or not parts:
            raise argparse.ArgumentTypeError(f"expected some of {','.join(choices)} separated by commas, "
                                             f"got {text!r}")
        return list(dict.fromkeys(parts))
    parse.__name__ = "list"
    return parse


def template(text: str) -> str:
    """A prompt template with exactly one ``{}`` where the label goes (other braces doubled: ``{{``)."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a template: {exc}") from None
    if fields != [""]:
        raise argparse.ArgumentTypeError(f"expected a template with exactly one '{{}}' where the label goes "
                                         f"(write other braces as '{{{{' and '}}}}'), got {text!r}")
    return text


def shard_spec(text: str):
    """``i/N``: shard i of N (0 <= i < N)."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/N, got {text!r}") from None
    if not (count >= 1 and 0 <= index < count):
        raise argparse.ArgumentTypeError(f"expected i/N with 0 <= i < N, got {text!r}")
    return index, count


def image_range(text: str):
    """``lo:hi:total``: images lo..hi-1 of a folder of total images."""
    try:
        lo, hi, total = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected lo:hi:total, got {text!r}") from None
    if not 0 <= lo <= hi <= total:
        raise argparse.ArgumentTypeError(f"expected 0 <= lo <= hi <= total, got {text!r}")
    return lo, hi, total


def device_name(text: str) -> str:
    """cpu, cuda or cuda:N, and for CUDA a device this machine has (config.Config.check_device)."""
    try:
        replace(Config(), device=text).check_device()
    except InterrogatorError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("config key 'device': ", "").replace(
            " (in overrides)", "")) from None
    return text


class OutputPath(str):
    """A path an option names for the command to write (``output_file``): ``check_outputs`` finds them all."""


def output_file(text: str) -> str:
    """A file this command will write: not a folder, its folder writable (plan.check_output)."""
    try:
        check_output(text, "the output")
    except InterrogatorError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return OutputPath(text)


class PictureOutputPath(OutputPath):
    """A picture the command makes (a contact sheet, a heatmap): it may have an image extension."""


def picture_file(text: str) -> str:
    """An image file this command will make (``output_file`` otherwise)."""
    return PictureOutputPath(output_file(text))


def output_folder(text: str) -> str:
    """A folder this command will write in: not a file, writable (or creatable)."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    try:
        check_folder(Path(text), "the folder")
    except InterrogatorError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


# ---- what a command reads and writes -----------------------------------------------------------
INPUT_OPTIONS = ("config", "prompts", "pairs", "labels", "submission", "index", "shards", "init", "vqgan", "queries",
                 "texts_file", "image", "images", "data_path")


def check_outputs(args) -> None:
    """The one write rule (core/owned.py) for every file option of a command: none names an input of it (an
    input option's file, the config, its models and label lists) or has an image extension."""
    inputs = Inputs()
    for dest in INPUT_OPTIONS:
        values = getattr(args, dest, None)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and not isinstance(value, OutputPath):
                inputs.add(value, f"the file of --{dest.replace('_', '-')}")
    config = getattr(args, "config", None)
    if isinstance(config, str) and Path(config).is_file():
        try:
            inputs.files.update(config_inputs(load_config(config)).files)
        except ConfigError:
            pass  # the command itself reports it, in one line
    for dest, values in sorted(vars(args).items()):
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, OutputPath):
                check_write(value, f"--{dest.replace('_', '-')}", inputs, images=isinstance(value, PictureOutputPath),
                            replace=getattr(args, "replace_outputs", False))


def output_paths(args) -> list:
    """Every file an option of the command names for it to write (OutputPath)."""
    return [v for values in vars(args).values() for v in (values if isinstance(values, list) else [values])
            if isinstance(v, OutputPath)]


# ---- shared options ---------------------------------------------------------------------------
def add_config(p, required: bool = True, what: str = "JSON config") -> None:
    p.add_argument("--config", required=required, help=what)


def add_common(p, progress: bool = False, device: str = DEVICE_HELP) -> None:
    """The options every subcommand ends with: --device, --no-progress where it draws bars, --debug."""
    if device:
        p.add_argument("--device", type=device_name, help=device)
    if progress:
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--replace-outputs", action="store_true",
                   help="replace an output file this tool did not write (one it wrote, unchanged, is replaced anyway)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
