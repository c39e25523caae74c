"""The parent side of the checks: a sandboxed child process that imports one candidate once and answers
check requests (worker.py `checks`), so that no check runs candidate code in the pytest process."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from . import process
from . import sandbox as sandboxing
from .candidate import Candidate
from .protocol import CheckSpec
from .task import Profile, Task


class CheckServer:
    """A sandboxed child that imports one candidate once and answers check requests.

    Checks run candidate code, so they never run in the pytest process: a candidate that patched
    the harness there could forge every later result.
    """

    def __init__(
        self,
        task: Task,
        profile: Profile,
        candidate: Candidate,
        seed: int = 0,
        results_paths: tuple[Path, ...] = (),
        sandbox: str = "auto",
        start_timeout_s: float = 120,
    ):
        self._tmp = tempfile.TemporaryDirectory(prefix=f"ar-checks-{candidate.name}-")
        tmp = Path(self._tmp.name)
        os.chmod(tmp, 0o755)
        plan = sandboxing.plan(sandbox)
        inner = sandboxing.place(candidate.path, sandboxing.prepare_scratch(tmp, plan), "candidate.py", plan)
        spec = CheckSpec(
            candidate=inner,
            cfg=profile.model_config(),
            seed=seed,
            allowed_imports=tuple(task.imports),
            max_params=task.max_params,
            max_literal_bytes=task.max_literal_bytes,
        )
        self.child = process.start(
            ("worker", "checks"), spec, tmp, plan, threads=process.usable_cores(), stdin=subprocess.PIPE
        )
        ready = next(self.child.reports(time.perf_counter() + start_timeout_s), None)
        self.start_error = None if ready and ready.get("kind") == "ready" else self._crash("starting")

    def _crash(self, what: str) -> str:
        last = next((l for l in reversed(self.child.tail().splitlines()) if l.strip()), "no output")
        return f"the check process died while {what}: {last.strip()}"

    def run(self, name: str, timeout_s: float = 300, **params) -> dict:
        """Run one named check; returns {"ok": bool, "detail" or "error": str, "seconds": float}."""

        if self.start_error:
            return {"ok": False, "error": self.start_error, "seconds": 0.0}
        try:
            self.child.proc.stdin.write((json.dumps({"check": name, **params}) + "\n").encode())
            self.child.proc.stdin.flush()
        except BrokenPipeError:
            return {"ok": False, "error": self._crash(f"running {name}"), "seconds": 0.0}
        for record in self.child.reports(time.perf_counter() + timeout_s):
            if record.get("kind") == "violation":
                return {"ok": False, "error": record["error"], "seconds": 0.0}
            if record.get("kind") == "check" and record.get("name") == name:
                return record
        alive = self.child.proc.poll() is None
        return {
            "ok": False,
            "seconds": timeout_s if alive else 0.0,
            "error": f"check {name} did not finish within {timeout_s:.0f} s"
            if alive
            else self._crash(f"running {name}"),
        }

    def close(self) -> None:
        self.child.kill()
        self._tmp.cleanup()
