"""What shaped a result: the one definition of identity that resume (and the label cache) compare.

A run's identity (``run_identity``) holds:

- every config value that can change an output, and nothing else (``NEUTRAL_KEYS`` lists what is
  left out, with the reason);
- the identity of each checkpoint (``checkpoint_identity``: per file, a hash of all its bytes, computed once
  per path, size, mtime and inode and remembered in ``~/.cache/interrogator``; a folder is every file below
  it), in place of its path;
- the contents of the three label lists (sha256 of the bytes), in place of the ``dicts`` path;
- the resolved device type (``cpu``, or ``cuda`` with the GPU's name; not the index) and dtype;
- the versions of torch, transformers, open_clip and sentence-transformers as imported.

A run that embeds nothing (no output holds vectors, ``Config.embeds``) leaves the sentence model's checkpoint
and version out: it never loads them. Its batch records hold no embeddings, so a later run that embeds,
having another identity, never takes them for complete.

Images are identified per file, by a hash of their bytes taken while they are decoded
(``content_digest``); each saved batch keeps the digests of its images and is reused only while every
one of them still matches. Renaming a checkpoint's folder or moving the images elsewhere keeps the
identity; touching a checkpoint file only makes its hash be computed again. (Versions before 0.3 hashed the
first and last MiB only: a fine-tune that changed middle layers kept its identity and hit a stale cache.)

``chunk_size`` and the CLIP and sentence batch sizes stay in the identity. Ranking is exact for any
chunk size *given the scores* (rank.py), but a score is a float dot product whose last bit can
depend on the shape of the matrix product it is computed in. Measured here on CPU: chunk_size 7
instead of 2048 reordered 'canon eos c300' and 'canon eos c 3 0 0', two flavors that tokenize alike
and so tie, which changed a prompt. Batch sizes change product shapes in the same way.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from dataclasses import dataclass
from typing import Dict, Iterable, List, Union
from .atomic import write_bytes
import importlib
from concurrent.futures import ThreadPoolExecutor

EDGE_BYTES = 1 << 20  # versions before 0.3 hashed a checkpoint file at its first and last MiB
HASH_BLOCK = 8 << 20
FULL_PREFIX = "full-"  # marks an identity that hashes whole contents (versions before 0.3 did not)
MEMO_ENTRIES = 10_000  # remembered whole-file hashes
LIBRARIES = (("torch", "torch"), ("transformers", "transformers"), ("open_clip", "open_clip"),
             ("sentence_transformers", "sentence_transformers"))

# Config keys that cannot change any output, and why.
NEUTRAL_KEYS = {
    "output": "where the result goes",
    "vqgan_path": "only draw reads it",
    "num_workers": "image decoding gives the same pixels in any worker",
    "label_cache": "a cache hit equals a fresh encode (same checkpoint, same labels)",
    "demo": "only builds missing demo models",
    "blip_model": "a name for the records",
    "embedding_model": "a name for the records",
    "embedding_dir": "replaced by the imported sentence-transformers version",
    "low_memory": "the same stages in another schedule",
    "data_path": "images are identified by their contents",
    "image_column": "images are identified by their contents",
    "key_column": "which column names the samples, whose contents identify them",
    "dicts": "replaced by the label lists' contents",
    "blip_path": "replaced by the checkpoint's identity",
    "clip_path": "replaced by the checkpoint's identity",
    "embedding_path": "replaced by the checkpoint's identity",
    "formats": "which files are written from the same results",
    "txt_dir": "where the .txt files go",
    "overwrite": "whether existing .txt files are replaced",
    "replace_outputs": "whether output files this tool did not write may be replaced",
    "head_path": "replaced by the head's identity (its files)",
    "bank_path": "replaced by the bank's identity (its files)",
    "device": "replaced by the resolved device type and, on CUDA, the GPU's name (cuda and cuda:0 are one device)",
    "dtype": "replaced by the resolved dtype",
    "batch_size": "replaced by the resolved caption batch size",
    "caption_batch_size": "replaced by the resolved caption batch size",
    "tagger_path": "replaced by the tagger's identity (its files)",
    "txt_extension": "which caption files are written from the same results",
    "wds_caption_extension": "which member the same caption is written to",
    "existing_txt": "what existing caption files get, from the same results",
}
# Keys added after 0.3: in the identity only where they differ from their defaults, so that a run that does not
# use them keeps the identity 0.3 gave it (and resumes its work).
LATER_KEYS = {"load_in_4bit": False, "caption_prompt": None, "repetition_penalty": None, "cut_partial": False,
              "tag_threshold": 0.35, "character_threshold": 0.85, "tag_mcut": False, "max_tags": None,
              "tag_escape": False, "undesired_tags": [], "tag_replacements": [], "tags_first": [],
              "tag_separator": ", ", "caption_template": None, "trigger": ""}
CHECKPOINT_KEYS = ("blip_path", "clip_path", "embedding_path")
LEARNED_KEYS = ("head_path", "bank_path")


def content_digest(data: bytes) -> str:
    """The identity of an image file's bytes."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_digest(path: Union[str, Path]) -> str:
    """content_digest of a whole file, read in one go."""
    return content_digest(Path(path).read_bytes())


def content_identity(path: Union[str, Path]) -> str:
    """The exact identity of one file's contents: a hash of every byte (the same for a copy on another machine)."""
    return f"{FULL_PREFIX}{content_hash(path)}"


def checkpoint_identity(path: Union[str, Path], legacy: bool = False) -> str:
    """content_identity of a file, or of every file below a folder (links followed), with their relative names.

    legacy: the identity of versions before 0.3 (size, mtime and the first and last MiB), only to find the
    work folder of a run that such a version left unfinished (workdir.py).
    """
    one = legacy_file_identity if legacy else content_identity
    path = Path(path)
    if path.is_file():
        return one(path)
    h = hashlib.blake2b(digest_size=16)
    for root, dirs, names in os.walk(path, followlinks=True):
        dirs.sort()
        for name in sorted(names):
            file = Path(root) / name
            if file.is_file():
                h.update(f"{file.relative_to(path).as_posix()}\0{one(file)}\n".encode())
    return h.hexdigest()


def legacy_file_identity(path: Union[str, Path], with_mtime: bool = True) -> str:
    """Before 0.3: size, modification time and a hash of the first and last MiB of one file. Not exact (a
    fine-tune that changed only middle layers kept it), so it is only read, never relied on for new records."""
    path = Path(path)
    st = path.stat()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{st.st_size}:{st.st_mtime_ns if with_mtime else ''}:".encode())
    with open(path, "rb") as f:
        h.update(f.read(EDGE_BYTES))
        if st.st_size > EDGE_BYTES:
            f.seek(max(EDGE_BYTES, st.st_size - EDGE_BYTES))
            h.update(f.read(EDGE_BYTES))
    return h.hexdigest()


@dataclass(frozen=True)
class Weights:
    """The identity of CLIP weights (architecture key and the checkpoint's whole contents), and the identity
    that versions before 0.3 recorded for the same weights, so that heads, banks and stores they wrote are
    still recognised."""

    identity: str
    legacy: str

    def matches(self, recorded: str) -> bool:
        if FULL_PREFIX in recorded:
            return recorded == self.identity
        return recorded == self.legacy


def content_hash(path: Union[str, Path]) -> str:
    """blake2b-128 of a whole file, computed once per (path, size, mtime, inode) and remembered on disk.

    The change time is in the key too: a write that puts the old mtime back (``touch -r``, a copy with
    preserved times) still moves it, and no user can set it."""
    st = os.stat(path)
    key = f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{st.st_ctime_ns}"
    memo = _digest_memo()
    if key not in memo:
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(HASH_BLOCK), b""):
                h.update(block)
        memo[key] = h.hexdigest()
        _save_digest_memo(memo)
    return memo[key]


def digest_memo_path() -> Path:
    """Where whole-file hashes are remembered: $INTERROGATOR_CACHE, else ~/.cache/interrogator."""
    folder = os.environ.get("INTERROGATOR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "interrogator")
    return Path(folder) / "file-digests.json"


_MEMO: Dict[str, Dict[str, str]] = {}


def _digest_memo() -> Dict[str, str]:
    path = str(digest_memo_path())
    if path not in _MEMO:
        try:
            loaded = json.loads(Path(path).read_text(encoding="utf-8"))
            _MEMO[path] = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            _MEMO[path] = {}
    return _MEMO[path]


def _save_digest_memo(memo: Dict[str, str]) -> None:
    """Best effort: a folder that cannot be written only means the hash is computed again next run."""
    keep = dict(list(memo.items())[-MEMO_ENTRIES:])
    try:
        write_bytes(digest_memo_path(), json.dumps(keep).encode("utf-8"))
    except OSError:
        pass


def library_versions(sentence: bool = True) -> Dict[str, str]:
    """The versions of LIBRARIES as imported; sentence-transformers' only with ``sentence`` (a run that embeds)."""
    versions = {}
    for label, module in LIBRARIES if sentence else [lib for lib in LIBRARIES if lib[0] != "sentence_transformers"]:
        try:
            versions[label] = str(getattr(importlib.import_module(module), "__version__", "unknown"))
        except ImportError:
            versions[label] = "absent"
    return versions


def device_identity(device: str) -> str:
    """``cpu``, or ``cuda:<GPU name>`` (the index left out: cuda and cuda:0 are one device)."""
    if not device.startswith("cuda"):
        return device.split(":")[0]
    import torch  # lazy: slow to import
    return f"cuda:{torch.cuda.get_device_name(torch.device(device))}"


def digest(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_identity(config, label_files: Iterable[Path], versions: Dict[str, str], legacy: bool = False) -> dict:
    """Everything that shapes a batch's result, as a JSON-able dict (see the module docstring).

    legacy: as versions before 0.3 computed it (checkpoint_identity), to find their unfinished work."""
    values = {k: v for k, v in sorted(config.to_dict().items()) if k not in NEUTRAL_KEYS
              and not (k in LATER_KEYS and v == LATER_KEYS[k])}
    values["caption_batch"] = config.stage_batch_size("caption")
    values["device"] = device_identity(config.resolved_device())
    values["dtype"] = str(config.torch_dtype()).replace("torch.", "")
    values["checkpoints"] = {k: checkpoint_identity(getattr(config, k), legacy) for k in CHECKPOINT_KEYS
                             if getattr(config, k) is not None  # a run without a captioner has no blip_path
                             and (k != "embedding_path" or config.embeds())}  # nor one that embeds nothing
    if config.tagger_path is not None:
        values["checkpoints"]["tagger_path"] = checkpoint_identity(config.tagger_path, legacy)
    for key in LEARNED_KEYS:  # only where the blend uses them
        if getattr(config, key) is not None and config.blend_weight(key.split("_")[0]) > 0:
            values["checkpoints"][key] = checkpoint_identity(getattr(config, key), legacy)
    values["labels"] = {Path(p).name: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in label_files}
    values["versions"] = dict(versions)
    return values


def unchanged(saved: Dict[str, str], files) -> set:
    """The ids of ``files`` (images.ImageFile) whose bytes still have the digest saved for them: the one
    resume rule, for the work folder's batch records, Ray's Parquet batch files and the feature store.
    A file that cannot be read (digest "") never counts as unchanged: it is tried again."""
    candidates = [f for f in files if f.image_id in saved]
    current = hash_files(candidates)
    return {f.image_id for f, d in zip(candidates, current) if d and d == saved[f.image_id]}


def hash_files(files: list, threads: int = 8) -> List[str]:
    """The digest of each image's bytes (images.ImageFile.read: a file, or a sample in a shard; '' where they
    cannot be read; a shard's sample without an image has its own, samples.MissingImage), in threads (hashing
    releases the GIL)."""

    def one(file) -> str:
        try:
            return file.read()[1]
        except ValueError as exc:
            return getattr(exc, "digest", "")  # samples.MissingImage has one
    if len(files) < 16:
        return [one(f) for f in files]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, files))
