"""The run settings that every front end shares, each defined once: its key, its flag, its type and help.

The pytest plugin adds them as `--ar-<flag>` (and ini options), the `agent` and `league` commands as
`--<flag>`, agents.toml's [settings] table takes their keys, and the agent loop hands its settings to
the pytest runs it starts as `--ar-<flag>` again (`pytest_args`), so a setting has one name, one type
and one meaning wherever it is given (pytest-benchmark's `add_*_options(addoption, prefix)` pattern).

    key          Settings / agents.toml   plugin          agent, league
    profile      profile                  --ar-profile    --profile
    budget_s     budget_s                 --ar-budget     --budget
    max_tokens   max_tokens               --ar-tokens     --tokens
    sandbox      sandbox                  --ar-sandbox    --sandbox
    min_effect   min_effect               --ar-min-effect --min-effect
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

SANDBOX_LEVELS = ("off", "auto", "strict")


@dataclass(frozen=True)
class RunOption:
    key: str  # the field of Settings and of the session's Options
    flag: str  # after the prefix: --ar-<flag>, --<flag>
    help: str
    default: Any = None
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.replace("-", "_")


RUN_OPTIONS = (
    RunOption(
        "profile",
        "profile",
        "task profile: auto (the first cuda profile whose `match` names this GPU, else "
        "a generic cuda profile, else cpu; see task.py) or a name",
        default="auto",
        metavar="NAME",
    ),
    RunOption("budget_s", "budget", "override the profile's training time budget", type=float, metavar="SECONDS"),
    RunOption(
        "max_tokens", "tokens", "fixed-token mode: train for N tokens instead of a time budget", type=int, metavar="N"
    ),
    RunOption(
        "sandbox",
        "sandbox",
        "candidate isolation: auto (namespaces where Linux allows, default), strict "
        "(fail without them) or off; see autoresearch_bench/sandbox.py",
        default="auto",
        choices=SANDBOX_LEVELS,
    ),
    RunOption(
        "min_effect",
        "min-effect",
        "smallest metric change that counts (default: from the profile's measured noise; never below the task's floor)",
        type=float,
        metavar="X",
    ),
)
KEYS = frozenset(o.key for o in RUN_OPTIONS)


def add_run_options(addoption: Callable[..., Any], prefix: str, with_defaults: bool = True) -> None:
    """Add every run option as --<prefix><flag> through addoption (argparse's add_argument, or the
    plugin's own); with_defaults=False leaves each default None, so that a value left out can be told
    from one given (a league's [settings] table fills it)."""
    for o in RUN_OPTIONS:
        kwargs = {k: v for k, v in (("type", o.type), ("choices", o.choices), ("metavar", o.metavar)) if v}
        addoption(f"--{prefix}{o.flag}", default=o.default if with_defaults else None, help=o.help, **kwargs)


def given(values: object) -> dict[str, Any]:
    """{key: value} of the run options that a parsed namespace (argparse's, with dests as add_run_options
    made them without a prefix) sets."""
    found = {o.key: getattr(values, o.dest, None) for o in RUN_OPTIONS}
    return {k: v for k, v in found.items() if v is not None}


def pytest_args(values: Mapping[str, Any]) -> list[str]:
    """The --ar- flags that give a pytest session these run settings ({key: value}; None: left out)."""
    args: list[str] = []
    for o in RUN_OPTIONS:
        if values.get(o.key) is not None:
            args += [f"--ar-{o.flag}", str(values[o.key])]
    return args
