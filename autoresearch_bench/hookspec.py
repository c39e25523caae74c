"""Hooks for extensions of the pytest plugin, as pytest-benchmark offers: implement them in a
conftest.py or a plugin of your own (the plugin registers this module in `pytest_addhooks`).

    def pytest_autoresearch_update_machine_info(config, machine_info):
        machine_info["rack"] = os.environ.get("RACK", "unknown")

    def pytest_autoresearch_update_record(config, record):
        record.extra["ci_run"] = os.environ.get("GITHUB_RUN_ID")

    def pytest_autoresearch_update_json(config, report):
        report["pull_request"] = os.environ.get("PR_NUMBER")

Informational only: what these hooks add is reported, never matched on. Baselines match on the
machine fingerprint (storage.fingerprints.machine_fingerprint), which no hook changes; a hook that edits a
record's value edits what is recorded and decided, as any conftest.py can: hooks are the project's
own code, not a candidate's (candidate code runs only in the sandboxed children).
"""

import pytest


@pytest.hookspec
def pytest_autoresearch_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Add to (or edit) the `machine` section of the session's report (--ar-json, --ar-html) in place:
    the fingerprint's fields, the host name and the CPU count are there already."""


@pytest.hookspec
def pytest_autoresearch_update_record(config: pytest.Config, record) -> None:
    """See each run's storage.schema.RunRecord before it is appended to the results files (and kept for the
    table and the reports); edit it in place, e.g. add keys to record.extra. Called in the process
    that appends it (an xdist worker under --ar-executor xdist)."""


@pytest.hookspec
def pytest_autoresearch_update_json(config: pytest.Config, report: dict) -> None:
    """Edit the session's report document (report.py's format) in place before --ar-json, --ar-html
    and --ar-tensorboard write it."""
