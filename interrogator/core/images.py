"""Finding images in a folder and decoding them safely to RGB (batches.py batches them for the models).

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
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image, ImageOps

from .config import IMAGE_EXTENSIONS
from .errors import ConfigError
from .listing import FileListing, Strings, first_duplicate
from .samples import ImageFile, read_sample  # noqa: F401  (ImageFile lives in samples.py; callers import it here)

log = logging.getLogger(__name__)

MAX_SIDE = 2048  # larger images are downscaled (keeping aspect) before preprocessing
COMPETITION_IMAGES = "images"  # where a data_path without images of its own may keep them
LINE_BREAKS = ("\u2028", "\u2029")  # line separators that are not control characters


@dataclass
class FolderScan:
    """The images of a folder, and the entries named like images that were skipped, with the reason."""

    files: Sequence[ImageFile]          # a listing.FileListing or ShardListing: a few bytes an image
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (name, why)
    extensions: Dict[str, frozenset] = field(default_factory=dict)  # a tar shard's member extensions, by its path

    def skipped_line(self) -> str:
        return ", ".join(f"{name} ({why})" for name, why in self.skipped)


def unlisted(relative: str) -> Optional[str]:
    """Why the listing (scan_folder, scan_tree) never lists the file at ``relative`` (a path relative to the
    folder listed), or None when it lists it: the one rule that every command which names images itself
    (``--pairs``) checks too, so an image is never counted as undecodable for being left out."""
    if "/" not in relative and os.sep == "/" and relative not in ("", ".", ".."):  # a bare name: no Path
        if relative.startswith("."):
            return "its name starts with '.', and hidden files and folders are never listed"
        extension = relative[len(stem(relative)):]
        return None if extension.lower() in IMAGE_EXTENSIONS else \
            f"its extension is not one of {', '.join(IMAGE_EXTENSIONS)}"
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
    if name.isascii() and name.isprintable():
        return  # every control character and line break of ASCII is unprintable, and ASCII is UTF-8
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"config key 'data_path': the file name {name!r} in {folder} is not valid UTF-8, "
                          f"so its id cannot be written to the CSV; rename it") from exc
    bad = next((c for c in name if c in LINE_BREAKS or unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        raise ConfigError(f"config key 'data_path': the file name {name!r} in {folder} holds the control "
                          f"character {bad!r}, which a CSV id cannot carry; rename it")


def stem(relative: str) -> str:
    """``Path(relative).stem`` of a file's posix path, without making a Path (a listing takes millions)."""
    name = relative.rsplit("/", 1)[-1]
    if name == ".":
        return ""
    dot = name.rfind(".")
    return name[:dot] if 0 < dot < len(name) - 1 else name


def _entry_skipped(entry: os.DirEntry) -> Optional[str]:
    """_not_an_image_file of a listed entry; a regular file (or a link to one) costs no stat."""
    return None if entry.is_file() else _not_an_image_file(Path(entry.path))


def scan_folder(folder: str | Path) -> FolderScan:
    """The images of a folder, sorted by id, following the folder rule above; a folder with no images
    of its own but an ``images/`` sub-folder (the competition's layout) gives that sub-folder's.

    Entries named like images that are not regular files (broken symlinks, folders, FIFOs) are skipped
    and listed; a name that cannot be an id in the CSV is an error naming it. The images come as a
    ``listing.FileListing`` (ids and names in a few bytes each); only the sort holds every name as a ``str``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"config key 'data_path': not a folder: {folder}")
    names, skipped = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if unlisted(entry.name) is not None:
                continue
            why = _entry_skipped(entry)
            if why is not None:
                skipped.append((entry.name, why))
                continue
            check_name(entry.name, folder)
            names.append(entry.name)
    if not names:
        nested = folder / COMPETITION_IMAGES
        if nested.is_dir():  # the competition's folder: its images are in images/
            log.info("no images in %s itself; using its %s/ folder", folder, COMPETITION_IMAGES)
            return scan_folder(nested)
        raise ConfigError(f"config key 'data_path': no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    names.sort(key=stem)
    ids = Strings.of(stem(n) for n in names)
    files = FileListing(folder, ids, Strings.of(names))
    del names
    twice = first_duplicate(ids)
    if twice is not None:
        one, other = sorted(files.paths[i] for i in twice)
        raise ConfigError(f"config key 'data_path': two images share the id '{ids[twice[0]]}': {one} and {other}")
    skipped.sort()
    scan = FolderScan(files, skipped)
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
        below = Path(root).relative_to(folder).as_posix()
        for name in sorted(names):
            if unlisted(name) is not None:
                continue
            relative = name if below == "." else f"{below}/{name}"
            why = _not_an_image_file(Path(root) / name)
            if why is not None:
                skipped.append((relative, why))
                continue
            check_name(relative, folder)
            found.append(relative)
    if not found:
        raise ConfigError(f"config key 'data_path': no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder} "
                          f"or its sub-folders")
    found.sort()
    ids = Strings.of(found)
    scan = FolderScan(FileListing(folder, ids, ids), skipped)
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
    return read_sample(path, None)


def decode_image(data: bytes, name: str = "image", max_side: int = MAX_SIDE) -> Image.Image:
    """Decode image bytes to an RGB image no larger than ``max_side`` (MAX_SIDE; the workspace's thumbnails ask
    for less); raises ValueError with the reason."""
    buffer = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(buffer) as img:
                img.draft("RGB", (max_side, max_side))  # JPEG: decode at reduced size
                rgb = to_rgb(img)
                rgb.load()
    except Image.DecompressionBombError as exc:
        raise ValueError(f"refused by the decompression-bomb limit ({exc})") from exc
    except Exception as exc:  # PIL raises many types for bad files
        message = str(exc).replace(repr(buffer), repr(name))  # the same words for the same bytes, in any run
        raise ValueError(f"cannot decode: {type(exc).__name__}: {message}") from exc
    if max(rgb.size) > max_side:
        if max_side == MAX_SIDE:
            log.info("%s is %dx%d; downscaled to fit %d px", name, *rgb.size, MAX_SIDE)
        rgb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return rgb


def load_image(path: Path) -> Image.Image:
    """Decode one file to an RGB image no larger than MAX_SIDE; raises ValueError with the reason."""
    return decode_image(read_image(path)[0], path.name)
