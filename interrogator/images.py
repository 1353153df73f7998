"""Finding images in a folder, decoding them safely to RGB, and batching them for the models.

Folder rule: a file is an image when its extension is one of IMAGE_EXTENSIONS
(case-insensitive). Hidden files (name starting with '.'), sub-folders and every
other extension are skipped. Two images with the same stem are an error.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import torch
from PIL import Image, ImageOps

from .errors import ConfigError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_SIDE = 2048  # larger images are downscaled (keeping aspect) before preprocessing
MIN_PART = 8  # fewest images a loader worker decodes in one go


@dataclass(frozen=True)
class ImageFile:
    """One input image: its id (the file stem) and path."""

    image_id: str
    path: Path


def list_images(folder: str | Path) -> List[ImageFile]:
    """The images of a folder, sorted by id, following the folder rule above."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"config key 'data_path': not a folder: {folder}")
    by_id = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if path.stem in by_id:
            raise ConfigError(f"config key 'data_path': two images share the id '{path.stem}': "
                              f"{by_id[path.stem].path.name} and {path.name}")
        by_id[path.stem] = ImageFile(path.stem, path)
    if not by_id:
        raise ConfigError(f"config key 'data_path': no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return [by_id[k] for k in sorted(by_id)]


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


def load_image(path: Path) -> Image.Image:
    """Decode one file to an RGB image no larger than MAX_SIDE; raises ValueError with the reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at reduced size
                rgb = to_rgb(img)
                rgb.load()
    except Image.DecompressionBombError as exc:
        raise ValueError(f"refused by the decompression-bomb limit ({exc})") from None
    except Exception as exc:  # PIL raises many types for bad files
        raise ValueError(f"cannot decode: {type(exc).__name__}: {exc}") from None
    if max(rgb.size) > MAX_SIDE:
        log.info("%s is %dx%d; downscaled to fit %d px", path.name, *rgb.size, MAX_SIDE)
        rgb.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BICUBIC)
    return rgb


@dataclass
class ImageBatch:
    """A batch of decoded, preprocessed images; failed ones carry an error and zero pixels."""

    indices: List[int]
    caption_pixels: torch.Tensor
    clip_pixels: torch.Tensor
    errors: List[str]

    @property
    def ok(self) -> List[int]:
        """Positions in the batch whose image decoded."""
        return [i for i, e in enumerate(self.errors) if not e]

    def decoded(self, pixels: torch.Tensor) -> torch.Tensor:
        """The rows of ``pixels`` whose image decoded: the tensor itself (no copy, still pinned) when all did."""
        return pixels if not any(self.errors) else pixels[self.ok]


class ImageDataset(torch.utils.data.Dataset):
    """Decodes and preprocesses one image for both the captioner and CLIP (runs in loader workers)."""

    def __init__(self, files: Sequence[ImageFile], caption_transform: Optional[Callable],
                 clip_transform: Optional[Callable]):
        """A transform may be None when only one model runs (low_memory): its tensor is then empty."""
        self.files = list(files)
        self.caption_transform = caption_transform
        self.clip_transform = clip_transform
        self._shapes: Optional[Tuple[torch.Size, torch.Size]] = None

    def __len__(self) -> int:
        return len(self.files)

    @staticmethod
    def _apply(transform: Optional[Callable], image) -> torch.Tensor:
        return transform(image) if transform is not None else torch.zeros(0)

    def _blank_shapes(self):
        if self._shapes is None:
            blank = Image.new("RGB", (64, 64))
            self._shapes = (self._apply(self.caption_transform, blank).shape,
                            self._apply(self.clip_transform, blank).shape)
        return self._shapes

    def __getitem__(self, index: int):
        try:
            image = load_image(self.files[index].path)
            return index, self._apply(self.caption_transform, image), self._apply(self.clip_transform, image), ""
        except ValueError as exc:
            cap_shape, clip_shape = self._blank_shapes()
            return index, torch.zeros(cap_shape), torch.zeros(clip_shape), str(exc)


def collate(items) -> ImageBatch:
    indices, cap, clip, errors = zip(*items)
    return ImageBatch(list(indices), torch.stack(cap), torch.stack(clip), list(errors))


def join(parts: Sequence[ImageBatch], pin_memory: bool) -> ImageBatch:
    """One batch from consecutive parts, its tensors in pinned memory when asked (for the copy to the GPU)."""
    if len(parts) == 1 and not pin_memory:
        return parts[0]

    def cat(tensors: List[torch.Tensor]) -> torch.Tensor:
        out = torch.empty((sum(t.shape[0] for t in tensors), *tensors[0].shape[1:]), dtype=tensors[0].dtype,
                          pin_memory=pin_memory)
        return torch.cat(tensors, out=out)
    return ImageBatch([i for p in parts for i in p.indices], cat([p.caption_pixels for p in parts]),
                      cat([p.clip_pixels for p in parts]), [e for p in parts for e in p.errors])


def split_batches(batches: Sequence[Sequence[int]], workers: int, min_part: int = MIN_PART) -> List[List[List[int]]]:
    """Each batch cut into up to ``workers`` consecutive parts of at least ``min_part`` images."""
    out = []
    for batch in batches:
        size = max(min_part, -(-len(batch) // max(workers, 1)))
        out.append([list(batch[i:i + size]) for i in range(0, len(batch), size)])
    return out


def batch_loader(dataset: ImageDataset, batches: Sequence[Sequence[int]], num_workers: int,
                 pin_memory: bool, min_part: int = MIN_PART) -> Iterator[ImageBatch]:
    """The given batches (lists of dataset indices) in order, decoded in worker processes while the
    GPU works on the previous batch.

    Each batch is cut into parts spread over all the workers, so a batch is ready ``num_workers``
    times sooner than if one worker decoded all of it, and about two batches wait in memory.
    ``min_part`` as large as the batch gives the plain one-worker-per-batch loader.
    """
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
