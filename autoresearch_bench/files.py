"""Files written whole or not at all, and names safe in a path.

`replacing` and `write` write a temporary file beside the target, flush it to disk and rename it into
place, so a reader (or a machine that lost power) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
