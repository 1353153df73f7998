"""The module names of earlier versions, kept importing with a ``DeprecationWarning`` until ``DROPPED_IN``.

- the flat names of version 0.2 (``interrogator.pipeline``, ``interrogator.ray_engine``, ...), each found in
  the role subpackage that holds it now (``LEGACY`` lists them; where each lives is read from the package);
- the role paths that moved in 0.4 (``MOVED``): the template, the ranking and the score went down into
  ``core``, the fine-tuning into ``learn``.

``import interrogator.pipeline`` gives the very module object ``interrogator.runner.pipeline``: not a copy and
not a shim that re-exports its names, so patching one patches the module the code calls, and pickles name
the real module. The aliases are resolved lazily, by a finder on ``sys.meta_path``, so ``import interrogator``
imports nothing more than it did.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import pkgutil
import sys
import warnings
from pathlib import Path
from typing import Dict

PACKAGE = __name__.rpartition(".")[0]
DROPPED_IN = "0.5.0"
ROLES = ("core", "models", "runner", "engines", "tools", "learn", "commands")
LEGACY = ("config errors plan record identity atomic workdir shards images console offline oom memory workers "
          "caption clip clip_checkpoint tokenizer embed demo stages pipeline labels rank prompt modes outputs "
          "submission score tune parallel ray_engine features nearest toolkit pictures finetune pairs learned head "
          "bank blend cli arguments toolkit_cli learned_cli api template").split()
MOVED = {"runner.template": "core.template", "runner.rank": "core.rank", "runner.score": "core.score",
         "tools.finetune": "learn.finetune"}


def _homes() -> Dict[str, str]:
    """Each module name of the role subpackages, with the subpackage that holds it (read from the files)."""
    root = Path(__file__).resolve().parent
    return {info.name: role for role in ROLES for info in pkgutil.iter_modules([str(root / role)])}


def _aliases() -> Dict[str, str]:
    homes = _homes()
    aliases = {f"{PACKAGE}.{name}": f"{PACKAGE}.{homes[name]}.{name}" for name in LEGACY if name in homes}
    aliases.update({f"{PACKAGE}.{old}": f"{PACKAGE}.{new}" for old, new in MOVED.items()})
    return aliases


ALIASES = _aliases()


class AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module name and loads it as the module it now is, with a DeprecationWarning."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in ALIASES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        warnings.warn(f"{spec.name} is deprecated: import {ALIASES[spec.name]} (the old name goes in "
                      f"interrogator {DROPPED_IN})", DeprecationWarning, stacklevel=2)
        return importlib.import_module(ALIASES[spec.name])

    def exec_module(self, module) -> None:
        """The real module ran when it was imported."""


def install() -> None:
    if not any(isinstance(finder, AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, AliasFinder())
