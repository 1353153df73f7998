"""What a run shows a person: progress bars on a terminal only, and the libraries' chatter kept out.

- Progress bars are drawn only when stderr is a terminal; in a log file or a notebook's captured
  stream they would leave carriage returns and cursor-movement escapes.
- open_clip logs its steps (``INFO root: ...``) and a misleading "No pretrained weights loaded"
  warning (this tool loads the weights itself) on the root logger; transformers draws a bar per
  checkpoint load. Both are hidden unless debugging (``--debug``), errors excepted.
"""
from __future__ import annotations

import logging
import sys

from tqdm.auto import tqdm

_debug = False


class _OpenClipChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        chatter = "open_clip" in record.pathname.replace("\\", "/") and record.levelno < logging.ERROR
        return _debug or not chatter


_FILTER = _OpenClipChatter()


def quiet_libraries(debug: bool = False) -> None:
    """Hide open_clip's log lines and transformers' loading bars (idempotent); ``debug`` shows them."""
    global _debug
    _debug = debug
    root = logging.getLogger()
    if _FILTER not in root.filters:
        root.addFilter(_FILTER)
    try:
        from transformers.utils import logging as hf_logging  # lazy: slow to import
        (hf_logging.enable_progress_bar if debug else hf_logging.disable_progress_bar)()
    except ImportError:
        pass


def bars_enabled(requested: bool) -> bool:
    """Progress bars when asked for and stderr is a terminal."""
    return requested and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def bar(total: int, desc: str, unit: str, requested: bool, position: int = 0) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, position=position, leave=True, disable=not bars_enabled(requested))
