"""`autoresearch-bench`: the command line beside the pytest plugin.

    autoresearch-bench run [PYTEST ARGS]       pytest --autoresearch (default: the tasks/ folder)
    autoresearch-bench tasks [DIR]             list tasks, their profiles and budgets
    autoresearch-bench prepare TASK [-p NAME]  build a task's data and tokenizer into the cache
"""
from __future__ import annotations

import argparse
import sys

from tabulate import tabulate

from . import data
from .task import TaskError, find_tasks, load_task


def _run(args: argparse.Namespace) -> int:
    import pytest
    return int(pytest.main(["--autoresearch", *(args.pytest_args or ["tasks"])]))


def _tasks(args: argparse.Namespace) -> int:
    rows = [{"task": t.name, "metric": f"{t.metric} ({t.direction} is better)", "profile": p.name,
             "device": p.device, "budget s": p.budget_s, "data": p.data["source"], "vocab": p.vocab_size}
            for t in find_tasks(args.dir) for p in t.profiles.values()]
    print(tabulate(rows, headers="keys"))
    return 0


def _prepare(args: argparse.Namespace) -> int:
    task = load_task(args.task)
    profile = task.profile(args.profile)
    prepared = data.prepare(profile.data, task.name)
    print(f"{task.name}/{profile.name}: {prepared.n_train_tokens:,} train tokens, "
          f"{prepared.n_val_tokens:,} validation tokens in {prepared.root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="autoresearch-bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="pytest --autoresearch")
    run.add_argument("pytest_args", nargs=argparse.REMAINDER)
    run.set_defaults(func=_run)
    tasks = sub.add_parser("tasks", help="list tasks and profiles")
    tasks.add_argument("dir", nargs="?", default="tasks")
    tasks.set_defaults(func=_tasks)
    prep = sub.add_parser("prepare", help="build a task's data and tokenizer")
    prep.add_argument("task", help="task folder, e.g. tasks/gpt_pretrain")
    prep.add_argument("-p", "--profile", default="cpu")
    prep.set_defaults(func=_prepare)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (TaskError, data.DataError) as e:
        print(f"autoresearch-bench: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
