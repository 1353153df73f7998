"""Captioners, loaded from a local folder only, chosen by the folder's ``config.json`` ``model_type``.

- BLIP-2 and BLIP (v1): their own classes, unconditional captions (exactly as before 0.4).
- Any other image-text-to-text model that transformers implements itself (Florence-2, Qwen2-VL / Qwen2.5-VL /
  Qwen3-VL, SmolVLM / Idefics3, LLaVA and JoyCaption, PaliGemma, GIT, ...): ``AutoProcessor`` +
  ``AutoModelForImageTextToText``, driven by an instruction (``caption_prompt``): a task token for Florence-2
  (``<CAPTION>``, ``<DETAILED_CAPTION>``, ``<MORE_DETAILED_CAPTION>``), a user message through the processor's own
  chat template for chat models, the plain prompt otherwise. Batches are left-padded, so a batch's greedy
  answers equal one-image-at-a-time answers.

``trust_remote_code`` is never passed: a folder whose model transformers does not implement (its config names
custom code in ``auto_map``) is refused with one line.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
import re
from typing import List, Optional, Sequence

import numpy as np

import torch

from ..core.config import CaptionerSettings
from ..core.errors import ModelLoadError
from .weights import check_loaded

log = logging.getLogger(__name__)
from ..core.errors import ConfigError
from packaging.version import Version
from PIL import Image

PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
BLIP_KINDS = ("blip-2", "blip")
NO_INSTRUCTION = ("git",)  # captioners that take the image alone
DEFAULT_INSTRUCTIONS = {"florence2": "<CAPTION>", "paligemma": "caption en"}
CHAT_INSTRUCTION = "Describe this image in one sentence."


def pixel_values(image_processor, image) -> torch.Tensor:
    """One RGB image preprocessed by a transformers image processor."""
    # a PIL image is height x width x channels; saying so spares a guess that older transformers get
    # wrong for tiny images (1x1 looks channels-first too)
    return image_processor(image, return_tensors="pt", input_data_format="channels_last")["pixel_values"][0]


def image_array(image) -> np.ndarray:
    """One decoded RGB image as an array, for processors that take images of any size with the text (VLMs)."""
    return np.asarray(image, dtype=np.uint8)


@dataclass
class Captioner:
    """A captioning model and its processor; ``caption`` runs one ``generate`` per batch. This class is BLIP and
    BLIP-2 (unconditional, on preprocessed pixels); ``VlmCaptioner`` is every other model."""

    model: torch.nn.Module
    processor: object
    device: torch.device
    dtype: torch.dtype
    max_new_tokens: int = 20
    min_new_tokens: int = 0
    num_beams: int = 1
    generate_options: dict = field(default_factory=dict)  # extra generate() arguments (repetition_penalty, ...)

    @property
    def transform(self):
        """image -> pixel values, for loader workers: holds only the image processor, so it pickles small
        where workers are spawned (macOS, Windows) instead of forked."""
        return partial(pixel_values, self.processor.image_processor)

    def generate(self, **inputs) -> torch.Tensor:
        return self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, min_new_tokens=self.min_new_tokens,
                                   num_beams=self.num_beams, do_sample=False, **self.generate_options)

    @torch.inference_mode()
    def caption(self, pixels: torch.Tensor) -> List[str]:
        """One caption per image of a preprocessed batch."""
        if pixels.shape[0] == 0:
            return []
        out = self.generate(pixel_values=pixels.to(self.device, self.dtype, non_blocking=True))
        return [text.strip() for text in self.processor.batch_decode(out, skip_special_tokens=True)]


@dataclass
class VlmCaptioner(Captioner):
    """An image-text-to-text model driven by an instruction (module docstring); takes image arrays."""

    kind: str = ""
    instruction: Optional[str] = None  # None: the image alone (GIT)
    cut_partial: bool = False  # cut a trailing unfinished sentence

    @property
    def transform(self):
        return image_array

    def prompt(self) -> Optional[str]:
        """The text each image is sent with: the chat template's rendering of one user turn, or the instruction."""
        if self.instruction is None or not getattr(self.processor, "chat_template", None):
            return self.instruction
        turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.instruction}]}]
        return self.processor.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)

    def inputs(self, images: Sequence[np.ndarray]) -> dict:
        pictures = [[Image.fromarray(np.asarray(a))] for a in images]
        prompt = self.prompt()
        if prompt is None:
            batch = self.processor(images=[p[0] for p in pictures], return_tensors="pt")
        else:
            batch = self.processor(text=[prompt] * len(images), images=pictures, return_tensors="pt", padding=True)
        return {k: (v.to(self.device, self.dtype) if torch.is_floating_point(v) else v.to(self.device))
                for k, v in batch.items()}

    @torch.inference_mode()
    def caption(self, images: Sequence[np.ndarray]) -> List[str]:
        """One answer per image: the new tokens only (no prompt echo), special tokens and scaffolding stripped."""
        if len(images) == 0:
            return []
        inputs = self.inputs(images)
        out = self.generate(**inputs)
        if not self.model.config.is_encoder_decoder and "input_ids" in inputs:
            out = out[:, inputs["input_ids"].shape[1]:]
        return [clean_answer(t, self.cut_partial) for t in self.processor.batch_decode(out, skip_special_tokens=True)]


ROLE_PREFIX = re.compile(r"^\s*(assistant|model|gpt)\s*:?\s*\n?", re.IGNORECASE)
SENTENCE_END = re.compile(r"[.!?\u3002](?=\s|$)")


def clean_answer(text: str, cut_partial: bool = False) -> str:
    """A model's answer as a caption: a leading role label (``Assistant:``) dropped, whitespace runs made one
    space; with ``cut_partial``, an unfinished last sentence cut where an earlier one ended."""
    text = " ".join(ROLE_PREFIX.sub("", text, count=1).split())
    if cut_partial and text and not SENTENCE_END.search(text[-1:] + " "):
        ends = [m.end() for m in SENTENCE_END.finditer(text)]
        if ends:
            text = text[:ends[-1]]
    return text


def read_model_config(path: str, key: str = "blip_path") -> dict:
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"config key '{key}': no config.json in captioner folder {path}")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"config key '{key}': {config_file} is not a valid model config") from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"config key '{key}': {config_file} is not a valid model config")
    return config


def captioner_kind(path: str) -> str:
    """The folder's model_type, after checking transformers implements it as an image-text-to-text model."""
    config = read_model_config(path)
    model_type = config.get("model_type")
    if model_type in BLIP_KINDS:
        return model_type
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES  # lazy: slow to import
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES  # lazy: slow to import
    where = Path(path) / "config.json"
    if model_type not in CONFIG_MAPPING_NAMES:
        custom = " (it names custom code in auto_map)" if "auto_map" in config else ""
        raise ModelLoadError(f"config key 'blip_path': model_type {model_type!r} in {where} is not implemented by "
                             f"transformers {_version()}{custom}; it would need trust_remote_code, which this tool "
                             f"never uses: convert it to a transformers-native checkpoint or upgrade transformers")
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise ModelLoadError(f"config key 'blip_path': model_type {model_type!r} in {where} is not an "
                             f"image-text-to-text model (a captioner takes an image and writes text)")
    return model_type


def _version() -> str:
    import transformers  # lazy: slow to import
    return transformers.__version__


def check_captioner_folder(path: str) -> str:
    """The folder's kind, after checking it holds a model config and a processor that needs no remote code."""
    kind = captioner_kind(path)
    present = [Path(path) / f for f in PROCESSOR_FILES if (Path(path) / f).is_file()]
    if not present:
        raise ModelLoadError(f"config key 'blip_path': captioner folder {path} has no processor "
                             f"(expected {' or '.join(PROCESSOR_FILES)} and tokenizer files)")
    for file in present:
        try:
            custom = "auto_map" in json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"config key 'blip_path': {file} is not valid JSON") from exc
        if custom:
            raise ModelLoadError(f"config key 'blip_path': the processor in {file} names custom code (auto_map); "
                                 f"it would need trust_remote_code, which this tool never uses")
    return kind


def check_caption_prompt(kind: str, prompt: Optional[str]) -> None:
    """BLIP, BLIP-2 and GIT caption the image alone: an instruction for them is refused, not ignored."""
    if prompt is not None and (kind in BLIP_KINDS or kind in NO_INSTRUCTION):
        raise ConfigError(f"config key 'caption_prompt': the {kind} captioner takes no instruction; leave it out")


def instruction_for(kind: str, prompt: Optional[str]) -> Optional[str]:
    if kind in NO_INSTRUCTION:
        return None
    return prompt if prompt is not None else DEFAULT_INSTRUCTIONS.get(kind, CHAT_INSTRUCTION)


def _transformers_at_least(version: str) -> bool:
    import transformers  # lazy: slow to import
    return Version(transformers.__version__) >= Version(version)


def dtype_keyword() -> str:
    """``from_pretrained``'s name for the load dtype: ``dtype`` from transformers 4.56 on, ``torch_dtype`` before."""
    return "dtype" if _transformers_at_least("4.56") else "torch_dtype"


def load_caption_processor(path: str):
    """The captioner folder's processor alone (its image part is what loader workers need)."""
    import transformers as tf  # lazy: slow to import
    kind = check_captioner_folder(path)
    processor_cls = {"blip-2": tf.Blip2Processor, "blip": tf.BlipProcessor}.get(kind, tf.AutoProcessor)
    try:
        processor = processor_cls.from_pretrained(path, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"config key 'blip_path': cannot load the processor in {path}: "
                             f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    tokenizer = getattr(processor, "tokenizer", None)
    if kind not in BLIP_KINDS and tokenizer is not None:
        tokenizer.padding_side = "left"  # decoder-only models continue the prompt: its end must line up
    return processor


def caption_transform(path: str):
    """What loader workers make of each image for the captioner in ``path`` (pickles small)."""
    kind = check_captioner_folder(path)
    if kind in BLIP_KINDS:
        return partial(pixel_values, load_caption_processor(path).image_processor)
    return image_array


def quantization(load_in_8bit: bool, load_in_4bit: bool, dtype: torch.dtype):
    """bitsandbytes' config for an 8-bit or 4-bit load, or None."""
    if not (load_in_8bit or load_in_4bit):
        return None
    key = "load_in_8bit" if load_in_8bit else "load_in_4bit"
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError(f"config key '{key}' is true but bitsandbytes is not installed "
                             f"(pip install 'interrogator[quant]')") from exc
    import transformers as tf  # lazy: slow to import
    if load_in_8bit:
        return tf.BitsAndBytesConfig(load_in_8bit=True)
    return tf.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_type="nf4")


def load_captioner(settings: CaptionerSettings, device: str, dtype: torch.dtype) -> Captioner:
    """The captioner in ``settings.blip_path`` (module docstring) with local_files_only, on ``device`` in
    ``dtype``, generating as the settings say."""
    import transformers as tf  # lazy: slow to import
    path, prompt = settings.blip_path, settings.caption_prompt
    kind = check_captioner_folder(path)
    check_caption_prompt(kind, prompt)
    model_cls = {"blip-2": tf.Blip2ForConditionalGeneration,
                 "blip": tf.BlipForConditionalGeneration}.get(kind, tf.AutoModelForImageTextToText)
    processor = load_caption_processor(path)
    kwargs = {"local_files_only": True, dtype_keyword(): dtype}
    if kind != "blip":  # BLIP v1 has no SDPA implementation; BLIP-2 has it from transformers 4.47 on
        kwargs["attn_implementation"] = "sdpa"
    quantized = quantization(settings.load_in_8bit, settings.load_in_4bit, dtype)
    if quantized is not None:
        kwargs["quantization_config"] = quantized
        kwargs["device_map"] = {"": device}
    model = _from_pretrained(model_cls, path, kind, kwargs)
    if quantized is None:
        model = model.to(device)
    model.eval()
    options = {} if settings.repetition_penalty is None else {"repetition_penalty": settings.repetition_penalty}
    common = (model, processor, torch.device(device), dtype, settings.max_new_tokens, settings.min_new_tokens,
              settings.num_beams, options)
    if kind in BLIP_KINDS:
        return Captioner(*common)
    return VlmCaptioner(*common, kind=kind, instruction=instruction_for(kind, prompt),
                        cut_partial=settings.cut_partial)


def _from_pretrained(model_cls, path: str, kind: str, kwargs: dict):
    """The model in ``path``; every weight of it must come from the checkpoint (a checkpoint whose names match
    no parameter would leave the model on random weights, and caption noise)."""
    kwargs = {**kwargs, "output_loading_info": True}
    try:
        try:
            model, info = model_cls.from_pretrained(path, **kwargs)
        except ValueError as exc:  # a model or transformers version without SDPA refuses it: use eager attention
            if kwargs.get("attn_implementation") != "sdpa" or "attention" not in str(exc).lower():
                raise
            model, info = model_cls.from_pretrained(path, **{**kwargs, "attn_implementation": "eager"})
    except Exception as exc:
        raise ModelLoadError(f"config key 'blip_path': cannot load the {kind} model in {path}: "
                             f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    check_loaded(info.get("missing_keys"), info.get("unexpected_keys"), path, "config key 'blip_path'")
    return model
