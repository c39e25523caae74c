"""Rows appended to the results files: all or none, atomic against concurrent writers and crashes, each
listed in a ledger so that a run's tamper check accepts what concurrent runs appended and nothing else.

- An exclusive flock on one lock file beside the first file covers every file of an append; each line
  goes out in one os.write on an O_APPEND descriptor, then fsync. Existing rows are never rewritten; a
  failed append (full disk) removes only its own partial bytes, so the files stay in step and the next
  row starts on a fresh line.
- Each appended row's sha256 goes first to a ledger beside its file (.results.tsv.appends), so that a
  run's tamper check (results_mark / appended_only) accepts rows that concurrent runs (xdist workers,
  Ray tasks, local slots) appended meanwhile and nothing else.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from pathlib import Path


def ledger_path(path: Path) -> Path:
    """The ledger of appended-row hashes beside a results file; runs may not open it (runner)."""
    return Path(path).with_name(f".{Path(path).name}.appends")


def _line_hash(row: bytes) -> str:
    return hashlib.sha256(row).hexdigest()


def results_mark(path: str | Path) -> tuple[int, str | None]:
    """(size, sha256) of a results file now (0, None if it does not exist), for appended_only."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return 0, None
    return len(data), hashlib.sha256(data).hexdigest()


def appended_only(path: str | Path, mark: tuple[int, str | None]) -> bool:
    """Whether the file still holds what it held at mark, followed only by rows that append_lines
    wrote (each listed by hash in the .<name>.appends ledger beside it): runs that go on at the same
    time (xdist workers, Ray tasks, local slots) append their records meanwhile; anything else is a change."""
    size, digest = mark
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return digest is None
    if digest is not None and hashlib.sha256(data[:size]).hexdigest() != digest:
        return False
    added = data[size:]
    if not added:
        return True
    try:
        known = set(ledger_path(path).read_text().split())
    except FileNotFoundError:
        return False
    return added.endswith(b"\n") and all(
        _line_hash(row) in known for row in added.splitlines(keepends=True) if row.strip()
    )


class _Appender:
    """Appends to one file inside the caller's lock; rollback() removes what it wrote."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self.start = os.fstat(self.fd).st_size
        self.end = self.start

    def write(self, line: str, header: str = "") -> None:
        if self.start == 0:
            line = header + line
        elif os.pread(self.fd, 1, self.start - 1) != b"\n":  # an earlier torn line: start afresh
            line = "\n" + line
        data = line.encode()
        with open(ledger_path(self.path), "a") as ledger:  # first: whoever sees a row finds its hash (appended_only)
            ledger.writelines(_line_hash(row) + "\n" for row in data.splitlines(keepends=True) if row.strip())
        while data:  # one write unless the disk runs out mid-line
            written = os.write(self.fd, data)
            if not written:
                raise OSError(errno.EIO, "write made no progress")
            self.end += written
            data = data[written:]
        os.fsync(self.fd)

    def rollback(self) -> None:
        """Cut back to the starting size, only if nobody outside the lock appended meanwhile."""
        try:
            if os.fstat(self.fd).st_size == self.end and self.end > self.start:
                os.ftruncate(self.fd, self.start)
        except OSError:
            pass


def append_lines(entries: list[tuple[Path, str, str]]) -> None:
    """Append one line to each file of (path, line, header for a new file), all or none, under one
    flock beside the first file; raises a one-line OSError that says what to do when the disk is full."""
    first = entries[0][0]
    first.parent.mkdir(parents=True, exist_ok=True)
    with open(first.with_name(f".{first.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        appenders: list[_Appender] = []
        where = first
        try:
            for where, line, header in entries:
                appenders.append(_Appender(where))
                appenders[-1].write(line, header)
        except OSError as e:
            for a in appenders:
                a.rollback()
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OSError(
                    e.errno,
                    f"disk full while appending to {where}: this row was not recorded "
                    f"(earlier rows are intact); free space and rerun",
                ) from None
            raise
        finally:
            for a in appenders:
                os.close(a.fd)
