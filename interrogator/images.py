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
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from PIL import Image, ImageOps

from .errors import ConfigError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_SIDE = 2048  # larger images are downscaled (keeping aspect) before preprocessing


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

    def pin_memory(self):
        self.caption_pixels = self.caption_pixels.pin_memory()
        self.clip_pixels = self.clip_pixels.pin_memory()
        return self

    @property
    def ok(self) -> List[int]:
        """Positions in the batch whose image decoded."""
        return [i for i, e in enumerate(self.errors) if not e]


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


def batch_loader(dataset: ImageDataset, batches: Sequence[Sequence[int]], num_workers: int, pin_memory: bool):
    """The given batches (lists of dataset indices) in order, decoded in worker processes
    while the GPU works on the previous batch."""
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=[list(b) for b in batches], num_workers=num_workers, collate_fn=collate,
        pin_memory=pin_memory, prefetch_factor=4 if num_workers else None)
