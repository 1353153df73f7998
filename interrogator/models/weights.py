"""The one check of a checkpoint against its model, for every loader (captioners, CLIP, the learned head,
the VQGAN): a checkpoint that leaves any weight of the model unset is refused, since the model would run on
its random initial values and give noise with exit 0; weights the model does not use are named in one
warning. ``load_weights`` loads a state dict under that rule; ``check_loaded`` applies it to what a library's
own loader reports (transformers' and diffusers' ``output_loading_info``, torch's ``load_state_dict``)."""
from __future__ import annotations

import logging
from typing import Iterable, Mapping

import torch

from ..core.errors import ModelLoadError

log = logging.getLogger(__name__)
FIRST = 3  # names given in a message


def check_loaded(missing: Iterable[str], unexpected: Iterable[str], path, what: str) -> None:
    """Missing weights: ModelLoadError naming the count and the first names; unexpected ones: one warning."""
    missing, unexpected = sorted(missing or ()), sorted(unexpected or ())
    if missing:
        raise ModelLoadError(f"{what}: the checkpoint in {path} leaves {len(missing)} weights of the model unset "
                             f"(first: {', '.join(missing[:FIRST])}); it is not a checkpoint of this model")
    if unexpected:
        log.warning("%s: the checkpoint in %s has %d weights the model does not use (first: %s)", what, path,
                    len(unexpected), ", ".join(unexpected[:FIRST]))


def load_weights(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path, what: str) -> None:
    """``state`` into ``module`` under the rule above; a tensor of another shape is one line too."""
    try:
        keys = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatches: torch lists them on several lines
        raise ModelLoadError(f"{what}: the checkpoint in {path} does not fit the model: "
                             f"{' '.join(str(exc).split())[:300]}") from None
    check_loaded(keys.missing_keys, keys.unexpected_keys, path, what)
