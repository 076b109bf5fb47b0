"""Atomic file writing: write to a temporary name in the same folder, then rename.

A killed process therefore never leaves a half-written output under its final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success rename it to ``final``, else delete it.

    The temporary name keeps the final suffixes (``.nii.gz``) so writers that choose a format by
    extension still do the right thing.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".partial{suffix}", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
    os.chmod(tmp_path, 0o666 & ~current_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def current_umask() -> int:
    """The process umask (read without changing it for longer than the call)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def apply_default_permissions(path: str | os.PathLike) -> None:
    """Give a folder made by ``tempfile.mkdtemp`` (0700) and the files in it the permissions a
    plain ``mkdir`` / ``open`` would have had under the current umask."""
    umask = current_umask()
    path = Path(path)
    os.chmod(path, 0o777 & ~umask)
    for child in path.iterdir():
        if child.is_file():
            os.chmod(child, 0o666 & ~umask)


def write_text_atomic(final: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``final`` atomically; returns the final path."""
    with atomic_path(final) as tmp:
        tmp.write_text(text)
    return Path(final)
