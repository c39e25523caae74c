"""`autoresearch-bench run`: pytest --autoresearch, with every pytest option passed through."""

import pytest

from autoresearch_bench import cli


@pytest.fixture
def pytest_main(monkeypatch):
    """The arguments each pytest.main call got (none runs)."""
    calls = []
    monkeypatch.setattr(pytest, "main", lambda args: calls.append(args) or 0)
    return calls


@pytest.mark.parametrize(
    "argv",
    [
        ["--ar-tokens", "1000"],
        ["tasks/char_lm", "--ar-tokens", "1000", "-k", "train", "--ar-seeds", "3"],
        ["-h"],  # pytest's help, which lists the --ar- options
    ],
)
def test_run_passes_every_argument_to_pytest(pytest_main, argv):
    assert cli.main(["run", *argv]) == 0
    assert pytest_main == [["--autoresearch", "-o", "testpaths=tasks", *argv]]  # no path given: tasks/


def test_run_is_listed_with_its_pytest_arguments(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "autoresearch-bench run [PYTEST ARGS]" in capsys.readouterr().out
