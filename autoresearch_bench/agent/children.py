"""The registry of the loop's child processes (the agent command, the pytest runs): each in a process
group of its own, all killed together on Ctrl-C or AgentLoop.interrupt().
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator

from .. import process
from ..process import kill_group

# ---------------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------------


class Children:
    """The child processes of one loop (the agent command, the task's pytest run): each gets the loop's
    environment `env` (a league pins a loop to its GPU with CUDA_VISIBLE_DEVICES) and its own process
    group, which is killed when it is done, on an error or Ctrl-C, or by stop() from another thread; and
    it dies with the thread that started it (the loop killed by a signal Python cannot catch)."""

    def __init__(self, env: dict[str, str] | None = None):
        self.env = env or {}
        self.lock = threading.Lock()
        self.running: set[subprocess.Popen] = set()
        self.stopped = False

    def check(self) -> None:
        """KeyboardInterrupt once stop() was called, as if Ctrl-C had reached this loop."""
        if self.stopped:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def start(
        self, cmd: str | list[str], env: dict[str, str] | None = None, base: dict[str, str] | None = None, **popen
    ) -> Iterator[subprocess.Popen]:
        """subprocess.Popen(cmd, **popen) with `base` (default os.environ), the loop's env and `env`; its
        group is killed when the block ends; KeyboardInterrupt after the block when stop() was called meanwhile."""
        with self.lock:
            self.check()
            proc = subprocess.Popen(
                cmd,
                env={**(os.environ if base is None else base), **self.env, **(env or {})},
                start_new_session=True,
                **{"preexec_fn": process.die_with_parent, **popen},
            )
            self.running.add(proc)
        try:
            yield proc
        finally:
            with self.lock:
                self.running.discard(proc)
            kill_group(proc)
        self.check()

    def stop(self) -> None:
        """Kill every running child (from any thread); the loop's next step raises KeyboardInterrupt."""
        with self.lock:
            self.stopped = True
            for proc in self.running:
                kill_group(proc, reap=False)  # the thread that started it waits on it
