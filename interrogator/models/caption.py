"""Captioning with BLIP-2 (or BLIP v1), loaded from a local folder only."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import List

import torch

from ..core.errors import ModelLoadError

PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def pixel_values(image_processor, image) -> torch.Tensor:
    """One RGB image preprocessed by a transformers image processor."""
    # a PIL image is height x width x channels; saying so spares a guess that older transformers get
    # wrong for tiny images (1x1 looks channels-first too)
    return image_processor(image, return_tensors="pt", input_data_format="channels_last")["pixel_values"][0]


@dataclass
class Captioner:
    """A captioning model and its processor; ``caption`` runs one ``generate`` per batch."""

    model: torch.nn.Module
    processor: object
    device: torch.device
    dtype: torch.dtype
    max_new_tokens: int = 20
    min_new_tokens: int = 0
    num_beams: int = 1
    generate_options: dict = field(default_factory=dict)  # extra generate() arguments (benchmarks)

    @property
    def transform(self):
        """image -> pixel values, for loader workers: holds only the image processor, so it pickles small
        where workers are spawned (macOS, Windows) instead of forked."""
        return partial(pixel_values, self.processor.image_processor)

    @torch.inference_mode()
    def caption(self, pixels: torch.Tensor) -> List[str]:
        """One caption per image of a preprocessed batch."""
        if pixels.shape[0] == 0:
            return []
        out = self.model.generate(
            pixel_values=pixels.to(self.device, self.dtype, non_blocking=True),
            max_new_tokens=self.max_new_tokens, min_new_tokens=self.min_new_tokens,
            num_beams=self.num_beams, do_sample=False, **self.generate_options)
        return [text.strip() for text in self.processor.batch_decode(out, skip_special_tokens=True)]


def captioner_kind(path: str) -> str:
    """'blip-2' or 'blip', from the folder's config.json model_type."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"config key 'blip_path': no config.json in captioner folder {path}")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ModelLoadError(f"config key 'blip_path': {config_file} is not a valid model config") from exc
    if model_type not in ("blip-2", "blip"):
        raise ModelLoadError(f"config key 'blip_path': model_type {model_type!r} in {config_file} "
                             f"is not a captioner this tool loads (expected 'blip-2' or 'blip')")
    return model_type


def check_captioner_folder(path: str) -> str:
    """The folder's kind, after checking it holds a model config and a processor."""
    kind = captioner_kind(path)
    if not any((Path(path) / f).is_file() for f in PROCESSOR_FILES):
        raise ModelLoadError(f"config key 'blip_path': captioner folder {path} has no processor "
                             f"(expected {' or '.join(PROCESSOR_FILES)} and tokenizer files)")
    return kind


def _transformers_at_least(version: str) -> bool:
    import transformers
    from packaging.version import Version
    return Version(transformers.__version__) >= Version(version)


def dtype_keyword() -> str:
    """``from_pretrained``'s name for the load dtype: ``dtype`` from transformers 4.56 on, ``torch_dtype`` before."""
    return "dtype" if _transformers_at_least("4.56") else "torch_dtype"


def load_caption_processor(path: str):
    """The captioner folder's processor alone (its image part is what loader workers need)."""
    import transformers as tf
    kind = check_captioner_folder(path)
    processor_cls = tf.Blip2Processor if kind == "blip-2" else tf.BlipProcessor
    try:
        return processor_cls.from_pretrained(path, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"config key 'blip_path': cannot load the processor in {path}: "
                             f"{type(exc).__name__}: {str(exc)[:300]}") from exc


def load_captioner(path: str, device: str, dtype: torch.dtype, load_in_8bit: bool = False,
                   max_new_tokens: int = 20, min_new_tokens: int = 0, num_beams: int = 1) -> Captioner:
    """Blip2/Blip processor + model from ``path`` with local_files_only (SDPA attention for BLIP-2)."""
    import transformers as tf
    kind = check_captioner_folder(path)
    model_cls = tf.Blip2ForConditionalGeneration if kind == "blip-2" else tf.BlipForConditionalGeneration
    processor = load_caption_processor(path)
    kwargs = {"local_files_only": True, dtype_keyword(): dtype}
    if kind == "blip-2":  # BLIP v1 has no SDPA implementation; BLIP-2 has it from transformers 4.47 on
        kwargs["attn_implementation"] = "sdpa"
    if load_in_8bit:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise ModelLoadError("config key 'load_in_8bit' is true but bitsandbytes is not installed "
                                 "(pip install 'interrogator[quant]')") from exc
        kwargs["quantization_config"] = tf.BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = {"": device}
    try:
        try:
            model = model_cls.from_pretrained(path, **kwargs)
        except ValueError as exc:  # transformers before SDPA support for BLIP-2 refuses it: use eager attention
            if kwargs.get("attn_implementation") != "sdpa" or "attention implementation" not in str(exc):
                raise
            kwargs["attn_implementation"] = "eager"
            model = model_cls.from_pretrained(path, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"config key 'blip_path': cannot load the {kind} model in {path}: "
                             f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    if not load_in_8bit:
        model = model.to(device)
    model.eval()
    return Captioner(model, processor, torch.device(device), dtype, max_new_tokens, min_new_tokens, num_beams)
