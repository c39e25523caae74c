"""The sandbox: what the operating system puts around every process that runs candidate code.

Levels (`--ar-sandbox`):
- off:    a scrubbed environment (runner.child_env), an own process group killed when the run ends,
          resource limits and a process-count watch. Nothing else: for debugging only.
- auto:   the same, plus Linux namespaces where the kernel allows them, recorded as the level got:
          `unprivileged` when the harness runs as root (CI, docker, GPU clouds): `unshare` makes new
          mount, PID, network, IPC and UTS namespaces as root, the mounts below are made, then
          `setpriv` drops to a uid/gid of the run's own (drawn from RUN_UIDS for each plan: what the
          kernel keeps per uid, the key rings above all, is no channel between runs, concurrent or
          later ones) with no capabilities, no supplementary groups and
          no_new_privs before the worker starts; that uid cannot undo any mount ("must be superuser
          to unmount"), and CUDA keeps working (a user namespace breaks CUDA on NVIDIA's driver);
          `userns` when the harness is an ordinary user: a user namespace maps the user to root
          inside, the mounts are made, then `setpriv` clears every capability and the bounding set,
          so the process cannot remount either. Falls back to `off` where neither works.
- strict: as auto, but a run fails with a clear message when the namespaces are unavailable.

Inside the namespaces the process sees a new root (a tmpfs) holding only, read-only: the system
directories (/usr, /etc, /bin, /lib*, /sbin, /opt, /sys), the Python installation, the harness's
package and whatever the runner lists; read-write: its own scratch folder (/scratch, also HOME).
/tmp and /dev/shm are fresh tmpfs mounts of this run alone, /proc shows only the run's processes,
/dev holds only null, zero, full, random, urandom, tty and the GPU's nodes. So the repository, the
user's home, the data cache, the results files and every other run's files are not there at all;
the harness's embedded corpus (and whatever `wrap` is told to hide) is covered by /dev/null. A corpus
made of files the sandbox must show (the system's own /usr and /opt) cannot be hidden: see
data.validation_copies.
Network: none (loopback down). The PID namespace ends every process of the run with its first one.

This is not a VM: a kernel or GPU driver exploit crosses it. For untrusted code at scale, run the
whole harness in a container too: `docker run --rm --gpus all --network none -v $PWD:/work -w /work
IMAGE pytest --autoresearch tasks/`.

The agent's command (agent.CommandProposer) runs in the same sandbox with three differences: it keeps
the machine's network unless told otherwise (it calls its model's API), a copy of its task folder is
bound read-write where the folder is, and it starts there (`wrap(writable=, network=, cwd=)`).

`python -I sandbox.py --root DIR --scratch DIR --hide-list FILE --cwd DIR [--ro PATH]... [--rw DIR
--at PATH]... [--uid N] -- CMD...` is the entry that runs inside the new namespaces (as root there):
it builds the new root under DIR, chroots into it and execs `setpriv ... CMD`.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import os
import resource
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

LEVELS = ("off", "auto", "strict")
MAX_OPEN_FILES = 4096
MAX_FILE_BYTES = 32 << 30  # no single file over 32 GiB (checkpoints of the largest profile fit)
MAX_PROCESSES = 256  # torch.compile's worker pool stays far below this
UNPRIVILEGED_UID = 65534  # nobody: the uid of the probes
RUN_UIDS = range(1 << 20, 1 << 30)  # a run's uid: in no passwd file, and one of 2^30 - 2^20
TMPFS_SIZE = "8g"  # /tmp and /dev/shm of one run (torch.compile's files fit)
SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt", "/sys")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
GPU_DEVICES = ("/dev/nvidia*", "/dev/nvidia-caps/*", "/dev/dri/*")
SCRATCH = "/scratch"  # the run's own folder inside the sandbox: cwd and HOME
PACKAGE = Path(__file__).resolve().parent  # the harness's package: shown read-only, its corpus covered
UNSHARE = ("unshare", "--mount", "--pid", "--fork", "--kill-child", "--net", "--ipc", "--uts")


class SandboxError(Exception):
    """The requested isolation is not available here; the message says what to do."""


@dataclass(frozen=True)
class Plan:
    level: str  # what actually runs: off | unprivileged | userns
    prefix: tuple[str, ...]  # command prefix that enters the namespaces
    uid: int | None = None  # the uid candidate code runs as: None = the harness's own (off and userns)

    @property
    def isolated(self) -> bool:
        return self.level != "off"


def readonly_paths() -> list[str]:
    """What every sandboxed Python needs to read: its installation and the harness's package."""
    paths = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable)), str(PACKAGE)}
    paths.update(p for p in sys.path if p and os.path.isdir(p) and "-packages" in p)
    paths.update(p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p and os.path.isdir(p))
    return sorted(p for p in paths if not any(p == s or p.startswith(s + "/") for s in SYSTEM_DIRS))


@functools.cache
def namespaces_available() -> Plan | None:
    """The namespace plan that works on this machine (tried once), or None."""
    candidates = [Plan("unprivileged", UNSHARE, UNPRIVILEGED_UID)] if os.geteuid() == 0 else []
    candidates.append(Plan("userns", (UNSHARE[0], "--user", "--map-root-user", *UNSHARE[1:])))
    for candidate in candidates:
        if _probe(candidate, [sys.executable, "-c", "import os; os.mkdir('/scratch/ok')"]):
            return candidate
    return None


@functools.cache
def cuda_works_inside(plan_: Plan, memo_dir: Path | None = None) -> bool:
    """Whether a process in the sandbox still sees the GPU (a user namespace, or gVisor, hide it).
    A yes is remembered in memo_dir until the machine reboots or its driver or Python changes: the
    probe (a sandboxed `import torch` and CUDA start) costs seconds that every pytest process paid."""
    key = hashlib.sha256(
        "\0".join(
            [
                plan_.level,
                sys.executable,
                _read("/proc/sys/kernel/random/boot_id"),
                _read("/proc/driver/nvidia/version"),
            ]
        ).encode()
    ).hexdigest()[:16]
    memo = memo_dir / f"cuda-inside-{key}" if memo_dir else None
    if memo and memo.is_file():
        return True
    works = _probe(
        plan_, [sys.executable, "-c", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"], timeout=180
    )
    if works and memo:
        with contextlib.suppress(OSError):
            memo.parent.mkdir(parents=True, exist_ok=True)
            memo.touch()
    return works


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _probe(plan_: Plan, command: list[str], timeout: float = 30) -> bool:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ar-probe-") as tmp:
        scratch = prepare_scratch(Path(tmp), plan_)
        try:
            done = subprocess.run(
                wrap(command, plan_, Path(tmp), scratch),
                capture_output=True,
                timeout=timeout,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0 and (command[-1].startswith("import torch") or (scratch / "ok").is_dir())


def plan(level: str, device: str = "cpu", memo_dir: Path | None = None) -> Plan:
    """The isolation to run with; on CUDA, namespaces count only if the GPU still works inside
    (a yes remembered in memo_dir, see cuda_works_inside)."""
    if level not in LEVELS:
        raise SandboxError(f"--ar-sandbox must be one of {', '.join(LEVELS)}, not {level!r}")
    found = namespaces_available() if level != "off" else None
    if found is not None and device == "cuda" and not cuda_works_inside(found, memo_dir):
        found = None
    if found is None:
        if level == "strict":
            raise SandboxError(
                "--ar-sandbox strict: Linux namespaces (unshare --mount --pid --net, as root or "
                "in a user namespace) are not available here, or hide the GPU; run as root or "
                "enable unprivileged user namespaces, or use --ar-sandbox auto"
            )
        return Plan("off", ())
    if found.uid is not None:  # a uid of this plan's own (one plan per run)
        return replace(found, uid=RUN_UIDS[secrets.randbelow(len(RUN_UIDS))])
    return found


def prepare_scratch(tmp: Path, plan_: Plan) -> Path:
    """tmp/work: the run's writable folder, owned by the uid that candidate code runs as."""
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    if plan_.uid is not None:
        os.chown(work, plan_.uid, plan_.uid)
    (tmp / "root").mkdir(exist_ok=True)
    return work


def visible_roots() -> list[str]:
    """The folders under which the sandbox shows files: what must hold no validation document."""
    return [p for p in SYSTEM_DIRS if os.path.isdir(p) and not os.path.islink(p) and p != "/sys"] + readonly_paths()


def place(source: str | Path, scratch: Path, name: str, plan_: Plan) -> str:
    """Copy a file into a child's scratch folder, owned by the uid the child runs as; its path as the
    child sees it."""
    shutil.copyfile(source, scratch / name)
    if plan_.uid is not None:
        os.chown(scratch / name, plan_.uid, plan_.uid)
    return f"{SCRATCH}/{name}" if plan_.isolated else str(scratch / name)


def wrap(
    command: list[str],
    plan_: Plan,
    tmp: Path,
    scratch: Path,
    readonly: list[str] = (),
    hidden: list[str] = (),
    writable: list[tuple[str, str]] = (),
    network: bool = False,
    cwd: str = SCRATCH,
) -> list[str]:
    """The command, entered into the sandbox with tmp/root as its new root and scratch as /scratch;
    the files in `hidden` (and the harness's own corpus and data cache) are covered there. `writable`:
    (folder here, where it appears inside) pairs bound read-write; `network`: keep the machine's
    network (no network namespace; the agent's API calls); `cwd`: where the command starts."""
    if not plan_.isolated:
        return command
    from .data import cache_root  # not shown anyway; covered in case it lies under a shown folder

    hide_list = tmp / "hidden.txt"
    hide_list.write_text("\n".join([str(PACKAGE / "corpus"), str(cache_root()), *hidden]))
    prefix = [a for a in plan_.prefix if not (network and a == "--net")]
    args = [
        *prefix,
        sys.executable,
        "-I",
        os.path.realpath(__file__),
        "--root",
        str(tmp / "root"),
        "--scratch",
        str(scratch),
        "--hide-list",
        str(hide_list),
        "--cwd",
        cwd,
    ]
    for path in sorted({*readonly_paths(), *readonly}):
        args += ["--ro", path]
    for source, inside in writable:
        args += ["--rw", str(source), "--at", str(inside)]
    if plan_.uid is not None:
        args += ["--uid", str(plan_.uid)]
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


# ---------------------------------------------------------------------------------------------
# inside the namespaces (this file run as a script, as root of the new namespaces)
# ---------------------------------------------------------------------------------------------


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"autoresearch-bench sandbox: mount {' '.join(args)} failed: {done.stderr.strip()}")


def _locked_flags(path: str) -> list[str]:
    """Flags a bind's read-only remount must keep: in a user namespace they are locked."""
    flags = os.statvfs(path).f_flag
    return [
        name
        for bit, name in ((os.ST_NOSUID, "nosuid"), (os.ST_NODEV, "nodev"), (os.ST_NOEXEC, "noexec"))
        if flags & bit
    ]


def _bind(source: str, target: str, writable: bool = False) -> None:
    """Bind source at target (with the mounts below it); read-only all the way down unless writable."""
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    _mount("--rbind", source, target)
    if writable:
        return
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in points:  # the submounts too: a bind's read-only flag does not reach them
        if point == target or point.startswith(target.rstrip("/") + "/"):
            _mount("-o", ",".join(["remount", "bind", "ro", *_locked_flags(point)]), point)


def _hide(root: str, paths: list[str]) -> None:
    """Cover each path under the new root: a folder by an empty read-only tmpfs, a file by /dev/null.
    Through mount(2) directly: a hidden corpus can be a thousand files."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    ms_bind, ms_rdonly = 4096, 1
    for path in paths:
        target = root + path
        if os.path.isdir(target):
            _mount("-t", "tmpfs", "-o", "ro,size=4k,mode=555", "ar-hidden", target)
        elif os.path.exists(target) and libc.mount(b"/dev/null", target.encode(), None, ms_bind | ms_rdonly, None):
            raise SystemExit(f"autoresearch-bench sandbox: cannot hide {path}: {os.strerror(ctypes.get_errno())}")


def _build_root(
    root: str, scratch: str, readonly: list[str], hidden: list[str], writable: list[tuple[str, str]] = ()
) -> None:
    _mount("--make-rprivate", "/")
    _mount("-t", "tmpfs", "-o", "mode=755,size=64m", "ar-root", root)
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            os.symlink(os.readlink(path), root + path)
        elif os.path.isdir(path):
            _bind(path, root + path)
    # the run's own /tmp and /dev first: what is bound below may live under them (a checkout in /tmp)
    for path, size in (("/tmp", TMPFS_SIZE), ("/dev", "1m"), ("/dev/shm", TMPFS_SIZE)):
        os.makedirs(root + path, exist_ok=True)
        _mount(
            "-t",
            "tmpfs",
            "-o",
            f"mode={'1777' if 'tmp' in path or 'shm' in path else '755'},size={size},nosuid",
            "ar-" + path.strip("/").replace("/", "-"),
            root + path,
        )
    for path in readonly:
        if os.path.exists(path) and not os.path.exists(root + path):
            _bind(path, root + path)
    for source, inside in writable:
        _bind(source, root + inside, writable=True)
    _bind(scratch, root + SCRATCH, writable=True)
    for node in [f"/dev/{name}" for name in DEVICES] + [p for pattern in GPU_DEVICES for p in glob.glob(pattern)]:
        if os.path.exists(node) and not os.path.isdir(node):
            _bind(node, root + node, writable=True)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, f"{root}/dev/{name}")
    os.makedirs(root + "/proc", exist_ok=True)
    _mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", root + "/proc")
    _hide(root, hidden)
    # the new root itself read-only: in a user namespace its owner is the process's own uid
    _mount("-o", "remount,ro,nosuid", "ar-root", root)


def _enter(argv: list[str]) -> None:
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1 :]
    pairs = list(zip(options[::2], options[1::2]))
    single = dict(pairs)
    readonly = [value for flag, value in pairs if flag == "--ro"]
    writable = list(zip([v for flag, v in pairs if flag == "--rw"], [v for flag, v in pairs if flag == "--at"]))
    with open(single["--hide-list"]) as f:
        hidden = [line for line in f.read().splitlines() if line]
    _build_root(single["--root"], single["--scratch"], readonly, hidden, writable)
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    os.chroot(single["--root"])
    os.chdir(single.get("--cwd", SCRATCH))
    drop = [setpriv, "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    if "--uid" in single:
        uid = single["--uid"]
        drop[1:1] = [f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    os.environ.update(HOME=SCRATCH, TMPDIR="/tmp")
    # This process stays, as pid 1 of the namespace, and the worker is its child: setpriv's change of
    # uid clears the worker's parent-death signal, but this one keeps unshare's (--kill-child), and when
    # pid 1 of a PID namespace ends, the kernel ends every process in it. So a harness that dies,
    # even by SIGKILL, takes the whole run along.
    worker = os.fork()
    if worker == 0:
        os.execv(setpriv, [*drop, "--", *command])
    while True:
        pid, status = os.wait()
        if pid == worker:
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)  # killed by signal N: 128 + N, as a shell says


if __name__ == "__main__":
    _enter(sys.argv[1:])
