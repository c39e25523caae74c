"""The candidate sandbox: what the operating system adds around a training or evaluation process.

Levels (`--ar-sandbox`):
- off:    a scrubbed environment (no API keys, tokens or cloud credentials; runner.child_env), an
          own process group killed when the run ends, resource limits, a process-count watch, and
          the in-process path guard (worker.install_path_guard). Nothing else.
- auto:   the same, plus, where Linux allows it (root, or unprivileged user namespaces):
          a network namespace (no network at all, loopback down), a PID namespace (every process
          the candidate starts dies with the run, even one that called setsid), and a mount
          namespace where the repository, the harness, the Python installation, the data cache and
          the results files are bind-mounted read-only and the closed paths (validation data,
          tokenizer, raw shards) are hidden under an empty tmpfs. Falls back to `off` elsewhere.
- strict: as auto, but fails the run with a clear message when the namespaces are unavailable.

Records say which level ran (`extra["sandbox"]`). This is not a VM: a kernel exploit or a GPU
driver bug crosses it. For untrusted code at scale, run the whole harness inside a container, e.g.
`docker run --rm --gpus all --network none -v $PWD:/work -w /work IMAGE pytest --autoresearch tasks/`.
"""
from __future__ import annotations

import functools
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

LEVELS = ("off", "auto", "strict")
MAX_OPEN_FILES = 4096
MAX_FILE_BYTES = 32 << 30       # no single file over 32 GiB (checkpoints of the largest profile fit)
MAX_PROCESSES = 256             # torch.compile's worker pool stays far below this


class SandboxError(Exception):
    """The requested isolation is not available here; the message says what to do."""


@dataclass(frozen=True)
class Plan:
    level: str       # what actually runs: off | namespaces
    prefix: tuple[str, ...]  # command prefix that enters the namespaces


@functools.cache
def namespaces_available() -> tuple[str, ...] | None:
    """The unshare flags that work on this machine, or None."""
    base = ("unshare", "--net", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc")
    for flags in (base, base[:1] + ("--user", "--map-root-user") + base[1:]):
        try:
            done = subprocess.run([*flags, "sh", "-c", "mount --make-rprivate / && mount -t tmpfs none /mnt"],
                                  capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode == 0:
            return flags
    return None


@functools.cache
def cuda_works_inside(flags: tuple[str, ...], readonly: tuple[str, ...]) -> bool:
    """Whether a process in the namespaces still sees the GPU (some kernels, e.g. gVisor, refuse)."""
    probe = wrap([sys.executable, "-c", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"],
                 Plan("namespaces", flags), list(readonly), [])
    try:
        return subprocess.run(probe, capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def plan(level: str, device: str = "cpu", readonly: tuple[str, ...] = ()) -> Plan:
    """The isolation to run with; on CUDA, namespaces count only if the GPU still works inside."""
    if level not in LEVELS:
        raise SandboxError(f"--ar-sandbox must be one of {', '.join(LEVELS)}, not {level!r}")
    flags = namespaces_available() if level != "off" else None
    if flags is not None and device == "cuda" and not cuda_works_inside(flags, readonly):
        flags = None
    if flags is None:
        if level == "strict":
            raise SandboxError("--ar-sandbox strict: Linux namespaces (unshare --net --pid --mount) are not "
                               "available here (or hide the GPU); run as root or enable unprivileged user "
                               "namespaces, or use --ar-sandbox auto")
        return Plan("off", ())
    return Plan("namespaces", flags)


def wrap(command: list[str], plan_: Plan, readonly: list[str], hidden: list[str]) -> list[str]:
    """The command, entered into the namespaces with the given paths read-only or hidden."""
    if plan_.level == "off":
        return command
    args = [*plan_.prefix, sys.executable, "-m", "autoresearch_bench.sandbox"]
    for path in readonly:
        args += ["--ro", path]
    for path in hidden:
        args += ["--hide", path]
    return [*args, "--", *command]


def set_limits(device: str) -> None:
    """preexec_fn: resource limits inherited by everything the run starts."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if device == "cpu":  # CUDA reserves huge virtual ranges, so address space is capped on CPU only
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 3 // 4
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def processes_in_session(sid: int) -> int:
    """How many processes belong to session sid (the run's, since it started its own)."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[3]) == sid:  # fields after comm: state ppid pgrp session
                count += 1
    return count


def _enter(argv: list[str]) -> None:
    """Inside the namespaces (pid 1 of the new PID namespace): mount, then exec the worker."""
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    mount = functools.partial(subprocess.run, check=True, capture_output=True)
    mount(["mount", "--make-rprivate", "/"])
    for flag, path in zip(options[::2], options[1::2]):
        if not os.path.exists(path):
            continue
        if flag == "--hide":
            mount(["mount", "-t", "tmpfs", "-o", "size=1m,mode=000", "none", path] if os.path.isdir(path)
                  else ["mount", "--bind", "/dev/null", path])
        else:
            mount(["mount", "--rbind", path, path])  # recursive: keep submounts (e.g. the GPU driver's)
            mount(["mount", "-o", "remount,bind,ro", path])
    os.execv(command[0], command)


if __name__ == "__main__":
    _enter(sys.argv[1:])
