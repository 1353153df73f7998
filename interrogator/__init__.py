"""Offline image-to-prompt toolkit: BLIP-2 captions, exact CLIP label ranking, MiniLM submission CSV.

    import sys; sys.path.append("/kaggle/input/interrogator")
    from interrogator import execute
    vectors = execute(extend_path="/kaggle/input/interrogator/configs/kaggle_config.json")
"""
from .core.version import __version__  # noqa: E402,F401  (the package version)
from . import _aliases  # noqa: E402

_aliases.install()  # interrogator.pipeline, .ray_engine, ...: the modules of the role subpackages (README, Layout)

from .core.offline import enforce_offline  # noqa: E402

enforce_offline()

# The public names, imported on first use (PEP 562): ``python -m interrogator --help`` and every command's parser
# load no torch, and ``from interrogator import execute`` works as before.
_PUBLIC = {"execute": ".commands.api", "run": ".runner.pipeline", "Config": ".core.config",
           "load_config": ".core.config", "RunResult": ".runner.finish", "InterrogatorError": ".core.errors",
           "ConfigError": ".core.errors", "ModelLoadError": ".core.errors", "SubmissionError": ".core.errors"}
__all__ = list(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
