"""The one config dataclass, loaded from JSON and validated before any model loads.

Paths written in a config file resolve against that file's folder; paths passed
as overrides (command line, ``execute()`` arguments) resolve against the
current directory.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import os
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from .errors import ConfigError
from .memory import auto_batch_size, caption_bytes_per_image, captioner_weight_bytes
from .template import fields as parse_fields, parse
from . import workers

PACKAGE = Path(__file__).resolve().parent.parent  # the interrogator package
# An installed wheel carries the label lists in the package; a source tree keeps them beside it.
DEFAULT_DICTS = PACKAGE / "dicts" if (PACKAGE / "dicts").is_dir() else PACKAGE.parent / "dicts"

PATH_KEYS = ("blip_path", "clip_path", "dicts", "embedding_dir", "embedding_path",
             "data_path", "output", "label_cache", "head_path", "bank_path", "txt_dir", "tagger_path",
             "vqgan_path")
DTYPES = ("auto", "fp16", "bf16", "fp32")
# max_flavors where the config does not set it: clip-interrogator 0.6.0's defaults (interrogate_classic 3,
# interrogate_fast, interrogate and interrogate_negative 32); seed and caption keep this tool's 3
MODE_MAX_FLAVORS = {"seed": 3, "caption": 3, "classic": 3, "fast": 32, "best": 32, "negative": 32}
CHAIN_MODES = ("best", "negative")  # the modes that chain between min_flavors and max_flavors
EXISTING_TXT = ("keep", "skip", "append", "prepend", "overwrite")  # outputs.py: what an existing caption file gets
MODES = ("seed", "caption", "classic", "fast", "best", "negative")  # runner/modes.py
FORMATS = ("kaggle", "txt", "csv", "jsonl", "parquet", "shard-parquet", "wds")  # runner/outputs.py, shard_outputs.py
EMBEDDING_FORMATS = ("kaggle", "parquet")  # the formats that hold the prompts' sentence vectors
SHARD_JOIN = "::"  # data_path: several shards, webdataset's way (samples.py)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".jfif", ".webp", ".bmp", ".gif", ".tif", ".tiff")  # images.py: the folder rule
PROMPT_PARTS = ("caption", "medium", "movement", "flavors")  # the seed format's order (config key prompt_parts)


class _Section:
    """A section of a config as its attribute (``config.captioning``): a frozen view of the section's keys."""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, config, owner=None):
        return self if config is None else section(config, SECTIONS[self.name])


@dataclass
class Config:
    """Every setting of a run. See the README's config reference."""

    blip_path: Optional[str] = None
    clip_path: Optional[str] = None
    embedding_path: Optional[str] = None
    data_path: Optional[str] = None
    image_column: str = "jpg"
    key_column: str = "key"
    blip_model: str = "blip2-opt-2.7b"
    clip_model: str = "ViT-L-14"
    embedding_model: str = "all-MiniLM-L6-v2"
    embedding_dir: Optional[str] = None
    dicts: str = str(DEFAULT_DICTS)
    chunk_size: int = 2048
    output: str = "submission.csv"
    batch_size: Union[int, str] = 16
    caption_batch_size: Optional[Union[int, str]] = None
    clip_batch_size: Optional[int] = None
    embed_batch_size: Optional[int] = None
    max_flavors: int = 3
    num_beams: int = 1
    max_new_tokens: int = 20
    min_new_tokens: int = 0
    device: str = "auto"
    dtype: str = "auto"
    load_in_8bit: bool = False
    label_cache: Optional[str] = None
    num_workers: Union[int, str] = "auto"
    low_memory: bool = False
    demo: bool = False
    fallback_prompt: str = "a detailed digital painting of a scene, highly detailed, trending on artstation"
    mode: str = "seed"
    prompt_parts: list = field(default_factory=lambda: ["caption", "medium", "movement", "flavors"])
    formats: list = field(default_factory=lambda: ["kaggle"])
    txt_dir: Optional[str] = None
    overwrite: bool = False
    replace_outputs: bool = False
    recursive: bool = False
    negative_prompt: bool = False
    min_flavors: int = 8
    intermediate_count: int = 2048
    head_path: Optional[str] = None
    bank_path: Optional[str] = None
    blend: Optional[list] = None
    bank_k: int = 16
    bank_temperature: float = 0.05
    bank_backend: str = "torch"
    load_in_4bit: bool = False
    caption_prompt: Optional[str] = None
    repetition_penalty: Optional[float] = None
    cut_partial: bool = False
    tagger_path: Optional[str] = None
    tag_threshold: float = 0.35
    character_threshold: float = 0.85
    tag_mcut: bool = False
    max_tags: Optional[int] = None
    tag_escape: bool = False
    undesired_tags: list = field(default_factory=list)
    tag_replacements: list = field(default_factory=list)
    tags_first: list = field(default_factory=list)
    tag_separator: str = ", "
    caption_template: Optional[str] = None
    trigger: str = ""
    txt_extension: str = ".txt"
    wds_caption_extension: str = ".caption"
    existing_txt: str = "keep"
    vqgan_path: Optional[str] = None  # draw's VQGAN (draw/vqgan.py)
    config_path: Optional[str] = field(default=None, metadata={"internal": True})
    given: tuple = field(default=(), metadata={"internal": True})  # keys the file or the overrides set

    # ---- derived settings -------------------------------------------------
    def stage_batch_size(self, stage: str) -> int:
        """Batch size for 'caption', 'clip' or 'embed': the override, else batch_size ("auto" resolved)."""
        override = getattr(self, f"{stage}_batch_size")
        size = override if override is not None else self.batch_size
        return self.auto_batch_size() if size == "auto" else size

    def auto_batch_size(self) -> int:
        """16 on CPU; on CUDA the largest power of two whose captioning fits 85% of the card."""
        if not self.resolved_device().startswith("cuda") or not self.needs_captioner():
            return 16
        import torch  # lazy: slow to import
        dtype_bytes = torch.finfo(self.torch_dtype()).bits // 8
        model_config = json.loads((Path(self.blip_path) / "config.json").read_text())
        total = torch.cuda.get_device_properties(torch.device(self.resolved_device())).total_memory
        return auto_batch_size(total, captioner_weight_bytes(self.blip_path, 1 if self.load_in_8bit else dtype_bytes),
                               caption_bytes_per_image(model_config, self.max_new_tokens, self.num_beams, dtype_bytes))

    def loader_workers(self) -> int:
        """Image-decoding worker processes: num_workers, or with "auto" every usable core but one (at most 16)."""
        if self.num_workers != "auto":
            return self.num_workers
        return max(0, min(workers.usable_cores() - 1, 16))

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch  # lazy: slow to import
        return "cuda" if torch.cuda.is_available() else "cpu"

    def torch_dtype(self):
        """fp16 on CUDA and fp32 on CPU unless dtype says otherwise."""
        import torch  # lazy: slow to import
        name = self.dtype
        if name == "auto":
            name = "fp16" if self.resolved_device().startswith("cuda") else "fp32"
        return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]

    def check_device(self) -> None:
        """A CUDA device must exist here: one line now, not a traceback from the first model load."""
        if self.device == "auto" or not self.device.startswith("cuda"):
            return
        import torch  # lazy: slow to import
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(self.device.split(":", 1)[1]) if ":" in self.device else 0
        if index >= count:
            have = f"only {count} CUDA device(s)" if count else "no CUDA device (torch sees no GPU)"
            raise ConfigError(f"config key 'device': {self.device!r} is not available: this machine has {have}; "
                              f"write \"auto\" or \"cpu\"{self._where()}")

    def check_dtype(self) -> None:
        """fp16 on the CPU is refused: it runs about 100x slower than fp32 there."""
        if self.dtype == "fp16" and not self.resolved_device().startswith("cuda"):
            raise ConfigError(f"config key 'dtype': fp16 on the CPU runs about 100x slower than fp32; "
                              f"write \"auto\", \"fp32\" or \"bf16\" for a CPU run{self._where()}")

    def template_fields(self) -> frozenset:
        """The parts the caption template uses (template.py); ``{prompt}`` alone without a template."""
        return parse_fields(self.caption_template)

    def needs_mode(self) -> bool:
        """The CLIP interrogator's output is part of the text."""
        return "prompt" in self.template_fields()

    def needs_captioner(self) -> bool:
        """The caption is part of the text, directly or through the mode (every mode starts from it)."""
        return bool({"caption", "prompt"} & self.template_fields())

    def needs_clip(self) -> bool:
        """Every mode but ``caption`` ranks labels with CLIP; a head or bank in the blend needs its features
        (where an output holds the blended vectors)."""
        return ((self.mode != "caption" and self.needs_mode()) or self.negative_prompt
                or (self.embeds() and (self.blend_weight("head") > 0 or self.blend_weight("bank") > 0)))

    def embeds(self) -> bool:
        """An output holds the prompts' vectors (EMBEDDING_FORMATS), so the sentence model runs."""
        return bool(set(EMBEDDING_FORMATS) & set(self.formats))

    def txt_policy(self) -> str:
        """What an existing caption file gets (EXISTING_TXT); ``overwrite: true`` is ``overwrite``."""
        return _txt_policy(self)

    def blend_weight(self, component: str) -> float:
        """The blend weight of 'prompt', 'head' or 'bank' (the prompt alone when no blend is set)."""
        weights = self.blend if self.blend is not None else [1, 0, 0]
        return float(weights[("prompt", "head", "bank").index(component)])

    def check_blend(self) -> None:
        """A head or bank needs a blend that uses it, and a blend weight needs its head or bank."""
        for component, key in (("head", "head_path"), ("bank", "bank_path")):
            if getattr(self, key) is not None and self.blend is None:
                raise ConfigError(f"config key 'blend' must be set when '{key}' is: the weights of the prompt, "
                                  f"head and bank, e.g. [0.5, 0.5, 0] (tune-blend picks them){self._where()}")
            if self.blend_weight(component) > 0:
                self.require_paths(key)
        if self.bank_backend not in ("torch", "faiss"):
            raise ConfigError(f"config key 'bank_backend': expected torch or faiss, got {self.bank_backend!r}"
                              f"{self._where()}")

    def require_paths(self, *keys: str) -> None:
        """Raise ConfigError naming the first key whose path is unset or missing."""
        for key in keys:
            value = getattr(self, key)
            if value is None:
                raise ConfigError(f"config key '{key}' is required but not set{self._where()}")
            if key == "data_path" and (SHARD_JOIN in value or "{" in value):
                continue  # shards: each one is checked as the plan lists them (samples.expand_shards)
            if not Path(value).exists():
                raise ConfigError(f"config key '{key}': path does not exist: {value}{self._where()}")

    def _where(self) -> str:
        return f" (in {self.config_path})" if self.config_path else ""

    # ---- the sections (SECTIONS): frozen views that functions take instead of the whole config ---------
    captioning = _Section()  # CaptionerSettings
    tagging = _Section()     # TaggerSettings
    ranking = _Section()     # ClipSettings: CLIP, label tables, mode
    embedding = _Section()   # EmbedSettings
    writing = _Section()     # OutputSettings
    blending = _Section()    # BlendSettings
    running = _Section()     # RunSettings

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.metadata.get("internal")}


# ---- sections: each function takes the part of the settings it reads ------------------------------
def _settings(name: str, doc: str, keys: str, **methods) -> type:
    """A frozen section of the config: the named keys, with Config's types (each key in exactly one section)."""
    types = {f.name: f.type for f in fields(Config)}
    return dataclasses.make_dataclass(name, [(key, types[key]) for key in keys.split()], frozen=True,
                                      namespace={"__doc__": doc, "__module__": __name__, **methods})


KEY_HELP = {  # each config key's help line (its flag's too: commands/flags.py)
    'blip_path': 'captioner folder: BLIP-2, BLIP or any image-text-to-text model transformers implements (see "Captioners and taggers"), chosen by its config.json model_type',
    'clip_path': 'CLIP checkpoint file: safetensors, a torch.save state dict (read with weights_only=True) or an OpenAI TorchScript archive (see "Which CLIP file and which name")',
    'embedding_path': 'sentence-transformers model folder',
    'data_path': 'image folder (see "Which files are images")',
    'blip_model': 'a name for the captioner, for your records',
    'clip_model': 'ARCH or ARCH/TAG (ViT-L-14/openai): an open_clip architecture (also the JSONs in interrogator/model_configs/), optionally with a pretrained tag whose config applies',
    'embedding_model': 'a name for the sentence model, for your records',
    'embedding_dir': 'folder put on sys.path before importing sentence_transformers',
    'dicts': 'folder with mediums.txt, movements.txt, flavors.txt',
    'chunk_size': 'labels scored at once when ranking a table (exact for any value)',
    'output': 'submission path (written to a temp file, validated, renamed into place)',
    'batch_size': 'images per batch, or "auto" (from GPU memory)',
    'caption_batch_size': 'images per caption batch (default: batch_size)',
    'clip_batch_size': 'images per CLIP batch (default: batch_size)',
    'embed_batch_size': 'prompts per sentence-model batch (default: batch_size)',
    'max_flavors': "flavors per prompt, at most 1000 (trailing ones dropped to fit CLIP's 77 tokens; about 35 one-word flavors fit at most)",
    'num_beams': 'beam search width for captions',
    'max_new_tokens': 'most tokens a caption has',
    'min_new_tokens': 'fewest tokens a caption has',
    'device': 'auto (CUDA if available), cpu, cuda, cuda:N',
    'dtype': 'auto (fp16 on CUDA, fp32 on CPU), fp16 (CUDA only: an error on a CPU), bf16, fp32',
    'load_in_8bit': "load the captioner in 8-bit with bitsandbytes (pip install -e '.[quant]')",
    'label_cache': 'folder for label-embedding safetensors files (see "The label cache"); a cache that cannot be written is a warning',
    'num_workers': 'image-decoding worker processes; auto: every usable core but one, at most 16',
    'low_memory': 'load one model at a time (captioner, then CLIP, then the sentence model), freeing each before the next',
    'demo': 'build the demo models where the paths point if they are missing',
    'fallback_prompt': 'prompt used for an image that cannot be decoded',
    'mode': 'the interrogation mode (see "Interrogation modes")',
    'prompt_parts': "the seed mode's parts, in order (any subset); trailing parts are dropped to fit 77 tokens",
    'formats': 'what to write (see "Outputs")',
    'txt_dir': 'where txt files go, keeping sub-folders',
    'overwrite': 'replace existing caption files (the same as existing_txt: "overwrite")',
    'replace_outputs': 'replace output files this tool did not write (one it wrote, unchanged, is replaced anyway); --replace-outputs',
    'recursive': "search data_path's sub-folders (ids become relative paths)",
    'image_column': "a Parquet data_path's column of image bytes (img2dataset's: jpg)",
    'key_column': "a Parquet data_path's column of sample keys (img2dataset's: key)",
    'negative_prompt': 'also run the negative chain and write negative_prompt in the csv, jsonl and parquet outputs',
    'min_flavors': "the chain's least steps (best, negative)",
    'intermediate_count': "the chain's candidate flavors (best, negative)",
    'head_path': 'a learned head folder made by train-head (see "Going past the interrogator")',
    'bank_path': 'a retrieval bank folder made by build-bank',
    'blend': "[w_prompt, w_head, w_bank]: the submission vector is the normalised weighted sum; required when head_path or bank_path is set; [1, 0, 0] is today's submission byte for byte",
    'bank_k': 'neighbours in the bank that vote',
    'bank_temperature': "the softmax temperature of the neighbours' similarities",
    'bank_backend': "torch (exact chunked top-k on the device) or faiss (exact IndexFlatIP, pip install -e '.[faiss]')",
    'load_in_4bit': 'load the captioner in 4-bit NF4 with bitsandbytes (one of load_in_8bit, load_in_4bit)',
    'caption_prompt': 'the VLM\'s instruction: a Florence-2 task token (<CAPTION>, <DETAILED_CAPTION>, <MORE_DETAILED_CAPTION>), else a user message sent through the processor\'s chat template (default "Describe this image in one sentence."); an error for BLIP, BLIP-2 and GIT, which take none',
    'repetition_penalty': 'passed to generate',
    'cut_partial': "cut a VLM answer's unfinished last sentence (at the last ., ! or ?)",
    'tagger_path': "a WD-style tagger folder (model.onnx + selected_tags.csv; pip install -e '.[tagger]')",
    'tag_threshold': "the tagger's general tag threshold",
    'character_threshold': "the tagger's character tag threshold",
    'tag_mcut': 'general tags by Maximum Cut thresholding instead of tag_threshold',
    'max_tags': 'at most this many general tags (the highest first)',
    'tag_escape': 'escape ( ) \\ for prompt syntax',
    'undesired_tags': 'tags dropped (as in the CSV or as written)',
    'tag_replacements': '"old=new" tag replacements ("old=" drops the tag)',
    'tags_first': 'tags moved to the front, in this order',
    'tag_separator': 'joins the tags in {tags}, and old and new text under existing_txt append / prepend',
    'caption_template': 'how parts make the text: {trigger}, {tags}, {rating}, {caption}, {prompt} and fixed words, e.g. "{trigger}, {tags}, {caption}"',
    'trigger': 'the {trigger} part',
    'txt_extension': "the caption files' extension (.caption, ...)",
    'wds_caption_extension': "the wds output's caption member: <key><this> (img2dataset's shards hold <key>.txt)",
    'existing_txt': 'what an existing caption file gets: keep, skip (the image is not processed), append, prepend, overwrite',
    'vqgan_path': 'draw\'s VQGAN: a taming last.ckpt with its model.yaml, or a folder convert-vqgan wrote (--vqgan overrides it; see "Draw")',
}


def _txt_policy(writing) -> str:
    """What an existing caption file gets (EXISTING_TXT); ``overwrite: true`` is ``overwrite``."""
    return "overwrite" if writing.overwrite else writing.existing_txt


CaptionerSettings = _settings("CaptionerSettings", "The captioner: which folder, how it generates.",
                              "blip_path blip_model max_new_tokens min_new_tokens num_beams load_in_8bit load_in_4bit "
                              "caption_prompt repetition_penalty cut_partial")
TaggerSettings = _settings("TaggerSettings", "The WD-style tagger and how its tags are chosen and cleaned.",
                           "tagger_path tag_threshold character_threshold tag_mcut max_tags tag_escape undesired_tags "
                           "tag_replacements tags_first tag_separator")
ClipSettings = _settings("ClipSettings", "The CLIP, its label tables and the mode that ranks them into a prompt.",
                         "clip_path clip_model dicts label_cache chunk_size mode max_flavors min_flavors "
                         "intermediate_count prompt_parts negative_prompt fallback_prompt")
EmbedSettings = _settings("EmbedSettings", "The sentence model that embeds the prompts.",
                          "embedding_path embedding_model embedding_dir")
OutputSettings = _settings("OutputSettings", "What a run writes, where, and what an existing caption file gets.",
                           "output formats txt_dir txt_extension wds_caption_extension existing_txt overwrite "
                           "replace_outputs caption_template "
                           "trigger",
                           txt_policy=_txt_policy)
BlendSettings = _settings("BlendSettings", "The learned head and bank and the weights that blend them with the "
                          "prompt's embedding.", "head_path bank_path blend bank_k bank_temperature bank_backend")
RunSettings = _settings("RunSettings", "The images, the device and how the work is batched and loaded.",
                        "data_path image_column key_column recursive batch_size caption_batch_size clip_batch_size embed_batch_size device "
                        "dtype num_workers low_memory demo vqgan_path")
SECTIONS = {"captioning": CaptionerSettings, "tagging": TaggerSettings, "ranking": ClipSettings,
            "embedding": EmbedSettings, "writing": OutputSettings, "blending": BlendSettings, "running": RunSettings}


def section(config: "Config", cls):
    """The frozen section ``cls`` of a config (lists become tuples)."""
    return cls(**{f.name: tuple(v) if isinstance(v := getattr(config, f.name), list) else v for f in fields(cls)})


def _user_fields() -> dict:
    return {f.name: f for f in fields(Config) if not f.metadata.get("internal")}


NON_NEGATIVE_KEYS = ("min_new_tokens", "num_workers", "min_flavors")
MAX_FLAVORS = 1000  # far more than fit in 77 tokens (about 35 one-word flavors do); a bound on ranking work
UPPER_BOUNDS = {"max_flavors": MAX_FLAVORS}
AUTO_KEYS = ("batch_size", "caption_batch_size", "num_workers")  # also accept "auto"
STRING_LISTS = ("undesired_tags", "tag_replacements", "tags_first")
PROBABILITY_KEYS = ("tag_threshold", "character_threshold")
EMPTY_OK = ("trigger",)
TXT_EXTENSION = re.compile(r"\.[A-Za-z0-9_-]{1,16}")


def _check_type(key: str, value: Any, where: str) -> None:
    hint = typing.get_type_hints(Config)[key]
    kinds = set(typing.get_args(hint)) or {hint}
    if (value is None and type(None) in kinds) or (key in AUTO_KEYS and value == "auto"):
        return
    number = (int, float)
    if list in kinds and key == "prompt_parts":
        ok = (isinstance(value, list) and len(value) > 0 and all(v in PROMPT_PARTS for v in value)
              and len(set(value)) == len(value))
        expected = f"a list of distinct parts among {', '.join(PROMPT_PARTS)} (the seed mode's order)"
    elif list in kinds and key == "formats":
        ok = isinstance(value, list) and len(value) > 0 and all(v in FORMATS for v in value)
        expected = f"a list of some of {', '.join(FORMATS)}"
    elif list in kinds and key in STRING_LISTS:
        ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
        expected = "a list of non-empty strings"
        if ok and key == "tag_replacements":
            ok, expected = all("=" in v and v.split("=", 1)[0] for v in value), 'a list of "old=new" strings'
    elif list in kinds:  # blend: three weights
        ok = (isinstance(value, list) and len(value) == 3 and all(isinstance(v, number) and not isinstance(v, bool)
                                                                   and math.isfinite(v) and v >= 0 for v in value)
              and sum(value) > 0)
        expected = "three finite weights >= 0 (prompt, head, bank), not all 0"
    elif float in kinds:
        ok = isinstance(value, number) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        expected = "a finite number > 0"
        if ok and key in PROBABILITY_KEYS:
            ok, expected = value <= 1, "a number > 0 and <= 1"
    elif bool in kinds:
        ok, expected = isinstance(value, bool), "true or false"
    elif int in kinds:
        least, most = (0 if key in NON_NEGATIVE_KEYS else 1), UPPER_BOUNDS.get(key)
        ok = (isinstance(value, int) and not isinstance(value, bool) and value >= least
              and (most is None or value <= most))
        expected = (f"a whole number >= {least}" + (f" and <= {most}" if most is not None else "")
                    + (' or "auto"' if key in AUTO_KEYS else ""))
    elif key in EMPTY_OK:
        ok, expected = isinstance(value, str), "a string"
    else:
        ok, expected = isinstance(value, str) and value != "", "a non-empty string"
    if not ok:
        raise ConfigError(f"config key '{key}': expected {expected}, got {value!r}{where}")


def user_keys() -> Dict[str, Any]:
    """Every key a user may set, with its type: the schema the flags are made from (commands/flags.py)."""
    hints = typing.get_type_hints(Config)
    return {name: hints[name] for name in _user_fields()}


def check_value(key: str, value: Any) -> None:
    """One value of ``key`` checked as the config file's would be (ConfigError naming the key otherwise)."""
    _validate({key: value}, "")


def _validate(values: Mapping[str, Any], where: str) -> None:
    known = _user_fields()
    for key, value in values.items():
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
            raise ConfigError(f"unknown config key '{key}'{where}{suggestion}")
        _check_type(key, value, where)
    if values.get("mode", "seed") not in MODES:
        raise ConfigError(f"config key 'mode': expected one of {', '.join(MODES)}, got {values['mode']!r}{where}")
    if values.get("dtype", "auto") not in DTYPES:
        raise ConfigError(f"config key 'dtype': expected one of {', '.join(DTYPES)}, got {values['dtype']!r}{where}")
    _validate_captions(values, where)
    device = values.get("device", "auto")
    if device != "auto" and not (device in ("cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ConfigError(f"config key 'device': expected auto, cpu, cuda or cuda:N, got {device!r}{where}")


def _validate_captions(values: Mapping[str, Any], where: str) -> None:
    """The caption template, the caption file extension and policy, and one quantization at a time."""
    if values.get("caption_template") is not None:
        try:
            parse(values["caption_template"])
        except ValueError as exc:
            raise ConfigError(f"config key 'caption_template': {exc}{where}") from None
    if "txt_extension" in values and not TXT_EXTENSION.fullmatch(values["txt_extension"]):
        raise ConfigError(f"config key 'txt_extension': expected a dot and up to 16 letters, digits, _ or -, "
                          f"such as \".txt\" or \".caption\", got {values['txt_extension']!r}{where}")
    if "wds_caption_extension" in values and not TXT_EXTENSION.fullmatch(values["wds_caption_extension"]):
        raise ConfigError(f"config key 'wds_caption_extension': expected a dot and up to 16 letters, digits, _ or -, "
                          f"such as \".caption\", got {values['wds_caption_extension']!r}{where}")
    if values.get("txt_extension", ".txt").lower() in IMAGE_EXTENSIONS:
        raise ConfigError(f"config key 'txt_extension': {values['txt_extension']!r} is an image extension, so "
                          f"each caption file would replace its image; use \".txt\" or \".caption\"{where}")
    if values.get("existing_txt", "keep") not in EXISTING_TXT:
        raise ConfigError(f"config key 'existing_txt': expected one of {', '.join(EXISTING_TXT)}, "
                          f"got {values['existing_txt']!r}{where}")
    if values.get("load_in_8bit") and values.get("load_in_4bit"):
        raise ConfigError(f"config keys 'load_in_8bit' and 'load_in_4bit' are both true; choose one{where}")


def _resolve(values: dict, base: Path, bases: Optional[Mapping[str, Path]] = None) -> dict:
    """Relative paths made absolute against ``base``, or against ``bases[key]`` for the keys it names."""
    out = dict(values)
    for key in PATH_KEYS:
        if out.get(key) is not None:  # data_path may name several shards: a::b (samples.py), each resolved
            parts = [Path(os.path.expanduser(part.strip())) for part in str(out[key]).split(SHARD_JOIN)]
            out[key] = SHARD_JOIN.join(os.path.normpath(p if p.is_absolute() else (bases or {}).get(key, base) / p)
                                       for p in parts)
    return out


def load_config(path: Optional[str | os.PathLike] = None, path_bases: Optional[Mapping[str, str]] = None,
                **overrides: Any) -> Config:
    """Read a JSON config (optional), apply overrides (None means 'not given'), validate.

    path_bases: for some path keys, the folder their relative values in the file resolve against
    (instead of the file's folder).
    """
    values: dict = {}
    where = ""
    if path is not None:
        path = Path(path)
        where = f" (in {path})"
        if not path.is_file():
            raise ConfigError(f"config file does not exist: {path}")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid JSON: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a JSON object, got {type(raw).__name__}")
        _validate(raw, where)
        bases = {k: Path(os.path.abspath(v)) for k, v in (path_bases or {}).items()}
        values = _resolve(raw, Path(os.path.abspath(path)).parent, bases)
    given = {k: v for k, v in overrides.items() if v is not None}
    _validate(given, " (in overrides)")
    values.update(_resolve(given, Path.cwd()))
    keys = tuple(sorted(values))
    values.setdefault("max_flavors", MODE_MAX_FLAVORS[values.get("mode", "seed")])
    _check_chain(values, where)
    return Config(**values, config_path=str(path) if path is not None else None, given=keys)


def _check_chain(values: Mapping[str, Any], where: str) -> None:
    """best and negative chain between min_flavors and max_flavors flavors: the least cannot exceed the most."""
    mode, least, most = values.get("mode", "seed"), values.get("min_flavors", 8), values.get("max_flavors")
    if mode in CHAIN_MODES and most is not None and least > most:
        raise ConfigError(f"config keys 'min_flavors' ({least}) and 'max_flavors' ({most}): the {mode} mode chains "
                          f"at least min_flavors flavors and at most max_flavors; make min_flavors <= max_flavors"
                          f"{where}")


def replace(config: Config, **changes: Any) -> Config:
    """A validated copy of config with some values changed. A new ``mode`` brings its own ``max_flavors``
    default (MODE_MAX_FLAVORS) unless the config or ``changes`` sets max_flavors."""
    _validate(changes, " (in overrides)")
    if "mode" in changes and "max_flavors" not in changes and "max_flavors" not in config.given:
        changes = {**changes, "max_flavors": MODE_MAX_FLAVORS[changes["mode"]]}
    changed = dataclasses.replace(config, **changes)
    _check_chain({"mode": changed.mode, "min_flavors": changed.min_flavors, "max_flavors": changed.max_flavors},
                 " (in overrides)")
    return changed
