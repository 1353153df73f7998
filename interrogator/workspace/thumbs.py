"""Thumbnails, made once into a cache folder and on demand: a file's thumbnail is keyed by its real path, size
and modification time, so a changed image gets a new one and an unchanged one is never decoded again. An image
that does not decode gets the cache's one grey placeholder."""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from PIL import Image

from ..core.atomic import write_bytes
from ..core.images import decode_image, read_image

SIDE = 256


def thumb_key(image: Path) -> str:
    real = os.path.realpath(image)
    st = os.stat(real)
    return hashlib.blake2b(f"{real}\0{st.st_size}\0{st.st_mtime_ns}\0{SIDE}".encode("utf-8", "surrogateescape"),
                           digest_size=16).hexdigest()


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def placeholder(cache: Path) -> Path:
    path = cache / "undecodable.jpg"
    if not path.exists():
        write_bytes(path, jpeg(Image.new("RGB", (SIDE, SIDE), (128, 128, 128))))
    return path


def thumbnail(image: Path, cache: Path) -> Path:
    """The image's thumbnail in ``cache`` (made now if it is not there yet)."""
    try:
        key = thumb_key(image)
    except OSError:
        return placeholder(cache)
    path = cache / key[:2] / f"{key}.jpg"
    if path.exists():
        return path
    try:
        small = decode_image(read_image(image)[0], image.name, max_side=SIDE)
    except ValueError:
        return placeholder(cache)
    return write_bytes(path, jpeg(small))
