"""The notebook entry point: ``execute(...)`` -> embeddings in imgId order."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .config import load_config
from .pipeline import run


def execute(model: Optional[str] = None, data_path: Optional[str] = None, extend_path: Optional[str] = None,
            batch_size: int = 16, max_flavors: int = 3, num_beams: int = 1, output: Optional[str] = None,
            return_prompts: bool = False, progress: bool = True, **overrides: Any):
    """Run the pipeline and return float32 embeddings of shape (n_images, 384), in imgId order.

    model: the captioner folder (overrides the config's ``blip_path``).
    data_path: the image folder. extend_path: a JSON config whose values fill in the rest.
    output: also write the submission CSV there. Any other config key may be passed as a keyword.
    With return_prompts=True, returns ``(embeddings, frame)`` where frame has
    columns imgId, caption, prompt.
    """
    config = load_config(extend_path, blip_path=model, data_path=data_path, batch_size=batch_size,
                         max_flavors=max_flavors, num_beams=num_beams, output=output, **overrides)
    result = run(config, progress=progress, write=output is not None)
    embeddings = np.ascontiguousarray(result.embeddings, dtype=np.float32)
    if not return_prompts:
        return embeddings
    import pandas as pd
    frame = pd.DataFrame({"imgId": result.image_ids, "caption": result.captions, "prompt": result.prompts})
    return embeddings, frame
