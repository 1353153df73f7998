"""The one rule for every write: the tool writes only files it owns.

Before any model loads, every path a command or a run will write is checked against what the user gave it:

- an input (an image of the run, the config file, a label list, a file of a model folder or a checkpoint, a
  file named by an input option such as ``--prompts``) is never written: one line names both;
- a path with an image extension is never written, except by a command that makes images (``draw``);
- the caption files' extension (``txt_extension``) is no image extension (checked with the config);
- an existing file is replaced only if this tool wrote it and it is unchanged since, or the user chose to
  replace it (``replace_outputs`` / ``--replace-outputs``; caption files follow ``existing_txt`` instead).

What the tool wrote is kept in a ledger per output folder, ``.interrogator-outputs.json``: each output file's
name with its size and modification time as written (``record_written``). A file that is not in it, or that was
changed since (another size or time), is the user's. The ledger is rewritten atomically; it is the one file the
tool adds to an output folder besides its outputs.

``Inputs`` holds the real paths (``os.path.realpath``: a link or ``..`` names the file it reaches) of what a
use reads, each with what it is. The planner checks a run's outputs with it (so does the app's Folder tab,
which runs the planner), and the command line checks every output option of every subcommand.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Optional

from .atomic import write_bytes
from .config import IMAGE_EXTENSIONS, Config
from .errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no flock (one process at a time writes a folder's outputs there)
    fcntl = None

MODEL_KEYS = ("blip_path", "clip_path", "embedding_path", "tagger_path", "head_path", "bank_path", "vqgan_path")
LEDGER = ".interrogator-outputs.json"
MODEL_FILES = 10_000  # files listed in one model folder at most (a model folder holds a few dozen)


@dataclass
class Inputs:
    """What a use of the tool reads: real path -> what it is, for the messages."""

    files: Dict[str, str] = field(default_factory=dict)
    folders: Dict[Path, str] = field(default_factory=dict, repr=False)  # folder -> its real path (of's memo)

    def add(self, path, what: str) -> "Inputs":
        """A file read, or every file of a folder read (a model folder, the label lists)."""
        path = Path(path)
        if path.is_dir():
            for n, child in enumerate(p for p in path.rglob("*") if p.is_file()):
                if n >= MODEL_FILES:
                    break
                self.files.setdefault(os.path.realpath(child), f"{what} ({child.name})")
        elif path.exists():
            self.files.setdefault(os.path.realpath(path), what)
        return self

    def of(self, path) -> Optional[str]:
        """What ``path`` is among the inputs, or None. Each folder is resolved once (a run checks one caption
        file per image, mostly in a few folders), and the file itself only where it is a link."""
        path = Path(path)
        folder = self.folders.get(path.parent)
        if folder is None:
            folder = self.folders[path.parent] = os.path.realpath(path.parent)
        real = os.path.join(folder, path.name)
        return self.files.get(os.path.realpath(real) if os.path.islink(real) else real)


def config_inputs(config: Config, images: Iterable[Path] = ()) -> Inputs:
    """The config file, its model files and label lists, and the images of its run."""
    inputs = Inputs()
    if config.config_path:
        inputs.add(config.config_path, "the config")
    for key in MODEL_KEYS:
        if getattr(config, key) is not None:
            inputs.add(getattr(config, key), f"the model of config key '{key}'")
    if config.dicts and Path(config.dicts).is_dir():
        for path in Path(config.dicts).glob("*.txt"):
            inputs.add(path, "a label list")
    for path in images:
        inputs.add(path, "an input image")
    return inputs


def check_write(path, what: str, inputs: Inputs, images: bool = False, replace: Optional[bool] = False) -> None:
    """``path`` may be written: not an input, no image extension unless ``images`` (draw's pictures), and, if
    it exists, written by this tool and unchanged since, unless ``replace`` (None: a policy of the caller's
    own, such as ``existing_txt``, decides)."""
    found = inputs.of(path)
    if found is not None:
        raise ConfigError(f"{what} {path} is {found}: this tool never writes over what it reads; "
                          f"choose another path")
    if not images and Path(path).suffix.lower() in IMAGE_EXTENSIONS:
        raise ConfigError(f"{what} {path} has an image extension ({Path(path).suffix}): this tool writes no "
                          f"images there; choose another name")
    if replace is False and os.path.lexists(path) and not wrote(path):
        why = "was changed since this tool wrote it" if _recorded(path) else "was not written by this tool"
        raise ConfigError(f"{what} {path} exists and {why}: choose another path, or pass --replace-outputs "
                          f"(config key 'replace_outputs') to replace it")


# ---- the ledger of what the tool wrote -----------------------------------------------------------------
def stamp_of(path) -> Optional[list]:
    """A file's size and modification time as the ledger records them; None where it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def ledger_of(folder: str) -> Dict[str, list]:
    """The ledger of a folder: {name: [size, mtime_ns]}; empty where there is none or it cannot be read."""
    try:
        entries = json.loads(Path(folder, LEDGER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _recorded(path) -> Optional[list]:
    real = os.path.realpath(path)
    return ledger_of(os.path.dirname(real)).get(os.path.basename(real))


def wrote(path) -> bool:
    """This tool wrote the file at ``path`` (a link: the file it reaches), and it is unchanged since."""
    recorded = _recorded(path)
    return recorded is not None and recorded == stamp_of(os.path.realpath(path))


def record_written(paths: Iterable) -> None:
    """Add the files at ``paths``, as they are now, to their folders' ledgers (entries of files that are gone
    are dropped). Each ledger is read and written again under a lock on its folder, so processes writing into one
    folder at once (Ray's actors, each writing its input shards' outputs) keep every entry."""
    by_folder: Dict[str, list] = {}
    for path in paths:
        real = os.path.realpath(path)
        if os.path.isfile(real):
            by_folder.setdefault(os.path.dirname(real), []).append(os.path.basename(real))
    for folder, names in by_folder.items():
        with folder_lock(folder):
            entries = {n: s for n, s in ledger_of(folder).items() if os.path.lexists(os.path.join(folder, n))}
            entries.update({n: stamp_of(os.path.join(folder, n)) for n in names})
            write_bytes(Path(folder, LEDGER), json.dumps(entries, indent=0, sort_keys=True).encode("utf-8"))


@contextmanager
def folder_lock(folder: str):
    """An exclusive lock on a folder (flock on its descriptor: no file added), where the system has one."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
