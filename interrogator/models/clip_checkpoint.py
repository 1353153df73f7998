"""Which CLIP a config names, and what form its checkpoint file has: both settled before any model loads.

Names (config key ``clip_model``):

- ``ARCH`` (``ViT-L-14``): an open_clip architecture, GELU unless its config says QuickGELU
  (``ViT-L-14-quickgelu`` does);
- ``ARCH/TAG`` (``ViT-L-14/openai``, ``ViT-H-14/laion2b_s32b_b79k``), as clip-interrogator users write
  it: the architecture with open_clip's pretrained config for that tag applied (QuickGELU, mean/std,
  interpolation, resize mode), while the weights still come from the local ``clip_path``.

Checkpoint forms (config key ``clip_path``), told apart by their first bytes and, for zip archives, by
their member names:

- ``safetensors``: tensors only; nothing in the file runs;
- ``state-dict``: a ``torch.save`` file (zip or legacy pickle), read with ``weights_only=True``, which
  refuses anything but tensors and plain containers;
- ``torchscript``: an OpenAI release (``ViT-L-14.pt``), a TorchScript archive. It is read with
  ``torch.jit.load(map_location="cpu")`` and only its state dict is kept. Loading deserialises a
  TorchScript program (TorchScript code, not Python pickle): use such files from a source you trust.
  OpenAI's weights need QuickGELU, so this form implies it.
"""
from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

from ..core.errors import ModelLoadError
from ..core.identity import Weights, content_identity, legacy_file_identity
import warnings
import torch

log = logging.getLogger(__name__)

OPENAI_TAG = "openai"
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")  # buffers of OpenAI's archives
PREPROCESS_KEYS = {"mean": "image_mean", "std": "image_std", "interpolation": "image_interpolation",
                   "resize_mode": "image_resize_mode"}


def checkpoint_form(path: str | Path) -> str:
    """'safetensors', 'torchscript' or 'state-dict'; ModelLoadError naming the file for anything else."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise ModelLoadError(f"config key 'clip_path': cannot read {path}: {exc.strerror or exc}") from exc
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise ModelLoadError(f"config key 'clip_path': {path} is a damaged zip archive ({exc})") from exc
        if any("/code/" in n or n.endswith("constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "state-dict"
        raise ModelLoadError(f"config key 'clip_path': {path} is a zip archive but not a torch checkpoint")
    if head[:1] == b"\x80":  # a pickle protocol marker: torch.save's legacy format
        return "state-dict"
    if len(head) >= 9 and head[8:9] == b"{":  # 8-byte header length, then the JSON header
        return "safetensors"
    raise ModelLoadError(f"config key 'clip_path': {path} is not a CLIP checkpoint this tool reads "
                         f"(.safetensors, a torch.save state dict, or an OpenAI TorchScript archive)")


MODEL_CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"


_configs_registered = False


def register_model_configs() -> None:
    """Make the architectures in interrogator/model_configs known to open_clip (once per process)."""
    global _configs_registered
    if not _configs_registered:
        import open_clip  # lazy: slow to import
        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _configs_registered = True



@dataclass(frozen=True)
class ClipSpec:
    """A resolved ``clip_model`` for one checkpoint: what to build and how to read the weights."""

    name: str                 # as written in the config
    arch: str                 # open_clip architecture
    tag: Optional[str]        # pretrained tag whose config applies, if any
    quick_gelu: bool
    form: str                 # checkpoint_form of the file
    preprocess: Dict[str, object] = field(default_factory=dict)  # create_model_and_transforms overrides

    @property
    def key(self) -> str:
        """What about the model, beyond its weights, shapes its features (for the label cache)."""
        return f"{self.arch}{'-quickgelu' if self.quick_gelu else ''}"

    def identity(self, checkpoint: str | Path) -> str:
        """The features' identity: this key and the checkpoint's whole contents (the same for a copy elsewhere).

        The label cache, feature stores and learned heads compare it; it needs no model loaded."""
        return self.weights(checkpoint).identity

    def weights(self, checkpoint: str | Path):
        """identity.Weights of this checkpoint: its identity, and the one versions before 0.3 recorded."""
        return Weights(f"{self.key}:{content_identity(checkpoint)}",
                       f"{self.key}:{legacy_file_identity(checkpoint, with_mtime=False)}")


def resolve_clip(name: str, checkpoint: str | Path) -> ClipSpec:
    """The architecture, tag and QuickGELU setting for ``name`` and this checkpoint file; errors say what to write."""
    import open_clip  # lazy: slow to import
    register_model_configs()
    if ":" in name:  # open_clip's schema prefixes (a hub id, a local folder)
        raise ModelLoadError(f"config key 'clip_model': {name!r} names a hub or folder model; name an "
                             f"architecture (ViT-L-14) or ARCH/TAG (ViT-L-14/openai) and give the file as clip_path")
    arch, _, tag = name.partition("/")
    if arch not in open_clip.list_models():
        raise ModelLoadError(f"config key 'clip_model': unknown open_clip architecture {arch!r} "
                             f"(known: ViT-L-14, ViT-H-14, ... or a JSON in interrogator/model_configs)")
    preprocess, quick_gelu = {}, _arch_quick_gelu(arch)
    if tag:
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        if not cfg:
            known = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
            raise ModelLoadError(f"config key 'clip_model': {arch} has no pretrained tag {tag!r} (known: {known})")
        # OpenAI's weights are QuickGELU; open_clip before 2.29 says so in its loader, not in the tag's config
        quick_gelu = quick_gelu or bool(cfg.get("quick_gelu", False)) or tag == OPENAI_TAG
        preprocess = {PREPROCESS_KEYS[k]: cfg[k] for k in PREPROCESS_KEYS if cfg.get(k) is not None}
    form = checkpoint_form(checkpoint)
    if form == "torchscript":
        if tag and tag != OPENAI_TAG:
            raise ModelLoadError(f"config key 'clip_model': {checkpoint} is an OpenAI TorchScript archive, "
                                 f"but {name!r} names the {tag!r} weights; write clip_model "
                                 f"\"{arch}/{OPENAI_TAG}\"")
        if not quick_gelu:
            log.warning("clip_path %s is an OpenAI TorchScript archive, whose weights need QuickGELU; building %s "
                        "with QuickGELU (write clip_model \"%s/%s\" to say so)", checkpoint, arch, arch, OPENAI_TAG)
            quick_gelu = True
    return ClipSpec(name, arch, tag or None, quick_gelu, form, preprocess)


def _arch_quick_gelu(arch: str) -> bool:
    import open_clip  # lazy: slow to import
    return bool((open_clip.get_model_config(arch) or {}).get("quick_gelu", False))


def read_torchscript_state_dict(path: str | Path):
    """The state dict of an OpenAI TorchScript archive, in open_clip's names (its extra buffers dropped)."""
    try:
        with warnings.catch_warnings():  # torch marks jit.load deprecated; it is the reader of these files
            warnings.simplefilter("ignore", FutureWarning)
            archive = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelLoadError(f"config key 'clip_path': cannot read the TorchScript archive {path}: "
                             f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    state = archive.state_dict()
    for key in OPENAI_EXTRA_KEYS:
        state.pop(key, None)
    return state
