"""Offline image-to-prompt toolkit: BLIP-2 captions, exact CLIP label ranking, MiniLM submission CSV.

    import sys; sys.path.append("/kaggle/input/interrogator")
    from interrogator import execute
    vectors = execute(extend_path="/kaggle/input/interrogator/configs/kaggle_config.json")
"""
from .core.version import __version__  # noqa: E402
from . import _aliases  # noqa: E402

_aliases.install()  # interrogator.pipeline, .ray_engine, ...: the modules of the role subpackages (README, Layout)

from .core.offline import enforce_offline  # noqa: E402

enforce_offline()

from .commands.api import execute  # noqa: E402
from .core.config import Config, load_config  # noqa: E402
from .core.errors import ConfigError, InterrogatorError, ModelLoadError, SubmissionError  # noqa: E402
from .runner.finish import RunResult  # noqa: E402
from .runner.pipeline import run  # noqa: E402

__all__ = ["execute", "run", "Config", "load_config", "RunResult", "InterrogatorError", "ConfigError",
           "ModelLoadError", "SubmissionError"]
