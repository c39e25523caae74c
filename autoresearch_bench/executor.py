"""Executors: where experiments run, and how many at once.

An experiment is one `Run`: a `runner.run_candidate(task, profile, candidate, seed, **options)` call,
which returns a RunRecord and never raises for a bad candidate. An executor runs a list of them and
hands back the records in the order given, whatever order they finish in:

    executor = make_executor("local" | "xdist" | "ray", slots=N)
    records = executor.map(runs, on_record=..., on_progress=..., log=...)

`on_record(run, record)` is called in the caller's thread, in the order of `runs`, as soon as each
record and all the ones before it are in (the session appends them to the results files there: only
the parent process writes them). Each record's `extra["executor"]` says where it ran.

- `local` (default): child processes on this machine, `slots` at a time (default 1: one after the
  other). With several slots on a machine with several GPUs, each GPU run takes a free GPU for its
  children (CUDA_VISIBLE_DEVICES) and gives it back when done: N slots on N GPUs run one experiment per
  GPU. With more slots than GPUs, or one GPU, or on CPU, the runs share the devices.
- `xdist`: this process is a pytest-xdist worker (`pytest -n N --ar-executor xdist`), pinned to one GPU:
  CUDA_VISIBLE_DEVICES = gpus[N % len(gpus)] for worker gwN (`pin_gpu`; no GPU: no pin). It runs its
  experiments one at a time; the parallelism comes from the workers. Each worker is a pytest session of
  its own, so `per_item` tells the session to run only the seeds of the benchmark item at hand.
- `ray`: one Ray task per experiment, `num_gpus=1` on GPU profiles and 0 on CPU ones, scheduled by Ray
  on the cluster that `ray.init()` finds (RAY_ADDRESS, or a local one started on first use; call
  `ray.init(...)` yourself first to choose). `slots` caps the experiments in flight (default: as many as
  the cluster's resources allow). Every node needs the same paths (task folder, candidates, Python
  environment): a shared filesystem. Progress lines are not forwarded; a run's log lines appear in
  Ray's worker output.
"""

from __future__ import annotations

import os
import queue
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from . import process
from .candidate import Candidate
from .runner import run_candidate
from .storage.schema import RunRecord
from .task import Profile, Task

NAMES = ("local", "xdist", "ray")


class ExecutorError(Exception):
    """An executor that cannot be used as asked; the message says what to do."""


@dataclass(frozen=True)
class Run:
    """One experiment: run_candidate(task, profile, candidate, seed, **options)."""

    task: Task
    profile: Profile
    candidate: Candidate
    seed: int
    options: dict[str, Any] = field(default_factory=dict)  # other keyword arguments of run_candidate

    def __call__(
        self, on_progress: Callable[[dict], None] | None = None, log: Callable[[str], None] = print
    ) -> RunRecord:
        return run_candidate(
            self.task, self.profile, self.candidate, self.seed, on_progress=on_progress, log=log, **self.options
        )


OnRecord = Callable[[Run, RunRecord], None]
OnProgress = Callable[[Run, dict], None]


class LocalExecutor:
    """Runs experiments in child processes of this machine, `slots` at a time (threads wait on them)."""

    name = "local"
    per_item = False  # True: each pytest worker is its own session and runs only its items' seeds

    def __init__(self, slots: int = 1):
        if slots < 1:
            raise ExecutorError(f"executor slots must be at least 1, got {slots}")
        self.slots = slots
        self.gpu_sharing = 1  # other processes' runs on this one's GPU, plus its own (xdist workers)

    @property
    def label(self) -> str:
        """Where this executor's runs happen, as recorded in RunRecord.extra["executor"]."""
        return self.name

    def map(
        self,
        runs: Sequence[Run],
        on_record: OnRecord | None = None,
        on_progress: OnProgress | None = None,
        log: Callable[[str], None] = print,
    ) -> list[RunRecord]:
        """Run every experiment; the records, in the order of `runs`."""
        out = []
        for run, record in zip(runs, self._records(list(runs), on_progress, log)):
            record.extra["executor"] = self.label
            if on_record:
                on_record(run, record)
            out.append(record)
        return out

    def _records(self, runs: list[Run], on_progress: OnProgress | None, log) -> Iterator[RunRecord]:
        if self.slots == 1 or len(runs) < 2:
            for run in runs:
                run = _sharing_its_gpu(run, self.gpu_sharing)
                yield run(_bind(on_progress, run), log)
            return
        lock = threading.Lock()  # callbacks from several threads: one at a time

        def locked(fn):
            def call(*args):
                with lock:
                    return fn(*args)

            return call

        gpus = visible_gpus() if any(r.profile.device == "cuda" for r in runs) else []
        free: queue.SimpleQueue[str] = queue.SimpleQueue()
        for gpu in gpus:
            free.put(gpu)

        # runs that share the CPU share its cores: torch threads per child, so that N runs do not
        # start N × cores threads (oversubscribed, a run on a shared machine went 40 times slower)
        threads = max(1, process.usable_cores() // min(self.slots, len(runs)))

        def run_on_a_free_gpu(run: Run) -> RunRecord:
            callbacks = _bind(on_progress and locked(on_progress), run), locked(log)
            if run.profile.device != "cuda":
                return replace(run, options={"threads": threads, **run.options})(*callbacks)
            if len(gpus) < 2:  # one GPU: nothing to choose, and the runs in flight share its memory
                return _sharing_its_gpu(run, self.gpu_sharing * min(self.slots, len(runs)))(*callbacks)
            gpu = free.get()  # blocks while every GPU is busy (more slots than GPUs)
            try:
                record = replace(run, options={**run.options, "gpu": gpu})(*callbacks)
                record.extra["gpu"] = gpu
                return record
            finally:
                free.put(gpu)

        with ThreadPoolExecutor(self.slots, thread_name_prefix="ar-run") as pool:
            futures = [pool.submit(run_on_a_free_gpu, run) for run in runs]
            try:
                for future in futures:
                    yield future.result()
            except BaseException:  # Ctrl-C: end the runs of the other threads too, record none of them
                for future in futures:
                    future.cancel()
                process.kill_all()
                raise


def _sharing_its_gpu(run: Run, sharing: int) -> Run:
    """The run, told how many runs train on its GPU at once (its device batch fits its share)."""
    if run.profile.device != "cuda" or sharing < 2:
        return run
    return replace(run, options={"gpu_sharing": sharing, **run.options})


def _bind(on_progress: OnProgress | None, run: Run) -> Callable[[dict], None] | None:
    return (lambda progress: on_progress(run, progress)) if on_progress else None


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries: that variable's list when it is
    set, else 0 … device_count - 1 ([] without CUDA)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_for(slot: int, gpus: Sequence[str]) -> str | None:
    """The GPU of slot (or xdist worker) number `slot`: gpus[slot % len(gpus)]; None without GPUs."""
    return gpus[slot % len(gpus)] if gpus else None


def pin_gpu(worker: str | None, gpus: Sequence[str]) -> str | None:
    """Pin this process and its children to one GPU: worker gwN gets gpu_for(N, gpus), set as
    CUDA_VISIBLE_DEVICES (call it before CUDA is initialised). No worker or no GPU: no pin, None."""
    if not worker or not gpus:
        return None
    number = re.fullmatch(r"gw(\d+)", worker)
    if not number:
        raise ExecutorError(f"pytest-xdist worker id {worker!r} is not gw<N>; run the workers with pytest -n N")
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu = gpu_for(int(number.group(1)), gpus)
    return gpu


class XdistExecutor(LocalExecutor):
    """The pytest-xdist worker this process is, pinned to one GPU; one experiment at a time."""

    name = "xdist"
    per_item = True

    def __init__(self, slots: int = 1, worker: str | None = None, gpus: Sequence[str] = ()):
        super().__init__(slots)
        self.worker = worker if worker is not None else os.environ.get("PYTEST_XDIST_WORKER")
        self.gpu = pin_gpu(self.worker, gpus)
        if self.gpu is not None:  # more workers than GPUs: the workers of one GPU share its memory
            workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
            index = int(self.worker[2:]) % len(gpus)
            self.gpu_sharing = len(range(index, workers, len(gpus)))

    @property
    def label(self) -> str:
        return ":".join(filter(None, [self.name, self.worker, self.gpu and f"gpu{self.gpu}"]))


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ExecutorError(
            "the ray executor needs Ray, which is not installed: pip install autoresearch-bench[ray]"
        ) from None
    return ray


def _run_remote(run: Run) -> RunRecord:
    """Body of a Ray task: one experiment on the node Ray picked."""
    return run()


class RayExecutor(LocalExecutor):
    """One Ray task per experiment (num_gpus=1 on GPU profiles, 0 on CPU ones)."""

    name = "ray"

    def __init__(self, slots: int | None = None):
        super().__init__(1 if slots is None else slots)
        self.cap = slots  # None: Ray's resources alone bound what runs at once
        self.ray = _import_ray()

    def _records(self, runs: list[Run], on_progress: OnProgress | None, log) -> Iterator[RunRecord]:
        ray = self.ray
        if not ray.is_initialized():
            log("ray: no cluster connected; ray.init() (RAY_ADDRESS, or a local cluster)")
            ray.init()
        remote = ray.remote(_run_remote)
        refs: list = []
        ready: set = set()
        for i in range(len(runs)):
            while True:  # keep up to `cap` in flight (Ray's own pattern: submit, ray.wait, submit more)
                while len(refs) < len(runs) and (self.cap is None or len(refs) - len(ready) < self.cap):
                    run = runs[len(refs)]  # absolute paths: a Ray worker's folder may differ from ours
                    run = replace(run, candidate=replace(run.candidate, path=run.candidate.path.resolve()))
                    refs.append(
                        remote.options(
                            num_gpus=1 if run.profile.device == "cuda" else 0,
                            name=f"{run.task.name}/{run.candidate.name}/seed{run.seed}",
                        ).remote(run)
                    )
                if refs[i] in ready:
                    break
                done, _ = ray.wait([r for r in refs if r not in ready], num_returns=1)
                ready.update(done)
            yield ray.get(refs[i])


def make_executor(name: str = "local", slots: int | None = None, **kwargs) -> LocalExecutor:
    """An executor by name (local | xdist | ray). slots: local, how many runs at once (default 1);
    xdist, 1; ray, the most in flight (default: Ray's resources decide)."""
    if name == "local":
        return LocalExecutor(1 if slots is None else slots)
    if name == "xdist":
        if slots not in (None, 1):
            raise ExecutorError(
                "the xdist executor runs one experiment per worker; start more workers "
                "with pytest -n N instead of slots"
            )
        return XdistExecutor(**kwargs)
    if name == "ray":
        return RayExecutor(slots)
    raise ExecutorError(f"unknown executor {name!r}; choose one of {', '.join(NAMES)}")
