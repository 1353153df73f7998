"""Offline mode, forced: no model or tokenizer load may reach a hub, whatever the environment says."""
import os
import sys

_FLAGS = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
          "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}


def enforce_offline() -> None:
    """Set the hub's offline flags, also in an already-imported huggingface_hub."""
    os.environ.update(_FLAGS)
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
