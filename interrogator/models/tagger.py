"""WD-format ONNX taggers (WD v3 and WD14: ViT, SwinV2, ConvNeXt, EVA02, MOAT): ``model.onnx`` and
``selected_tags.csv`` in one folder, run with onnxruntime (the ``[tagger]`` extra). (JoyTag normalises RGB
and ships its own tag list: not this format.)

- **Preprocessing** is the taggers' own: the image padded to a square on white (centred), resized to the
  model's input side with bicubic resampling, RGB turned BGR, float32 in 0-255, laid out as the model's input
  says (NHWC ``[b, H, W, 3]`` for WD, NCHW ``[b, 3, H, W]`` otherwise).
- **Selection** (``TagRules.select``): general tags at or above ``tag_threshold`` (or, with ``tag_mcut``, the
  Maximum Cut threshold of the image's general scores: the midpoint of the largest gap between consecutive
  sorted scores), character tags at or above ``character_threshold``, at most ``max_tags`` general tags
  (the highest first), and the best rating as its own field.
- **Cleaning**, in this order: underscores to spaces (except kaomoji such as ``^_^``), undesired tags dropped
  (named as written in the CSV or as cleaned), replacements (``a=b``; ``a=`` drops the tag), brackets escaped for prompt syntax
  (``tag_escape``); then character tags first, each group by score (ties by the CSV's order), and the tags
  listed in ``tags_first`` moved to the front in their listed order.
- **Device**: on CUDA the CUDA execution provider; where onnxruntime has none (the CPU-only ``onnxruntime``
  package), one warning names ``onnxruntime-gpu``, never a silent CPU run.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..core.config import TaggerSettings
from ..core.errors import ModelLoadError
from ..core.record import ImageTags
from PIL import Image

log = logging.getLogger(__name__)

MODEL_FILE, TAGS_FILE = "model.onnx", "selected_tags.csv"
CATEGORIES = {"0": "general", "4": "character", "9": "rating"}  # the WD tag CSV's category column
KAOMOJI = frozenset({"0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o",
                     "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||"})
CUDA_PROVIDER = "CUDAExecutionProvider"


@dataclass(frozen=True)
class TagLabels:
    """selected_tags.csv: each output's name and category (general, character or rating)."""

    names: Tuple[str, ...]
    categories: Tuple[str, ...]

    def indices(self, category: str) -> np.ndarray:
        return np.array([i for i, c in enumerate(self.categories) if c == category], dtype=np.int64)


@dataclass(frozen=True)
class TagRules:
    """The selection and cleaning settings (config keys of the same names)."""

    threshold: float = 0.35
    character_threshold: float = 0.85
    mcut: bool = False
    max_tags: Optional[int] = None
    escape: bool = False
    undesired: Tuple[str, ...] = ()
    replacements: Tuple[Tuple[str, str], ...] = ()
    first: Tuple[str, ...] = ()

    def select(self, labels: TagLabels, scores: np.ndarray) -> ImageTags:
        """One image's tags from its scores (one per label)."""
        general = labels.indices("general")
        threshold = mcut_threshold(scores[general]) if self.mcut else self.threshold
        chosen_general = _ranked(general[scores[general] >= threshold], scores)[:self.max_tags]
        character = labels.indices("character")
        chosen_character = _ranked(character[scores[character] >= self.character_threshold], scores)
        tags, seen = [], set()
        for index in [*chosen_character, *chosen_general]:
            name = self.clean(labels.names[index])
            if name is not None and name not in seen:
                seen.add(name)
                tags.append((name, float(scores[index])))
        tags = self.first_ordered(tags)
        rating = labels.indices("rating")
        if len(rating) == 0:
            return ImageTags(tags)
        best = rating[_ranked(np.arange(len(rating)), scores[rating])[0]]
        return ImageTags(tags, self.clean(labels.names[best]) or labels.names[best], float(scores[best]))

    def clean(self, raw: str) -> Optional[str]:
        """A tag as written out, or None where it is undesired or a replacement emptied it (``solo=``)."""
        name = raw if raw in KAOMOJI else raw.replace("_", " ")
        if raw in self.undesired or name in self.undesired:
            return None
        for old, new in self.replacements:
            if name == old:
                name = new
        if not name.strip():
            return None
        if self.escape:
            name = name.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        return name

    def first_ordered(self, tags: List[Tuple[str, float]]) -> List[Tuple[str, float]]:
        if not self.first:
            return tags
        rank = {name: i for i, name in enumerate(self.first)}
        leading = sorted((t for t in tags if t[0] in rank), key=lambda t: rank[t[0]])
        return leading + [t for t in tags if t[0] not in rank]


def _ranked(indices: np.ndarray, scores: np.ndarray) -> List[int]:
    """Indices by score, highest first; ties keep the CSV's order (a stable sort)."""
    order = np.argsort(-scores[indices], kind="stable")
    return [int(i) for i in np.asarray(indices)[order]]


def mcut_threshold(scores: np.ndarray) -> float:
    """Maximum Cut thresholding (Largeron et al., 2012): the midpoint of the largest gap between consecutive
    scores sorted in descending order (1.0 where there are fewer than two: nothing passes but a perfect score)."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if len(ordered) < 2:
        return 1.0
    gaps = ordered[:-1] - ordered[1:]
    t = int(np.argmax(gaps))
    return float((ordered[t] + ordered[t + 1]) / 2)


def read_tag_labels(path: Path) -> TagLabels:
    """selected_tags.csv (tag_id, name, category, count); ModelLoadError naming the file and the row."""
    names, categories = [], []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ModelLoadError(f"config key 'tagger_path': cannot read {path}: {exc}") from exc
    for n, row in enumerate(rows, start=2):
        category = CATEGORIES.get(str(row.get("category", "")).strip())
        if not row.get("name") or category is None:
            raise ModelLoadError(f"config key 'tagger_path': {path} line {n}: expected a name and a category "
                                 f"among {', '.join(f'{k} ({v})' for k, v in CATEGORIES.items())}")
        names.append(row["name"])
        categories.append(category)
    if not names:
        raise ModelLoadError(f"config key 'tagger_path': {path} lists no tags")
    return TagLabels(tuple(names), tuple(categories))


def check_tagger_folder(path: str) -> TagLabels:
    """The folder holds model.onnx and a valid selected_tags.csv, and onnxruntime is installed."""
    folder = Path(path)
    for name in (MODEL_FILE, TAGS_FILE):
        if not (folder / name).is_file():
            raise ModelLoadError(f"config key 'tagger_path': no {name} in tagger folder {path}")
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError("config key 'tagger_path': the tagger needs onnxruntime: pip install "
                             "'interrogator[tagger]' (or onnxruntime-gpu for CUDA)") from exc
    return read_tag_labels(folder / TAGS_FILE)


def providers(device: str) -> List[str]:
    """The execution providers for ``device``; on CUDA without the CUDA provider, one warning line."""
    import onnxruntime as ort  # lazy: the [tagger] extra
    if not device.startswith("cuda"):
        return ["CPUExecutionProvider"]
    if CUDA_PROVIDER not in ort.get_available_providers():
        log.warning("tagger: onnxruntime %s has no CUDA provider, so the tagger runs on the CPU; "
                    "pip install onnxruntime-gpu (in place of onnxruntime) to run it on the GPU", ort.__version__)
        return ["CPUExecutionProvider"]
    index = device.split(":", 1)[1] if ":" in device else "0"
    return [(CUDA_PROVIDER, {"device_id": int(index)}), "CPUExecutionProvider"]


def square_on_white(image, side: int) -> np.ndarray:
    """The WD taggers' preprocessing of one RGB image: padded to a square on white, resized, BGR, float32 0-255."""
    width, height = image.size
    edge = max(width, height)
    canvas = Image.new("RGB", (edge, edge), (255, 255, 255))
    canvas.paste(image, ((edge - width) // 2, (edge - height) // 2))
    if edge != side:
        canvas = canvas.resize((side, side), Image.BICUBIC)
    return np.asarray(canvas, dtype=np.float32)[:, :, ::-1].copy()


@dataclass
class TaggerTransform:
    """image -> the tagger's input tensor (HWC or CHW), for loader workers (pickles small)."""

    side: int
    channels_last: bool

    def __call__(self, image) -> torch.Tensor:
        array = square_on_white(image, self.side)
        return torch.from_numpy(array if self.channels_last else np.ascontiguousarray(array.transpose(2, 0, 1)))


@dataclass
class Tagger:
    """An ONNX tagger session with its labels and rules; ``tag`` runs one session call per batch."""

    session: object
    labels: TagLabels
    rules: TagRules
    transform: TaggerTransform
    input_name: str = "input"
    provider: str = "CPUExecutionProvider"

    def scores(self, pixels: torch.Tensor) -> np.ndarray:
        """(n, labels) probabilities of a preprocessed batch."""
        out = self.session.run(None, {self.input_name: pixels.numpy().astype(np.float32, copy=False)})[0]
        if out.shape != (pixels.shape[0], len(self.labels.names)):
            raise ModelLoadError(f"config key 'tagger_path': the model gives {out.shape[1:]} scores per image, "
                                 f"and selected_tags.csv lists {len(self.labels.names)} tags")
        return out

    def tag(self, pixels: torch.Tensor) -> List[ImageTags]:
        if pixels.shape[0] == 0:
            return []
        return [self.rules.select(self.labels, row) for row in self.scores(pixels)]


def input_layout(session) -> Tuple[str, int, bool]:
    """The input's name, side and whether it is channels-last, from the model's input shape."""
    spec = session.get_inputs()[0]
    shape = list(spec.shape)
    if len(shape) != 4 or not (shape[3] == 3 or shape[1] == 3):
        raise ModelLoadError(f"config key 'tagger_path': the model's input {spec.name} has shape {shape}; "
                             f"expected [batch, side, side, 3] or [batch, 3, side, side]")
    channels_last = shape[3] == 3
    side = shape[1] if channels_last else shape[2]
    if not isinstance(side, int):
        raise ModelLoadError(f"config key 'tagger_path': the model's input {spec.name} has no fixed side ({shape})")
    return spec.name, side, channels_last


def load_tagger(path: str, device: str, rules: TagRules, threads: Optional[int] = None) -> Tagger:
    """The tagger in ``path`` on ``device`` (module docstring)."""
    import onnxruntime as ort  # lazy: the [tagger] extra
    labels = check_tagger_folder(path)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(Path(path) / MODEL_FILE), options, providers=providers(device))
    except Exception as exc:
        raise ModelLoadError(f"config key 'tagger_path': cannot load {Path(path) / MODEL_FILE}: "
                             f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from exc
    if device.startswith("cuda") and CUDA_PROVIDER in ort.get_available_providers() \
            and CUDA_PROVIDER not in session.get_providers():
        log.warning("tagger: onnxruntime could not start its CUDA provider (CUDA or cuDNN libraries missing?), "
                    "so the tagger runs on the CPU")
    name, side, channels_last = input_layout(session)
    return Tagger(session, labels, rules, TaggerTransform(side, channels_last), name, session.get_providers()[0])


def tagger_transform(path: str) -> TaggerTransform:
    """The loader workers' transform for the tagger in ``path``, read from the model's input (no session kept)."""
    import onnxruntime as ort  # lazy: the [tagger] extra
    check_tagger_folder(path)
    session = ort.InferenceSession(str(Path(path) / MODEL_FILE), providers=["CPUExecutionProvider"])
    _, side, channels_last = input_layout(session)
    return TaggerTransform(side, channels_last)


def parse_replacements(items: Sequence[str]) -> Tuple[Tuple[str, str], ...]:
    return tuple(tuple(item.split("=", 1)) for item in items)  # type: ignore[misc]


def tag_rules(settings: TaggerSettings) -> TagRules:
    """The selection and cleaning rules of the config's tagger section."""
    return TagRules(settings.tag_threshold, settings.character_threshold, settings.tag_mcut, settings.max_tags,
                    settings.tag_escape, tuple(settings.undesired_tags), parse_replacements(settings.tag_replacements),
                    tuple(settings.tags_first))
