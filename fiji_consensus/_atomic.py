"""Atomic file writes: a temporary file in the target folder, then ``os.replace``.

A crash mid-write leaves either the old file or nothing, never a half-written result. Existing files are
only replaced when ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_path", "atomic_open", "check_writable"]

_UMASK = os.umask(0)  # read the process umask once (os.umask can only be read by setting it)
os.umask(_UMASK)


def _final_mode(target: Path) -> int:
    """Permissions of the result: those of the file it replaces, else what ``open()`` would give (0o666 - umask)."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_UMASK


def check_writable(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Return ``path`` as a Path; raise :class:`FileExistsError` if it exists and ``overwrite`` is false."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p} exists already; pass overwrite=True (CLI: --overwrite) to replace it")
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> (d / "a.txt").read_text()
    'hello'
    """
    target = check_writable(path, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not overwrite and target.exists():
            raise FileExistsError(f"{target} appeared while it was being written; not replacing it")
        if tmp.exists():  # mkstemp makes 0600 files; results must be readable like any other file
            os.chmod(tmp, _final_mode(target))
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "w", *, overwrite: bool = False, **kwargs
) -> Iterator[IO]:
    """Open a temporary file for writing and atomically move it onto ``path`` when closed without error."""
    if "w" not in mode:
        raise ValueError(f"atomic_open needs a write mode ('w' or 'wb'); got {mode!r}")
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
        kwargs.setdefault("newline", "")
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
