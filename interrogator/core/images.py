"""Finding images in a folder, decoding them safely to RGB, and batching them for the models.

Folder rule: a file is an image when its extension is one of IMAGE_EXTENSIONS
(case-insensitive). Hidden files (name starting with '.'), sub-folders and every
other extension are skipped. Two images with the same stem are an error.
"""
from __future__ import annotations

import logging
import os
import unicodedata
import warnings
import io
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from PIL import Image, ImageOps

from .config import IMAGE_EXTENSIONS
from .errors import ConfigError
from .identity import content_digest

log = logging.getLogger(__name__)

MAX_SIDE = 2048  # larger images are downscaled (keeping aspect) before preprocessing
MIN_PART = 8  # fewest images a loader worker decodes in one go
COMPETITION_IMAGES = "images"  # where a data_path without images of its own may keep them
LINE_BREAKS = ("\u2028", "\u2029")  # line separators that are not control characters


@dataclass(frozen=True)
class ImageFile:
    """One input image: its id (the file stem) and path."""

    image_id: str
    path: Path


@dataclass
class FolderScan:
    """The images of a folder, and the entries named like images that were skipped, with the reason."""

    files: List[ImageFile]
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (name, why)

    def skipped_line(self) -> str:
        return ", ".join(f"{name} ({why})" for name, why in self.skipped)


def unlisted(relative: str) -> Optional[str]:
    """Why the listing (scan_folder, scan_tree) never lists the file at ``relative`` (a path relative to the
    folder listed), or None when it lists it: the one rule that every command which names images itself
    (``--pairs``) checks too, so an image is never counted as undecodable for being left out."""
    parts = Path(relative).parts
    hidden = next((p for p in parts if p.startswith(".") and p not in (".", "..")), None)
    if hidden is not None:
        return f"{'its folder ' + hidden if hidden != parts[-1] else 'its name'} starts with '.', and hidden " \
               f"files and folders are never listed"
    if Path(relative).suffix.lower() not in IMAGE_EXTENSIONS:
        return f"its extension is not one of {', '.join(IMAGE_EXTENSIONS)}"
    return None


def _not_an_image_file(path: Path) -> Optional[str]:
    """Why an entry named like an image is not a readable file, or None when it is one."""
    try:
        mode = path.stat().st_mode  # follows links
    except FileNotFoundError:
        return "broken symlink" if path.is_symlink() else "vanished"
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_name(name: str, folder: Path) -> None:
    """Refuse a file name that cannot be an id in the CSV: not UTF-8, or holding a control character."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"config key 'data_path': the file name {name!r} in {folder} is not valid UTF-8, "
                          f"so its id cannot be written to the CSV; rename it") from exc
    bad = next((c for c in name if c in LINE_BREAKS or unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        raise ConfigError(f"config key 'data_path': the file name {name!r} in {folder} holds the control "
                          f"character {bad!r}, which a CSV id cannot carry; rename it")


def scan_folder(folder: str | Path) -> FolderScan:
    """The images of a folder, sorted by id, following the folder rule above; a folder with no images
    of its own but an ``images/`` sub-folder (the competition's layout) gives that sub-folder's.

    Entries named like images that are not regular files (broken symlinks, folders, FIFOs) are skipped
    and listed; a name that cannot be an id in the CSV is an error naming it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"config key 'data_path': not a folder: {folder}")
    by_id, skipped = {}, []
    for path in sorted(folder.iterdir()):
        if unlisted(path.name) is not None:
            continue
        why = _not_an_image_file(path)
        if why is not None:
            skipped.append((path.name, why))
            continue
        check_name(path.name, folder)
        if path.stem in by_id:
            raise ConfigError(f"config key 'data_path': two images share the id '{path.stem}': "
                              f"{by_id[path.stem].path.name} and {path.name}")
        by_id[path.stem] = ImageFile(path.stem, path)
    if not by_id:
        nested = folder / COMPETITION_IMAGES
        if nested.is_dir():  # the competition's folder: its images are in images/
            log.info("no images in %s itself; using its %s/ folder", folder, COMPETITION_IMAGES)
            return scan_folder(nested)
        raise ConfigError(f"config key 'data_path': no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    scan = FolderScan([by_id[k] for k in sorted(by_id)], skipped)
    if skipped:
        log.warning("skipped %d entries of %s named like images: %s", len(skipped), folder, scan.skipped_line())
    return scan


def scan_tree(folder: str | Path) -> FolderScan:
    """The images of a folder and all its sub-folders, each with its relative path (``a/b.png``) as its id,
    sorted by that path; the folder rule above holds in every sub-folder, and hidden sub-folders are skipped.

    Relative paths are unique where stems need not be, so two images may share a stem here.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"config key 'data_path': not a folder: {folder}")
    found, skipped = [], []

    def cannot_list(error: OSError) -> None:  # a folder that cannot be listed (too long a path, no permission)
        where = Path(error.filename).relative_to(folder).as_posix() if error.filename else str(folder)
        skipped.append((where + "/", f"cannot list: {error.strerror or error}"))
    for root, dirs, names in os.walk(folder, onerror=cannot_list):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root) / name
            if unlisted(name) is not None:
                continue
            relative = path.relative_to(folder).as_posix()
            why = _not_an_image_file(path)
            if why is not None:
                skipped.append((relative, why))
                continue
            check_name(relative, folder)
            found.append(ImageFile(relative, path))
    if not found:
        raise ConfigError(f"config key 'data_path': no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder} "
                          f"or its sub-folders")
    scan = FolderScan(sorted(found, key=lambda f: f.image_id), skipped)
    if skipped:
        log.warning("skipped %d entries of %s named like images: %s", len(skipped), folder, scan.skipped_line())
    return scan


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: EXIF orientation applied, first frame only, alpha flattened on white."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        image = image.point(lambda v: v * (1 / 256)).convert("L")
    elif image.mode == "F":
        image = image.convert("L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def read_image(path: Path) -> Tuple[bytes, str]:
    """A file's bytes and their content digest; raises ValueError with the reason."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror or exc}") from exc
    return data, content_digest(data)


def decode_image(data: bytes, name: str = "image") -> Image.Image:
    """Decode image bytes to an RGB image no larger than MAX_SIDE; raises ValueError with the reason."""
    buffer = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(buffer) as img:
                img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at reduced size
                rgb = to_rgb(img)
                rgb.load()
    except Image.DecompressionBombError as exc:
        raise ValueError(f"refused by the decompression-bomb limit ({exc})") from exc
    except Exception as exc:  # PIL raises many types for bad files
        message = str(exc).replace(repr(buffer), repr(name))  # the same words for the same bytes, in any run
        raise ValueError(f"cannot decode: {type(exc).__name__}: {message}") from exc
    if max(rgb.size) > MAX_SIDE:
        log.info("%s is %dx%d; downscaled to fit %d px", name, *rgb.size, MAX_SIDE)
        rgb.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BICUBIC)
    return rgb


def load_image(path: Path) -> Image.Image:
    """Decode one file to an RGB image no larger than MAX_SIDE; raises ValueError with the reason."""
    return decode_image(read_image(path)[0], path.name)


Pixels = Union[torch.Tensor, list]  # a stacked tensor, or a list where a model takes images of any size (VLMs)


@dataclass
class ImageBatch:
    """A batch of decoded, preprocessed images; failed ones carry an error and blank pixels."""

    indices: List[int]
    caption_pixels: Pixels
    clip_pixels: torch.Tensor
    errors: List[str]
    digests: List[str]  # content digest of each file's bytes ('' where it could not be read)
    tagger_pixels: Pixels = field(default_factory=lambda: torch.zeros(0))  # the WD tagger's input (tagger.py)

    @property
    def ok(self) -> List[int]:
        """Positions in the batch whose image decoded."""
        return [i for i, e in enumerate(self.errors) if not e]

    def decoded(self, pixels: Pixels) -> Pixels:
        """The rows of ``pixels`` whose image decoded: the tensor itself (no copy, still pinned) when all did."""
        if not any(self.errors):
            return pixels
        return pixels[self.ok] if isinstance(pixels, torch.Tensor) else [pixels[i] for i in self.ok]


class DecodedImage(NamedTuple):
    """One dataset item: the image's position, its pixels for each model, why it failed ('' if it did not),
    and the digest of its bytes ('' if they could not be read)."""

    index: int
    caption_pixels: object
    clip_pixels: torch.Tensor
    error: str
    digest: str
    tagger_pixels: object = None


class Transforms(NamedTuple):
    """What loader workers make of each image for the captioner, CLIP and the tagger; None where that model
    does not run (its tensor is then empty)."""

    caption: Optional[Callable] = None
    clip: Optional[Callable] = None
    tagger: Optional[Callable] = None


class ImageDataset(torch.utils.data.Dataset):
    """Decodes and preprocesses one image for the captioner, CLIP and the tagger (runs in loader workers).

    A transform may return a tensor (stacked into the batch) or anything else, such as an image array for a
    model whose processor takes images of any size (a list in the batch)."""

    def __init__(self, files: Sequence[ImageFile], caption_transform: Optional[Callable] = None,
                 clip_transform: Optional[Callable] = None, tagger_transform: Optional[Callable] = None):
        """A transform may be None when its model does not run (low_memory): its tensor is then empty."""
        self.files = list(files)
        self.transforms = (caption_transform, clip_transform, tagger_transform)
        self._blanks: Optional[tuple] = None

    def __len__(self) -> int:
        return len(self.files)

    @staticmethod
    def _apply(transform: Optional[Callable], image) -> object:
        return transform(image) if transform is not None else torch.zeros(0)

    def _blank(self) -> tuple:
        """What a failed image gets: zeros of each tensor's shape, the blank image's value otherwise."""
        if self._blanks is None:
            blank = Image.new("RGB", (64, 64))
            values = [self._apply(t, blank) for t in self.transforms]
            self._blanks = tuple(torch.zeros(v.shape) if isinstance(v, torch.Tensor) else v for v in values)
        return self._blanks

    def __getitem__(self, index: int) -> DecodedImage:
        path, digest = self.files[index].path, ""
        try:
            data, digest = read_image(path)
            image = decode_image(data, path.name)
            cap, clip, tag = (self._apply(t, image) for t in self.transforms)
            return DecodedImage(index, cap, clip, "", digest, tag)
        except ValueError as exc:
            cap, clip, tag = self._blank()
            return DecodedImage(index, cap, clip, str(exc), digest, tag)


def stack(values: Sequence) -> Pixels:
    """Tensors stacked into one; anything else kept as a list."""
    return torch.stack(list(values)) if all(isinstance(v, torch.Tensor) for v in values) else list(values)


def collate(items: Sequence[DecodedImage]) -> ImageBatch:
    indices, cap, clip, errors, digests, tag = zip(*items)
    return ImageBatch(list(indices), stack(cap), torch.stack(clip), list(errors), list(digests), stack(tag))


def join(parts: Sequence[ImageBatch], pin_memory: bool) -> ImageBatch:
    """One batch from consecutive parts, its tensors in pinned memory when asked (for the copy to the GPU)."""
    if len(parts) == 1 and not pin_memory:
        return parts[0]

    def cat(values: List[Pixels]) -> Pixels:
        if not isinstance(values[0], torch.Tensor):
            return [v for part in values for v in part]
        out = torch.empty((sum(t.shape[0] for t in values), *values[0].shape[1:]), dtype=values[0].dtype,
                          pin_memory=pin_memory)
        return torch.cat(values, out=out)
    return ImageBatch([i for p in parts for i in p.indices], cat([p.caption_pixels for p in parts]),
                      cat([p.clip_pixels for p in parts]), [e for p in parts for e in p.errors],
                      [d for p in parts for d in p.digests], cat([p.tagger_pixels for p in parts]))


def split_batches(batches: Sequence[Sequence[int]], workers: int, min_part: int = MIN_PART) -> List[List[List[int]]]:
    """Each batch cut into up to ``workers`` consecutive parts of at least ``min_part`` images."""
    out = []
    for batch in batches:
        size = max(min_part, -(-len(batch) // max(workers, 1)))
        out.append([list(batch[i:i + size]) for i in range(0, len(batch), size)])
    return out


def image_batches(files: Sequence[ImageFile], batches: Sequence[Sequence[int]], transforms: Transforms,
                  num_workers: int = 0, pin_memory: bool = False, min_part: int = MIN_PART) -> Iterator[ImageBatch]:
    """The one path from image files to batches: the given batches (lists of positions in ``files``) read,
    hashed, decoded and preprocessed, in order; in worker processes while the GPU works on the previous batch
    when ``num_workers`` > 0.

    Each batch is cut into parts spread over all the workers, so a batch is ready ``num_workers``
    times sooner than if one worker decoded all of it, and about two batches wait in memory.
    ``min_part`` as large as the batch gives the plain one-worker-per-batch loader.
    """
    dataset = ImageDataset(files, *transforms)
    if num_workers == 0:
        for batch in batches:
            yield join([collate([dataset[i] for i in batch])], pin_memory)
        return
    parts = split_batches(batches, num_workers, min_part)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=[p for batch in parts for p in batch],
                                         num_workers=num_workers, collate_fn=collate, prefetch_factor=2)
    iterator = iter(loader)
    for batch in parts:
        yield join([next(iterator) for _ in batch], pin_memory)
