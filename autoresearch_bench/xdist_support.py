"""The plugin's pytest-xdist glue: which role this process has, the controller's hooks (each worker gets
the GPU list; the results that workers attach to their benchmark reports join the controller's session)
and the worker's half (its results attached to the benchmark item's report as a user property).

Under `pytest -n N --ar-executor xdist` each worker is a benchmark session of its own that pins one
GPU and runs its items' seeds only; --dist loadgroup keeps a candidate's checks and benchmark in one
worker (an xdist_group per candidate); the controller draws the table and writes the reports.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from .executor import visible_gpus

REPORT_KEY = "autoresearch"  # user_properties entry of an xdist worker's benchmark report


def role(config: pytest.Config) -> str:
    """'worker' in a pytest-xdist worker, 'controller' in the process that distributes, else ''."""
    if hasattr(config, "workerinput"):
        return "worker"
    return "controller" if config.getoption("dist", "no") != "no" else ""


def executor_options(config: pytest.Config) -> dict:
    """The xdist executor's options (this worker's GPU list), after checking that pytest runs as it
    needs (-n N, --dist loadgroup, which it sets); pytest.UsageError with what to change."""
    if not config.pluginmanager.hasplugin("xdist"):
        raise pytest.UsageError("--ar-executor xdist needs pytest-xdist: pip install autoresearch-bench[xdist]")
    if not role(config):
        raise pytest.UsageError(
            "--ar-executor xdist runs one pytest-xdist worker per GPU: add -n N (N = number of GPUs)"
        )
    if role(config) == "controller":
        if config.option.dist not in ("load", "loadgroup"):
            raise pytest.UsageError(
                f"--ar-executor xdist keeps a candidate's checks and benchmark in one "
                f"worker (--dist loadgroup): drop --dist {config.option.dist}"
            )
        config.option.dist = "loadgroup"
    return {"gpus": getattr(config, "workerinput", {}).get("ar_gpus", ())}


class Controller:
    """The controller's hooks. merge(path, result) takes one result a worker sent for the task of the
    test file at path."""

    def __init__(self, config: pytest.Config, merge: Callable[[Path, dict], None]):
        self.config, self.merge = config, merge

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:
        """Tell each worker which GPUs there are, so that it pins one (executor.pin_gpu)."""
        if self.config.getoption("ar_executor") == "xdist":
            node.workerinput["ar_gpus"] = visible_gpus()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for key, value in report.user_properties if report.when == "call" else ():
            if key == REPORT_KEY:
                sent = json.loads(value)
                for result in sent["results"]:
                    self.merge(Path(sent["path"]), result)


def attach(item: pytest.Item, results: list[dict]) -> None:
    """A worker's half: its results (BenchmarkSession.to_report) on the benchmark item's report."""
    item.user_properties.append((REPORT_KEY, json.dumps({"path": str(item.path), "results": results})))
