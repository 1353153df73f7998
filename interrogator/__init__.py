"""Offline image-to-prompt toolkit: BLIP-2 captions, exact CLIP label ranking, MiniLM submission CSV.

    import sys; sys.path.append("/kaggle/input/interrogator")
    from interrogator import execute
    vectors = execute(extend_path="/kaggle/input/interrogator/configs/kaggle_config.json")
"""
__version__ = "0.2.0"

from .offline import enforce_offline  # noqa: E402

enforce_offline()

from .api import execute  # noqa: E402
from .config import Config, load_config  # noqa: E402
from .errors import ConfigError, InterrogatorError, ModelLoadError, SubmissionError  # noqa: E402
from .pipeline import RunResult, run  # noqa: E402

__all__ = ["execute", "run", "Config", "load_config", "RunResult", "InterrogatorError", "ConfigError",
           "ModelLoadError", "SubmissionError"]
