"""Every config key as a flag, made from the config's one schema (core/config.py: the keys, their types and
KEY_HELP), so that a new key gets its flag, its check and its help line with nothing else written.

``max_flavors`` is ``--max-flavors``; a true/false key is ``--key`` / ``--no-key``; a list key takes several
values (``--undesired-tags a b``; ``--blend 0.6 0.3 0.1``). Each value is checked as the file's would be, when it
is parsed, so a bad one is an ``error: <command>: argument --key: ...`` line before anything loads. A flag the
command already has for a key (``submit --output``, ``--batch-size``) stays the command's own. Flags override
the file; ``--print-config`` prints the merged config and stops.
"""
from __future__ import annotations

import argparse
import json
import typing
from dataclasses import fields
from typing import Any, Dict, Iterable, Optional

from ..core.config import KEY_HELP, Config, check_value, user_keys
from ..core.errors import ConfigError

PREFIX = "set_"  # the parsed value of key k is args.set_k (None: not given)


def flag_of(key: str) -> str:
    return "--" + key.replace("_", "-")


def _kinds(hint) -> set:
    return set(typing.get_args(hint)) or {hint}


def _scalar(key: str, kinds: set):
    """The parser of one value of ``key``: a number where the key takes one, else the text; then checked."""
    def parse(text: str):
        value: Any = text
        for kind in (int, float):
            if kind in kinds:
                try:
                    value = kind(text)
                    break
                except ValueError:
                    pass
        try:
            check_value(key, value)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value
    return parse


def _item(key: str):
    """One item of a list key: a number in ``blend``, else the text (the whole list is checked on load)."""
    return float if key == "blend" else str


def add_config_flags(parser, skip: Iterable[str] = (), only: Optional[Iterable[str]] = None) -> None:
    """A flag for every config key (or those of ``only``) but ``skip`` and those the command already has."""
    group = parser.add_argument_group("config keys (each overrides the config file's value)")
    chosen = None if only is None else set(only)
    for key, hint in user_keys().items():
        if key in skip or (chosen is not None and key not in chosen):
            continue
        kinds = _kinds(hint)
        options: Dict[str, Any] = {"dest": PREFIX + key, "default": None, "help": KEY_HELP[key]}
        if bool in kinds:
            options["action"] = argparse.BooleanOptionalAction
        elif list in kinds:
            options.update(nargs="+", type=_item(key), metavar="V")
        else:
            options.update(type=_scalar(key, kinds), metavar="V")
        try:
            group.add_argument(flag_of(key), **options)
        except argparse.ArgumentError:
            continue  # the command's own flag for this key
    parser.add_argument("--print-config", action="store_true", help="print the merged config (file and flags) "
                                                                       "as JSON and stop")


def flag_overrides(args) -> Dict[str, Any]:
    """{key: value} of the config flags given (for load_config's overrides)."""
    return {name[len(PREFIX):]: value for name, value in vars(args).items()
            if name.startswith(PREFIX) and value is not None}


def print_config(config: Config) -> None:
    """The merged config as the JSON file that would give it."""
    keys = user_keys()
    print(json.dumps({f.name: getattr(config, f.name) for f in fields(Config) if f.name in keys}, indent=1))
