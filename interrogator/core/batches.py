"""Batching images for the models: the one path from image files to preprocessed batches (``image_batches``),
decoded in loader workers (``ImageDataset``) while the GPU works, failed images carried with their reason.

Finding and decoding the files is images.py; this module is the torch half, so that what only lists files (the
command line's parsers, the plan's checks) imports no torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from PIL import Image

from .images import ImageFile, decode_image

MIN_PART = 8  # fewest images a loader worker decodes in one go


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
        self.files = files if isinstance(files, Sequence) else list(files)  # a plan's listing is not copied
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

    def __getitem__(self, index: Union[int, Tuple[int, ImageFile]]) -> DecodedImage:
        """The image at ``index`` of the files, or ``(index, its file)`` as FilesOf hands them to workers."""
        index, file = index if isinstance(index, tuple) else (index, self.files[index])
        digest = ""
        try:
            data, digest = file.read()
            image = decode_image(data, file.shown)
            cap, clip, tag = (self._apply(t, image) for t in self.transforms)
            return DecodedImage(index, cap, clip, "", digest, tag)
        except ValueError as exc:
            cap, clip, tag = self._blank()
            return DecodedImage(index, cap, clip, str(exc), getattr(exc, "digest", digest), tag)  # MissingImage


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


class FilesOf:
    """The loader's batch sampler: each part's positions with their files, made in the loader's own process as it
    hands out parts. A shard sample's file comes from the plan's listing, which reads a shard's members once
    (listing.shard_members); the workers get each file whole and never read a shard's headers themselves."""

    def __init__(self, files: Sequence[ImageFile], parts: Sequence[Sequence[int]]):
        self.files, self.parts = files, parts

    def __len__(self) -> int:
        return len(self.parts)

    def __iter__(self) -> Iterator[List[Tuple[int, ImageFile]]]:
        return ([(i, self.files[i]) for i in part] for part in self.parts)


def image_batches(files: Sequence[ImageFile], batches: Sequence[Sequence[int]], transforms: Transforms,
                  num_workers: int = 0, pin_memory: bool = False, min_part: int = MIN_PART) -> Iterator[ImageBatch]:
    """The one path from image files to batches: the given batches (lists of positions in ``files``) read,
    hashed, decoded and preprocessed, in order; in worker processes while the GPU works on the previous batch
    when ``num_workers`` > 0.

    Each batch is cut into parts spread over all the workers, so a batch is ready ``num_workers``
    times sooner than if one worker decoded all of it, and about two batches wait in memory.
    ``min_part`` as large as the batch gives the plain one-worker-per-batch loader.
    """
    if num_workers == 0:
        dataset = ImageDataset(files, *transforms)
        for batch in batches:
            yield join([collate([dataset[i] for i in batch])], pin_memory)
        return
    parts = split_batches(batches, num_workers, min_part)
    dataset = ImageDataset((), *transforms)  # each worker gets its files from FilesOf, not the whole listing
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=FilesOf(files, [p for batch in parts for p in batch]),
                                         num_workers=num_workers, collate_fn=collate, prefetch_factor=2)
    iterator = iter(loader)
    for batch in parts:
        yield join([next(iterator) for _ in batch], pin_memory)
