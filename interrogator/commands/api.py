"""The notebook entry point: ``execute(...)`` -> embeddings in imgId order.

``execute`` takes the original project's call as it was written in its notebooks::

    execute(model="clip-interrogator-embedding", data_path="/kaggle/input/stable-diffusion-image-to-prompts",
            extend_path="/kaggle/input/.../config.json", batch_size=16, max_flavors=3, num_beams=6)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from ..core.config import load_config
from ..engines.submit import Distribution, submit

log = logging.getLogger(__name__)

CAPTIONER_AND_CLIP_KEYS = ("blip_path", "clip_path")
SENTENCE_KEYS = ("embedding_path", "embedding_dir")


def execute(model_path: Optional[str] = None, data_path: Optional[str] = None, model: Optional[str] = None,
            extend_path: Optional[str] = None, model_extend_path: Optional[str] = None,
            batch_size: Optional[int] = None, max_flavors: Optional[int] = None, num_beams: Optional[int] = None,
            output: Optional[str] = None, return_prompts: bool = False, progress: bool = True,
            engine: str = "local", parquet_dir: Optional[str] = None, ray_address: Optional[str] = None,
            **overrides: Any):
    """Run the pipeline and return float32 embeddings of shape (n_images, 384), in imgId order.

    The first eight parameters are the original project's, in its order:

    - model_path: the folder that the config's relative ``blip_path`` and ``clip_path`` resolve against
      (the models' base folder; by default the config file's folder);
    - data_path: the image folder; a competition folder whose images are in ``images/`` works too;
    - model: a captioner folder (sets ``blip_path``), or else a name such as
      "clip-interrogator-embedding", which is reported and otherwise ignored;
    - extend_path: the JSON config that fills in everything else;
    - model_extend_path: the folder that the config's relative ``embedding_path`` and ``embedding_dir``
      (the sentence model and its library) resolve against;
    - batch_size, max_flavors, num_beams: as the config keys.

    A parameter left out (None) falls back to the config file, then to the defaults. ``output`` writes
    the submission CSV there; without it the CSV is written only when the config file names an
    ``output``. Any other config key may be passed as a keyword. With return_prompts=True, returns
    ``(embeddings, frame)`` where frame has columns imgId, caption, prompt. Where ``formats`` holds no format
    with vectors (only ``txt``, ``csv``, ``jsonl``), nothing is embedded and embeddings is None.

    engine="ray" runs the same stages on Ray Data (engines/submit.py chooses, as for the ``submit`` command): the cluster at ``ray_address`` (or
    RAY_ADDRESS), else a local one; per-batch Parquet files go to ``parquet_dir`` (default: beside the
    output), and the CSV is written from them when an output is named, as above.
    """
    blip_path = None
    if model is not None:
        if Path(model).is_dir():
            blip_path = model
        else:
            log.info("model %r is a name, not a folder: reported and otherwise ignored (the config's blip_path "
                     "names the captioner)", model)
    bases = {}
    for base, keys in ((model_path, CAPTIONER_AND_CLIP_KEYS), (model_extend_path, SENTENCE_KEYS)):
        if base is not None:
            bases.update({k: base for k in keys})
    config = load_config(extend_path, path_bases=bases, blip_path=blip_path, data_path=data_path,
                         batch_size=batch_size, max_flavors=max_flavors, num_beams=num_beams, output=output,
                         **overrides)
    write = output is not None or "output" in config.given
    result = submit(config, engine, Distribution(parquet_dir=parquet_dir, ray_address=ray_address), write=write,
                    progress=progress)
    embeddings = None if result.embeddings is None else np.ascontiguousarray(result.embeddings, dtype=np.float32)
    if not return_prompts:
        return embeddings
    frame = pd.DataFrame({"imgId": result.image_ids, "caption": result.captions, "prompt": result.prompts})
    return embeddings, frame
