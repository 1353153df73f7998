"""The module names of versions before 0.3 (``interrogator.pipeline``, ``interrogator.ray_engine``, ...) as
aliases of the modules in their role subpackages.

``import interrogator.pipeline`` gives the very module object ``interrogator.runner.pipeline``: not a copy and
not a shim that re-exports its names, so ``monkeypatch.setattr(interrogator.stages, ...)`` patches the module
the pipeline calls, and pickles name the real module. The aliases are resolved lazily, by a finder on
``sys.meta_path``, so ``import interrogator`` imports nothing more than it did.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

PACKAGE = __name__.rpartition(".")[0]
ROLES = {
    "core": "config errors plan record identity atomic workdir shards images console offline oom memory workers",
    "models": "caption clip clip_checkpoint tokenizer embed demo",
    "runner": "stages pipeline labels rank prompt modes outputs submission score tune",
    "engines": "parallel ray_engine",
    "tools": "features nearest toolkit pictures finetune",
    "learn": "pairs learned head bank blend",
    "commands": "cli arguments toolkit_cli learned_cli api",
}
ALIASES = {f"{PACKAGE}.{name}": f"{PACKAGE}.{role}.{name}" for role, names in ROLES.items() for name in names.split()}


class AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module name and loads it as the module it now is."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in ALIASES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(ALIASES[spec.name])

    def exec_module(self, module) -> None:
        """The real module ran when it was imported."""


def install() -> None:
    if not any(isinstance(finder, AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, AliasFinder())
