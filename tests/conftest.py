"""Shared set-up of the project's tests: one data cache for the session, fixture folders not collected."""

import os
import shutil
from pathlib import Path

import pytest
import torch  # noqa: F401  pytester's in-process sessions import torch, and it drops the modules a session

# imported when the session ends; torch's C extension cannot load twice in one process: load it once here
from autoresearch_bench.task import load_task

HERE = Path(__file__).parent
collect_ignore = ["tiny_task"]

# Tokenizers and token files are built once and reused by every test (and by pytester children).
os.environ.setdefault("AR_CACHE_DIR", str(HERE.parent / ".ar" / "test-cache"))
# The training, evaluation and check processes of the tests run tiny models: one thread each is
# fastest, and two busy-waiting threads per process on a small, shared machine make a run several
# times slower. The harness passes this variable on to its children.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Under GitHub Actions the plugin appends each session's table to the job summary: the tests' own
# sessions are not the job's (the test of that behaviour sets the variable itself).
os.environ.pop("GITHUB_STEP_SUMMARY", None)


def copy_tiny_task(folder: Path) -> Path:
    """A fresh copy of the tiny task at folder/tasks/tiny, with an empty candidates folder."""
    task_dir = Path(shutil.copytree(HERE / "tiny_task", folder / "tasks" / "tiny"))
    (task_dir / "candidates").mkdir(exist_ok=True)  # git does not keep empty folders
    return task_dir


@pytest.fixture
def tiny_task_dir(tmp_path: Path) -> Path:
    """A fresh copy of the tiny task, so tests may add candidates or edit files."""
    return copy_tiny_task(tmp_path)


@pytest.fixture(scope="module")
def shared_tiny_task_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny task for one module's shared runs: tests add candidates, never edit its files."""
    return copy_tiny_task(tmp_path_factory.mktemp("shared"))


@pytest.fixture
def tiny_task(tiny_task_dir: Path):
    return load_task(tiny_task_dir)
