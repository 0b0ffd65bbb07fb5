"""Atomic file writes: a temporary file in the target folder, then ``os.replace``.

A crash mid-write leaves either the old file or nothing, never a half-written result. Existing files are
only replaced when ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

__all__ = [
    "atomic_path", "atomic_open", "check_writable", "claim_folder", "folder_is_ours", "remove_temporary",
    "staging_path", "commit_staged", "OWNER_FILE",
]

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


# --------------------------------------------------------------------------------------------- output folders

#: Written first into every output folder a command creates: the folder is that command's to write into.
OWNER_FILE = ".fiji-consensus.json"

_PART_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.part$")  # atomic_path's temporary files (mkstemp)


def _owner(out: Path) -> str | None:
    try:
        return str(json.loads((out / OWNER_FILE).read_text(encoding="utf-8")).get("command"))
    except (OSError, ValueError, AttributeError):
        return None


def folder_is_ours(out: str | os.PathLike, command: str, *, legacy: Callable[[Path], bool] | None = None) -> bool:
    """Whether ``out`` may be written by ``command``: missing, empty, or made by ``command`` (its
    :data:`OWNER_FILE`, or ``legacy(out)`` for folders made before that file existed)."""
    out = Path(out)
    if not out.exists():
        return True
    if not out.is_dir():
        return False
    if not any(out.iterdir()):
        return True
    owner = _owner(out)
    if owner is not None:
        return owner == command
    return bool(legacy is not None and legacy(out))


def claim_folder(
    out: str | os.PathLike, command: str, *, legacy: Callable[[Path], bool] | None = None, create: bool = True
) -> Path:
    """Create the output folder of ``command`` or check that ``command`` made it; refuse any other folder.

    A folder that holds files ``command`` did not write (a user's files, another command's outputs) is
    refused whatever they are, also with ``overwrite``: the commands replace only their own outputs. A new or
    empty folder gets :data:`OWNER_FILE` (``{"tool": "fiji-consensus", "command": ...}``) before anything
    else. With ``create=False`` only the check is made (to fail before any work).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "member_0.pt").write_bytes(b"mine")
    >>> try:
    ...     claim_folder(d, "train")
    ... except FileExistsError as exc:
    ...     print(str(exc).split(";")[0].endswith("did not write (member_0.pt)"))
    True
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path {out} exists and is not a folder")
    if not folder_is_ours(out, command, legacy=legacy):
        owner = _owner(out)
        names = sorted(p.name for p in out.iterdir())
        shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
        what = f"outputs of `{owner}`" if owner else f"files that `{command}` did not write ({shown})"
        raise FileExistsError(
            f"output folder {out} holds {what}; `{command}` only writes into a new or empty folder or one it "
            "made (--overwrite does not change this): choose another folder"
        )
    if create:
        out.mkdir(parents=True, exist_ok=True)
        if _owner(out) is None:
            with atomic_open(out / OWNER_FILE, "w", overwrite=True) as fh:
                fh.write(json.dumps({"tool": "fiji-consensus", "command": command}) + "\n")
    return out


def remove_temporary(folder: str | os.PathLike, *, recursive: bool = True, dirs_prefix: str | None = None) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder``: ``.<name>.XXXXXXXX.part`` files of
    :func:`atomic_path` (in subfolders too when ``recursive``) and, with ``dirs_prefix``, hidden work folders
    ``.<dirs_prefix>.XXXXXXXX`` (``tempfile.mkdtemp``). Call it only while no other process writes there
    (before a run starts or after it finished). Returns what was removed."""
    import shutil

    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    files = folder.rglob(".*.part") if recursive else folder.glob(".*.part")
    for f in list(files):
        if f.is_file() and _PART_RE.match(f.name):
            f.unlink(missing_ok=True)
            removed.append(f)
    if dirs_prefix is not None:
        pat = re.compile(rf"^\.{re.escape(dirs_prefix)}\.[A-Za-z0-9_]{{8}}$")
        for d in folder.iterdir():
            if d.is_dir() and not d.is_symlink() and pat.match(d.name):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
    return removed


def staging_path(target: str | os.PathLike) -> Path:
    """A hidden temporary name beside ``target`` (``.<name>.XXXXXXXX.part``) for a file that is written now
    and moved onto ``target`` later, together with other files (:func:`commit_staged`); such names are what
    :func:`remove_temporary` removes after a kill."""
    import secrets

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.parent / f".{target.name}.{secrets.token_hex(4)}.part"


def commit_staged(pairs: Sequence[tuple[Path, Path]]) -> None:
    """Move every staged file onto its target, in order (put the file that marks completion last)."""
    for staged, target in pairs:
        os.replace(staged, target)
