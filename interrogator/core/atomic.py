"""All-or-nothing file writes: the one way this project puts a file in place.

``atomic_write(path, write)`` writes to a temp file in the target's folder, flushes and fsyncs it,
gives it the mode a plain ``open`` would (0666 less the umask), renames it over the target and
fsyncs the folder, so after a crash or a power loss the target is either the old file or the whole
new one. Temp files are named ``.<name>.<pid>.<random>.interrogator-tmp``; ``sweep_temps(folder)`` removes
those whose writing process is gone (writes killed midway), and each write sweeps its folder first. The sweep
touches nothing else: only a name ending in this tool's own suffix, with a dead pid in its place, is removed, so
an editor's or another tool's ``.<name>.<pid>.<x>.tmp`` in an output folder is left alone.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, List, Optional, Union

TEMP_SUFFIX = ".interrogator-tmp"
TEMP_EXTRA = len(".2147483647.abcdefgh") + len(TEMP_SUFFIX) + 1  # bytes a temp name adds to the target's name


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_prefix(name: str) -> str:
    return f".{name}."


def _writer_pid(temp_name: str) -> int:
    """The writer's pid in a temp name ``.<name>.<pid>.<random>.interrogator-tmp``, or -1 if it is not one."""
    if not (temp_name.startswith(".") and temp_name.endswith(TEMP_SUFFIX)):
        return -1
    parts = temp_name[:-len(TEMP_SUFFIX)].rsplit(".", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() and parts[0] != "" else -1


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_swept = set()  # folders this process has swept


def sweep_temps(folder: Union[str, Path], again: bool = False) -> List[Path]:
    """Remove the temp files that writes killed midway left in ``folder`` (their process is gone).

    Each folder is swept once per process unless ``again``.
    """
    removed = []
    key = os.path.abspath(folder)
    if key in _swept and not again:
        return removed
    _swept.add(key)
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        pid = _writer_pid(entry.name)
        if pid > 0 and not _alive(pid):
            try:
                entry.unlink()
                removed.append(entry)
            except OSError:
                pass
    return removed


def fsync_folder(folder: Union[str, Path]) -> None:
    """Make a rename or a new entry in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Union[str, Path], write: Callable[[BinaryIO], object],
                 verify: Optional[Callable[[Path], object]] = None) -> Path:
    """Call ``write(f)`` on a binary temp file beside ``path``, then put it at ``path`` durably.

    ``verify(temp_path)``, when given, reads the written file back before it is renamed into place.
    On any exception (a full disk, KeyboardInterrupt, a failed ``verify``) the temp file is removed,
    ``path`` is left as it was, and the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_temps(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{_temp_prefix(path.name)}{os.getpid()}.",
                               suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~_umask())
        if verify is not None:
            verify(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    return path


def write_bytes(path: Union[str, Path], data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def name_max(folder: Union[str, Path]) -> int:
    """The longest file name the folder's file system allows, in bytes (255 where it cannot be asked)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255
