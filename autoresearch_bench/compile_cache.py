"""torch.compile's cache, kept across runs without becoming a channel between them.

A cold `torch.compile` of the h100-scale GPT takes about a minute; with inductor's cache warm, a few
seconds. But the cache (TORCHINDUCTOR_CACHE_DIR: FX graphs, AOT-autograd graphs, Triton kernels and
their launchers) is code that the next process loads and runs, and a folder that whoever writes it
can fill with anything. Shared and writable, it would let one candidate's trainer plant code in the
run it is compared against (the base, or the agent's best), or hand its trained weights to its own
next seed. So:

- There is one *trusted* cache per task, profile and machine (torch version and GPU included). Only a
  run of a trusted source writes it: a file whose sha256 is that of the task's file at the trusted git
  ref (`--ar-trusted-ref`: the base ref of a gate, the agent loop's starting commit, else HEAD). Its
  run's cache is published there when the run ends `ok`.
- Every run, trusted or not, trains on a private copy of the trusted cache inside its own scratch
  folder (writable, as inductor needs); whatever a run writes there is deleted with the run.

A candidate whose graphs equal the trusted file's (a change of constants: most agent edits) finds every
kernel warm; a changed graph compiles anew in each of its runs. Nothing a candidate writes reaches
another run. Copies and the publication hold a lock, so a run never copies a half-published cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from .storage import fingerprints

ENV_DIRS = {"TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton"}


def trusted_dir(task: str, fingerprint: dict) -> Path:
    """The trusted cache of one task on this machine and profile (storage.fingerprints.machine_fingerprint)."""
    from . import data  # numpy and the tokenizers, for a run only

    return data.cache_root() / "compile" / f"{task}__{fingerprints.fingerprint_id(fingerprint)}"


@contextlib.contextmanager
def _locked(folder: Path):
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def private_copy(trusted: Path, private: Path, inner: str, uid: int | None) -> dict[str, str]:
    """Copy the trusted cache (if any) to `private`, owned by the uid the trainer runs as; the
    environment that points torch and Triton at it, where the trainer sees it (`inner`)."""
    with _locked(trusted):
        if trusted.is_dir():
            shutil.copytree(trusted, private, symlinks=True)
    for sub in ENV_DIRS.values():
        (private / sub).mkdir(parents=True, exist_ok=True)
    if uid is not None:
        for root, dirs, files in os.walk(private):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.lchown(name, uid, uid)
    return {var: f"{inner}/{sub}" for var, sub in ENV_DIRS.items()}


def publish(private: Path, trusted: Path) -> None:
    """Make a trusted run's cache the trusted cache (replacing the one before). Runs that end at once
    (several slots of one session: one process) each stage their copy in a folder of their own; the
    last to publish wins, and every published cache is a whole one."""
    trusted.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{trusted.name}.new-", dir=trusted.parent))
    old = staging.with_name(staging.name.replace(".new-", ".old-"))
    try:
        shutil.copytree(
            private, staging, symlinks=False, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.lock", "*.tmp*")
        )
        with _locked(trusted):
            if trusted.is_dir():
                os.rename(trusted, old)
            os.rename(staging, trusted)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
