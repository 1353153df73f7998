"""The competition metric: mean cosine similarity between submitted and true prompt embeddings."""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import pandas as pd

from .errors import InterrogatorError
import logging


def read_prompts(path) -> pd.DataFrame:
    """An ``imgId,prompt`` CSV, sorted by imgId."""
    try:
        frame = pd.read_csv(path, dtype={"imgId": str, "prompt": str}, keep_default_na=False)
    except (FileNotFoundError, pd.errors.ParserError, ValueError) as exc:
        raise InterrogatorError(f"cannot read prompts {path}: {exc}") from exc
    if list(frame.columns[:2]) != ["imgId", "prompt"]:
        raise InterrogatorError(f"{path}: expected columns imgId,prompt, got {','.join(frame.columns)}")
    if frame.imgId.duplicated().any():
        raise InterrogatorError(f"{path}: imgId {frame.imgId[frame.imgId.duplicated()].iloc[0]!r} appears twice")
    return frame.sort_values("imgId", kind="stable").reset_index(drop=True)


def matched_prompts(path, ids: Sequence[str], folder, command: str) -> pd.DataFrame:
    """The true prompts (read_prompts) of the images ``ids``; those of no image are counted in one warning, and
    none matching is an error."""
    truth = read_prompts(path)
    matched = truth[truth.imgId.isin(set(ids))].reset_index(drop=True)
    if matched.empty:
        raise InterrogatorError(f"{command}: no imgId of {path} is an image of {folder}")
    if len(matched) < len(truth):
        lost = truth.imgId[~truth.imgId.isin(set(ids))]
        logging.getLogger(__name__).warning(
            "%s: %d of the %d prompts in %s name no image of %s and are left out (first: %s)", command,
            len(lost), len(truth), path, folder, ", ".join(repr(i) for i in lost.iloc[:3]))
    return matched


def cosine_per_image(ids: Sequence[str], predicted: np.ndarray, true_ids: Sequence[str],
                     true_vectors: np.ndarray) -> Dict[str, float]:
    """Cosine of each true image's vector with the submitted one; a missing image scores 0."""
    submitted = dict(zip(ids, np.asarray(predicted, dtype=np.float64)))
    scores = {}
    for image_id, truth in zip(true_ids, np.asarray(true_vectors, dtype=np.float64)):
        guess = submitted.get(image_id)
        if guess is None:
            scores[image_id] = 0.0
            continue
        denom = np.linalg.norm(guess) * np.linalg.norm(truth)
        scores[image_id] = float(guess @ truth / denom) if denom else 0.0
    return scores


def mean_cosine(ids: Sequence[str], predicted: np.ndarray, true_ids: Sequence[str], true_vectors: np.ndarray) -> float:
    """The competition metric: the mean over true images of cosine_per_image."""
    scores = cosine_per_image(ids, predicted, true_ids, true_vectors)
    return sum(scores.values()) / len(scores) if scores else 0.0
