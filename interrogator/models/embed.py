"""Sentence embeddings of prompts with sentence-transformers, loaded from a local folder."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..core.config import EmbedSettings
from ..core.errors import ModelLoadError
from ..core.record import SUBMISSION_DIM
import inspect


def import_sentence_transformers(embedding_dir: Optional[str] = None):
    """The sentence_transformers module, from ``embedding_dir`` when given (put first on sys.path).

    ``embedding_dir`` serves notebooks that attach the sentence-transformers source
    as a dataset instead of installing it.
    """
    if embedding_dir and embedding_dir not in sys.path:
        sys.path.insert(0, embedding_dir)
    try:
        import sentence_transformers  # lazy: slow to import
    except ImportError as exc:
        raise ModelLoadError(f"cannot import sentence_transformers ({exc}); install it or set "
                             f"config key 'embedding_dir' to a folder holding it") from exc
    return sentence_transformers


def local_only_option(cls) -> dict:
    """``local_files_only=True`` where the constructor takes it; sentence-transformers before 2.3 does not,
    and reads a local folder without asking the hub anyway."""
    return {"local_files_only": True} if "local_files_only" in inspect.signature(cls.__init__).parameters else {}


def load_sentence_model(path: str, device: str, embedding_dir: Optional[str] = None, fp16: bool = False):
    """SentenceTransformer(path) with local files only, imported as ``import_sentence_transformers`` says."""
    SentenceTransformer = import_sentence_transformers(embedding_dir).SentenceTransformer
    if not (Path(path) / "modules.json").is_file() and not (Path(path) / "config.json").is_file():
        raise ModelLoadError(f"config key 'embedding_path': {path} is not a sentence-transformers model folder "
                             f"(no modules.json or config.json)")
    try:
        model = SentenceTransformer(str(path), device=device, **local_only_option(SentenceTransformer))
    except Exception as exc:
        raise ModelLoadError(f"config key 'embedding_path': cannot load the sentence model in {path}: "
                             f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    if fp16 and device.startswith("cuda"):
        model.half()
    return model


def load_sentence(settings: EmbedSettings, device: str, fp16: bool = False):
    """The config's sentence model, checked to give the submission's 384-d vectors."""
    model = load_sentence_model(settings.embedding_path, device, settings.embedding_dir, fp16=fp16)
    dim = embedding_dim(model)
    if dim != SUBMISSION_DIM:
        raise ModelLoadError(f"config key 'embedding_path': the sentence model in {settings.embedding_path} "
                             f"gives {dim}-d vectors; a Kaggle submission needs {SUBMISSION_DIM}-d "
                             f"(all-MiniLM-L6-v2)")
    return model


def embed_prompts(model, prompts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Unit-norm float32 embeddings (N, D) in prompt order; encode() batches and sorts by length."""
    vectors = model.encode(list(prompts), batch_size=batch_size, show_progress_bar=progress,
                           convert_to_numpy=True, normalize_embeddings=True)
    return np.asarray(vectors, dtype=np.float32).reshape(len(prompts), -1)


def embedding_dim(model) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())
