"""Files as the harness handles them: written whole or not at all, named safely, known by their content,
and checked writable before a session relies on them.

`replacing` and `write` write a temporary file beside the target, flush it to disk and rename it into
place, so a reader (or a machine that lost power) sees the old file or the new one, never half of one.
`file_digest` is the sha256 a stored baseline and the trusted sources name a file by; `check_writable`
tells before a session starts whether its results files and baselines can be written.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MIN_FREE_BYTES = 64 << 20  # free space a session needs beside its results files (check_writable)


def safe_name(text: object) -> str:
    """text as one path component: each run of characters other than letters, digits, "_", "." and "-"
    becomes one "_"."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)) or "_"


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside path to write; on success it is synced and renamed onto path,
    otherwise removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write(path: str | Path, content: str | bytes) -> Path:
    """Write text or bytes to path atomically; returns path."""
    with replacing(path) as tmp:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content)
    return Path(path)


def file_digest(path: str | Path) -> str | None:
    """sha256 of the file's contents, None if it does not exist."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:
        return None
    return h.hexdigest()


def check_writable(path: str | Path, min_free: int = MIN_FREE_BYTES) -> str:
    """Why files cannot be written at path (a file to append to, or a folder to write files in),
    or "": the file, or else the folder (or its nearest existing ancestor, for one that does not
    exist yet), must open for writing, and its file system must have min_free bytes free. Leaves
    nothing behind."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if path.is_file():
            open(path, "a").close()
        else:
            tempfile.TemporaryFile(dir=folder).close()
        disk = os.statvfs(folder)
    except OSError as e:
        return f"cannot write {path} ({e.strerror or e})"
    if disk.f_bavail * disk.f_frsize < min_free:
        return f"only {disk.f_bavail * disk.f_frsize >> 20} MB free for {path}, at least {min_free >> 20} MB needed"
    return ""
