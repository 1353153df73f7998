"""The VQGAN that ``draw`` decodes, built as diffusers' ``VQModel`` (the ``[draw]`` extra).

``vqgan_path`` is one of:
- a taming-transformers checkpoint: ``last.ckpt`` (or any ``*.ckpt``) with its ``model.yaml``, the way taming's
  downloads lay them out (``checkpoints/last.ckpt`` beside ``configs/model.yaml``, or both in one folder, or
  ``NAME.ckpt`` beside ``NAME.yaml``); the path may name the folder or the ``.ckpt``;
- a folder ``convert-vqgan`` wrote: diffusers' ``config.json`` and ``diffusion_pytorch_model.safetensors``.

Why diffusers' VQModel represents taming's ``VQModel`` exactly: both are the same encoder and decoder (GroupNorm
of 32 groups at eps 1e-6, SiLU, 3x3 convolutions, a 1x1 shortcut where the width changes, downsampling by a
stride-2 convolution after a (0, 1, 0, 1) zero pad, nearest upsampling then a convolution, one-head attention
scaled by C^-1/2 at the resolutions in ``attn_resolutions`` and in the middle block), with ``quant_conv``, the
codebook and ``post_quant_conv`` between them. Taming's 1x1-convolution attention projections are diffusers'
linear ones (the same matrices, reshaped), and taming's decoder lists its levels from the highest resolution
while diffusers' lists them from the lowest. ``TAMING_RENAMES`` and ``convert_state_dict`` are that mapping;
``tests/test_draw.py`` checks the decoder output of a converted random VQGAN against a taming-layout model.

A taming checkpoint is a Lightning checkpoint. It is read with ``torch.load(weights_only=True)``; one that
holds pickled objects besides tensors (old Lightning versions stored their callbacks by class) is read only
with ``trust=True`` (``--trust-checkpoint``), since unpickling runs code the file names.
``convert-vqgan`` writes it once as safetensors, so later runs never unpickle.
"""
from __future__ import annotations

import pickle
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from ..core.errors import InterrogatorError, ModelLoadError
from ..models.weights import check_loaded, load_weights
import os
import shutil
import tempfile
import json

TAMING_TARGET = "taming.models.vqgan.VQModel"
CONVERTED_CONFIG = "config.json"
GROUPS = 32  # taming's Normalize: GroupNorm(32, eps=1e-6)


def require_diffusers():
    try:
        import diffusers  # noqa: F401
    except ImportError:
        raise InterrogatorError("drawing needs diffusers: pip install 'interrogator[draw]'") from None


@dataclass(frozen=True)
class TamingLayout:
    """The ``ddconfig`` and codebook of a taming ``VQModel`` (its ``model.yaml``)."""

    ch: int
    ch_mult: Tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: Tuple[int, ...]
    resolution: int
    z_channels: int
    in_channels: int
    out_ch: int
    n_embed: int
    embed_dim: int

    @property
    def levels(self) -> int:
        return len(self.ch_mult)

    def attends(self, level: int) -> bool:
        return self.resolution // 2 ** level in self.attn_resolutions

    def diffusers_config(self) -> dict:
        """diffusers ``VQModel`` arguments for the same network."""
        levels = range(self.levels)
        return {"in_channels": self.in_channels, "out_channels": self.out_ch,
                "down_block_types": ["AttnDownEncoderBlock2D" if self.attends(i) else "DownEncoderBlock2D"
                                     for i in levels],
                "up_block_types": ["AttnUpDecoderBlock2D" if self.attends(i) else "UpDecoderBlock2D"
                                   for i in reversed(levels)],
                "block_out_channels": [self.ch * m for m in self.ch_mult], "layers_per_block": self.num_res_blocks,
                "act_fn": "silu", "latent_channels": self.z_channels, "sample_size": self.resolution,
                "num_vq_embeddings": self.n_embed, "vq_embed_dim": self.embed_dim, "norm_num_groups": GROUPS}


def read_layout(yaml_path: Path) -> TamingLayout:
    """The layout a taming ``model.yaml`` describes; ModelLoadError naming the file and key otherwise."""
    import yaml  # lazy: the [draw] extra
    try:
        doc = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"vqgan_path: {yaml_path} is not YAML: {str(exc).splitlines()[0]}") from None
    model = doc.get("model") if isinstance(doc, dict) else None
    target = model.get("target") if isinstance(model, dict) else None
    if target != TAMING_TARGET:
        raise ModelLoadError(f"vqgan_path: {yaml_path} describes {target or 'no model.target'}, not a VQGAN "
                             f"({TAMING_TARGET})")
    params = model.get("params") or {}
    dd = params.get("ddconfig") or {}
    try:
        layout = TamingLayout(ch=int(dd["ch"]), ch_mult=tuple(int(m) for m in dd["ch_mult"]),
                              num_res_blocks=int(dd["num_res_blocks"]),
                              attn_resolutions=tuple(int(r) for r in dd.get("attn_resolutions", ())),
                              resolution=int(dd["resolution"]), z_channels=int(dd["z_channels"]),
                              in_channels=int(dd.get("in_channels", 3)), out_ch=int(dd.get("out_ch", 3)),
                              n_embed=int(params["n_embed"]), embed_dim=int(params["embed_dim"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"vqgan_path: {yaml_path}: model.params lacks or mistypes {exc}") from None
    if dd.get("double_z"):
        raise ModelLoadError(f"vqgan_path: {yaml_path}: ddconfig.double_z is true (a KL autoencoder), not a VQGAN")
    if any(layout.ch * m % GROUPS for m in layout.ch_mult):
        raise ModelLoadError(f"vqgan_path: {yaml_path}: every ch x ch_mult must be a multiple of {GROUPS}")
    return layout


# taming name (after the level renumbering below) -> diffusers name; applied in order, first match wins
TAMING_RENAMES = (
    (r"(encoder|decoder)\.mid\.block_(\d)\.", lambda m: f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}."),
    (r"(encoder|decoder)\.mid\.attn_1\.", r"\1.mid_block.attentions.0."),
    (r"encoder\.down\.(\d+)\.block\.", r"encoder.down_blocks.\1.resnets."),
    (r"encoder\.down\.(\d+)\.attn\.", r"encoder.down_blocks.\1.attentions."),
    (r"encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0."),
    (r"decoder\.up\.(\d+)\.block\.", r"decoder.up_blocks.\1.resnets."),
    (r"decoder\.up\.(\d+)\.attn\.", r"decoder.up_blocks.\1.attentions."),
    (r"decoder\.up\.(\d+)\.upsample\.", r"decoder.up_blocks.\1.upsamplers.0."),
    (r"(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out."),
)
LEAF_RENAMES = {"nin_shortcut": "conv_shortcut", "norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v",
                "proj_out": "to_out.0"}
ATTENTION_LEAVES = ("q", "k", "v", "proj_out")


def convert_key(key: str, levels: int) -> str:
    """One taming parameter name as diffusers names it."""
    key = re.sub(r"^decoder\.up\.(\d+)\.", lambda m: f"decoder.up.{levels - 1 - int(m[1])}.", key)
    for pattern, repl in TAMING_RENAMES:
        new = re.sub(f"^{pattern}", repl, key)
        if new != key:
            key = new
            break
    parts = key.split(".")
    if len(parts) >= 2 and parts[-2] in LEAF_RENAMES and ("attentions" in parts or parts[-2] == "nin_shortcut"):
        parts[-2:-1] = LEAF_RENAMES[parts[-2]].split(".")
    return ".".join(parts)


def convert_state_dict(state: Dict[str, torch.Tensor], layout: TamingLayout) -> Dict[str, torch.Tensor]:
    """taming's VQModel parameters as diffusers' (the loss's discriminator and LPIPS weights left out)."""
    out = {}
    for key, value in state.items():
        if not key.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "quantize.")):
            continue
        new = convert_key(key, layout.levels)
        leaf = key.split(".")[-2] if key.count(".") >= 1 else ""
        if leaf in ATTENTION_LEAVES and ".attn" in key and value.dim() == 4:
            value = value[:, :, 0, 0]
        out[new] = value.contiguous()
    return out


# ---- reading a checkpoint -------------------------------------------------------------------------
class _Stub:
    """What a trusted read makes of a pickled class its module is not installed for (Lightning callbacks)."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


class _TolerantUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Stub,), {"__module__": module})


# a pickle module for torch.load(pickle_module=...): the standard one, with missing classes stubbed
TOLERANT_PICKLE = types.SimpleNamespace(Unpickler=_TolerantUnpickler, load=pickle.load, loads=pickle.loads,
                                        __name__="pickle")


def read_checkpoint(path: Path, trust: bool) -> Dict[str, torch.Tensor]:
    """The state dict of a taming (Lightning) checkpoint, read with weights_only unless ``trust``."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust:
            what = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else "objects besides tensors"
            raise ModelLoadError(
                f"vqgan_path: {path} holds pickled objects besides tensors ({what}); reading it runs the code "
                f"it names: pass --trust-checkpoint if you trust where it came from (convert-vqgan "
                f"--trust-checkpoint converts it once to safetensors)") from None
        obj = _trusted_load(path)
    except (RuntimeError, EOFError, ValueError) as exc:
        raise ModelLoadError(f"vqgan_path: cannot read {path}: {type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"vqgan_path: {path} holds no state dict of tensors")
    return state


def _trusted_load(path: Path):
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=TOLERANT_PICKLE)
    except Exception as exc:  # a corrupt or foreign pickle
        raise ModelLoadError(f"vqgan_path: cannot read {path}: {type(exc).__name__}: {str(exc)[:200]}") from None


# ---- finding and loading --------------------------------------------------------------------------
@dataclass(frozen=True)
class VqganSource:
    """Where a VQGAN's files are: a converted folder, or a taming checkpoint and its yaml."""

    path: Path
    converted: Optional[Path] = None
    checkpoint: Optional[Path] = None
    yaml: Optional[Path] = None

    def factor(self) -> int:
        """How many pixels one latent position covers (16 for an f16 VQGAN): sizes are multiples of it."""
        return 2 ** (len(self.diffusers_config()["block_out_channels"]) - 1)

    def diffusers_config(self) -> dict:
        if self.converted is not None:
            return json.loads((self.converted / CONVERTED_CONFIG).read_text(encoding="utf-8"))
        return read_layout(self.yaml).diffusers_config()


def _yaml_beside(ckpt: Path) -> Optional[Path]:
    for candidate in (ckpt.with_suffix(".yaml"), ckpt.parent / "model.yaml", ckpt.parent.parent / "configs" / "model.yaml"):
        if candidate.is_file():
            return candidate
    yamls = sorted(ckpt.parent.parent.glob("configs/*-project.yaml"))
    return yamls[0] if yamls else None


def find_vqgan(path) -> VqganSource:
    """Resolve ``vqgan_path`` to its files and read its layout (no weights); one-line errors otherwise."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"vqgan_path: no such file or folder: {path}")
    if path.is_dir() and (path / CONVERTED_CONFIG).is_file():
        source = VqganSource(path, converted=path)
        _check_converted(source)
        return source
    if path.is_dir():
        ckpts = [p for p in (path / "last.ckpt", path / "checkpoints" / "last.ckpt") if p.is_file()] \
            or sorted(path.glob("*.ckpt"))
        if len(ckpts) != 1:
            raise ModelLoadError(f"vqgan_path: {path} holds {'no' if not ckpts else 'more than one'} taming "
                                 f"checkpoint (*.ckpt) and no {CONVERTED_CONFIG} of a converted VQGAN")
        path = ckpts[0]
    if path.suffix != ".ckpt":
        raise ModelLoadError(f"vqgan_path: {path} is neither a taming checkpoint (.ckpt) nor a converted folder")
    yaml_path = _yaml_beside(path)
    if yaml_path is None:
        raise ModelLoadError(f"vqgan_path: no model.yaml for {path} (looked for {path.with_suffix('.yaml').name} "
                             f"and model.yaml beside it, and ../configs/model.yaml)")
    read_layout(yaml_path)
    return VqganSource(path, checkpoint=path, yaml=yaml_path)


def _check_converted(source: VqganSource) -> None:
    try:
        config = source.diffusers_config()
    except ValueError as exc:
        raise ModelLoadError(f"vqgan_path: {source.path / CONVERTED_CONFIG} is not JSON: {exc}") from None
    if config.get("_class_name") != "VQModel":
        raise ModelLoadError(f"vqgan_path: {source.path / CONVERTED_CONFIG} describes "
                             f"{config.get('_class_name') or 'no _class_name'}, not a VQModel")


def build_vqgan(source: VqganSource, trust: bool = False):
    """The VQModel of ``source`` on the CPU in fp32 and eval mode, its weights loaded (strictly)."""
    require_diffusers()
    from diffusers import VQModel  # lazy: the [draw] extra
    if source.converted is not None:
        try:
            model, info = VQModel.from_pretrained(str(source.converted), local_files_only=True,
                                                  output_loading_info=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"vqgan_path: cannot load {source.converted}: {str(exc).splitlines()[0][:300]}") from None
        check_loaded(info.get("missing_keys"), info.get("unexpected_keys"), source.converted, "vqgan_path")
        return model.eval()
    layout = read_layout(source.yaml)
    model = VQModel(**layout.diffusers_config())
    state = convert_state_dict(read_checkpoint(source.checkpoint, trust), layout)
    load_weights(model, state, source.checkpoint, f"vqgan_path (with {source.yaml})")
    return model.eval()


def load_vqgan(path, device: str, trust: bool = False):
    """``vqgan_path`` -> a VQModel on ``device`` (fp32), its parameters frozen."""
    model = build_vqgan(find_vqgan(path), trust)
    return model.to(device).requires_grad_(False)


def convert_vqgan(path, out, trust: bool = False) -> Path:
    """Write the VQGAN at ``path`` once as safetensors plus config.json in the new folder ``out``, atomically
    (a temp folder renamed into place)."""
    source = find_vqgan(path)
    out = Path(out)
    if out.exists():
        raise InterrogatorError(f"--out {out}: already exists (convert-vqgan writes a new folder)")
    model = build_vqgan(source, trust)
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.convert-"))
    try:
        model.save_pretrained(str(temp), safe_serialization=True)
        os.replace(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return out

