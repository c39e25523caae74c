"""`autoresearch-bench`: the command line beside the pytest plugin.

autoresearch-bench run [PYTEST ARGS]       pytest --autoresearch PYTEST ARGS, every option passed through
                                           (run -h: pytest's help); the tasks/ folder when no
                                           argument is a path
autoresearch-bench tasks [DIR]             list tasks, their profiles and budgets
autoresearch-bench prepare TASK [-p NAME]  build a task's data and tokenizer into the cache
autoresearch-bench agent --task T --tag TAG (--model M | --agent-cmd CMD | --agent null|random-search
                                           | --agent replay --changes DIR)
                                           the autoresearch loop on branch autoresearch/TAG
autoresearch-bench league --agents agents.toml --tasks all --experiments K [--slots N]
                                           agents × tasks, ranked on held-out data; N loops at once
autoresearch-bench compare A.jsonl B.jsonl  the same runs from two results files (two GPUs, two
                                           days), group by group, paired by seed; see compare.py
autoresearch-bench simulate --task T [--profile P] [--tokens N] [--seed-std X --pair-std Y]
                                           the gate, keep and league rules at a given or stored
                                           noise: no-op verdicts, power, runs; see simulate.py
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading

from tabulate import tabulate

from . import data, options
from .agent import AgentError, AgentLoop, Settings, command_spec, replay_changes
from .compare import CompareError, compare
from .executor import ExecutorError
from .stats import NotFinite
from .task import TaskError, find_tasks, load_task


def _run(pytest_args: list[str]) -> int:
    """pytest --autoresearch with these arguments; without a path, the tasks/ folder (as testpaths)."""
    import pytest

    return int(pytest.main(["--autoresearch", "-o", "testpaths=tasks", *pytest_args]))


def _tasks(args: argparse.Namespace) -> int:
    rows = [
        {
            "task": t.name,
            "metric": f"{t.metric} ({t.direction} is better)",
            "profile": p.name,
            "device": p.device,
            "budget s": p.budget_s,
            "data": p.data["source"],
            "vocab": p.vocab_size,
        }
        for t in find_tasks(args.dir)
        for p in t.profiles.values()
    ]
    print(tabulate(rows, headers="keys"))
    return 0


def _prepare(args: argparse.Namespace) -> int:
    task = load_task(args.task)
    profile = task.profile(args.profile)
    prepared = data.prepare(profile.data, task.name)
    print(
        f"{task.name}/{profile.name}: {prepared.n_train_tokens:,} train tokens, "
        f"{prepared.n_val_tokens:,} validation tokens in {prepared.root}"
    )
    return 0


def _settings(args: argparse.Namespace, defaults: dict | None = None) -> Settings:
    """Run settings from the flags; a flag left out takes the default (a league's [settings] table)."""
    given = {**options.given(args), "seeds": args.seeds, "confirm_seeds": args.confirm_seeds}
    merged = {**(defaults or {}), **{k: v for k, v in given.items() if v is not None}}
    return Settings(
        **merged, max_hours=getattr(args, "max_hours", None), max_api_tokens=getattr(args, "max_api_tokens", None)
    )


def _command_options(args: argparse.Namespace) -> dict:
    """The agent command's sandbox flags (--agent-env, --agent-ro, --agent-offline) as AgentSpec keys."""
    return {"env": args.agent_env or [], "ro": args.agent_ro or [], "offline": args.agent_offline}


def _agent(args: argparse.Namespace) -> int:
    spec = command_spec(
        args.name or args.tag,
        args.model,
        args.agent_cmd,
        args.agent,
        args.changes,
        seed=args.seed,
        **({"base_url": args.base_url} if args.base_url else {}),
        **({"price_in": args.price_in, "price_out": args.price_out} if args.model else {}),
        **(_command_options(args) if args.agent_cmd else {}),
    )
    settings = _settings(args)
    settings.max_experiments = args.max_experiments
    if spec.kind == "replay" and args.max_experiments is None:
        settings.max_experiments = len(replay_changes(spec.changes))
    history = AgentLoop(args.task, spec, args.tag, settings, out_dir=args.out).run()
    kept = [e for e in history if e.status == "keep"]
    print(
        f"{len(history)} experiments, {len(kept)} kept; best {kept[-1].value if kept else '-'} at "
        f"{kept[-1].commit if kept else '-'}"
    )
    return 0


def _league(args: argparse.Namespace) -> int:
    from .league import League, format_leaderboard, load_agents, resolve_tasks, reward_hacking

    agents, defaults = load_agents(args.agents, _command_options(args))
    tasks = resolve_tasks(args.tasks_dir, args.tasks)
    league = League(
        agents,
        tasks,
        args.experiments,
        _settings(args, defaults),
        name=args.name,
        heldout_seeds=args.heldout_seeds,
        out_dir=args.out,
        executor=args.executor,
        slots=args.slots,
    )
    print(format_leaderboard(league.run()))
    print("\nValidation gains against held-out gains (reward hacking shows as the first two far above the third):")
    print(format_leaderboard(reward_hacking(league.entries)))
    for reason in dict.fromkeys(f"{e.task}: {e.not_comparable}" for e in league.entries if e.not_comparable):
        print(f"not comparable: {reason}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    comparison = compare(
        args.a,
        args.b,
        min_effect=args.min_effect,
        tasks_dir=args.tasks_dir,
        candidates=tuple(args.candidates) if args.candidates else None,
    )
    print(comparison.format(args.a, args.b, tablefmt=args.format))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from . import simulate, stats
    from .storage import baselines
    from .task import default_profile

    task = load_task(args.task)
    if args.profile == "auto":
        import torch

        profile = default_profile(task, torch.cuda.is_available())
    else:
        profile = task.profile(args.profile)
    mode, budget = ("tokens", args.tokens) if args.tokens else ("time", args.budget or profile.budget_s)
    stored = baselines.Baseline.from_file(args.baseline).noise if args.baseline else stats.Noise()
    given = stats.Noise(args.seed_std, args.pair_std, "given") if args.seed_std or args.pair_std else stats.Noise()
    rule = task.rule(profile, mode, budget, given.or_else(stored), args.min_effect)
    if args.floor is not None:
        rule = dataclasses.replace(rule, floor=args.floor)
    if rule.noise.std(paired=True) is None:
        raise TaskError(
            f"{task.name}/{profile.name}: no noise measured for {mode} {budget:g}; give --seed-std and "
            f"--pair-std, a --baseline with noise, or a [profiles.{profile.name}.noise] table"
        )
    effects = (
        [float(e) for e in args.effects.split(",")]
        if args.effects
        else [rule.threshold(True), 2 * rule.threshold(True)]
    )
    figures = simulate.simulate(
        rule,
        effects,
        args.gate_seeds,
        args.seeds,
        args.confirm_seeds,
        args.heldout_seeds,
        args.trials,
        args.experiments,
        args.seed,
    )
    print(f"{task.name}, profile {profile.name}, " + (f"{budget:,.0f} tokens" if args.tokens else f"{budget:g} s"))
    print(simulate.format_figures(rule, figures, args.format))
    return 0


def _add_command_options(p: argparse.ArgumentParser, whose: str) -> None:
    p.add_argument(
        "--agent-env",
        action="append",
        metavar="NAME",
        help=f"pass this environment variable on to {whose} (e.g. OPENAI_API_KEY); repeatable. "
        f"Nothing else of the environment reaches it but PATH, locale and thread settings",
    )
    p.add_argument(
        "--agent-ro",
        action="append",
        metavar="PATH",
        help=f"show this file or folder to {whose}, read-only (its program, its config); repeatable",
    )
    p.add_argument("--agent-offline", action="store_true", help=f"cut {whose} off the network")


def _add_run_settings(p: argparse.ArgumentParser) -> None:
    options.add_run_options(p.add_argument, "", with_defaults=False)
    p.add_argument("--seeds", type=int, default=None, help="screening seeds per experiment (default 1)")
    p.add_argument(
        "--confirm-seeds",
        type=int,
        default=None,
        help="fresh seeds that confirm a change that passed the screen (default 3)",
    )
    p.add_argument("--out", default=None, help="folder for the records")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="autoresearch-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "run",
        help="pytest --autoresearch [PYTEST ARGS] (every pytest and --ar- option passes through)",
        usage="autoresearch-bench run [PYTEST ARGS]",
        add_help=False,
    )
    tasks = sub.add_parser("tasks", help="list tasks and profiles")
    tasks.add_argument("dir", nargs="?", default="tasks")
    tasks.set_defaults(func=_tasks)
    prep = sub.add_parser("prepare", help="build a task's data and tokenizer")
    prep.add_argument("task", help="task folder, e.g. tasks/gpt_pretrain")
    prep.add_argument("-p", "--profile", default="cpu")
    prep.set_defaults(func=_prepare)
    agent = sub.add_parser("agent", help="run the autoresearch loop with one agent")
    agent.add_argument("--task", required=True, help="task folder, e.g. tasks/gpt_pretrain")
    agent.add_argument("--tag", required=True, help="run name: branch autoresearch/TAG; rerun to resume")
    agent.add_argument("--model", help="model name at the OpenAI-compatible endpoint (OPENAI_BASE_URL)")
    agent.add_argument("--agent-cmd", help="an external coding-agent command that edits the worktree")
    agent.add_argument("--agent", choices=("null", "random-search", "replay"), help="a built-in reference agent")
    _add_command_options(agent, "the agent command")
    agent.add_argument(
        "--changes",
        help="replay: a folder of *.diff / *.patch / *.py changes, one per experiment "
        "in name order (default --max-experiments: their number)",
    )
    agent.add_argument("--name", help="agent name in the records (default: the tag)")
    agent.add_argument("--base-url", help="endpoint URL (default: OPENAI_BASE_URL)")
    agent.add_argument("--price-in", type=float, default=0.0, help="dollars per million prompt tokens")
    agent.add_argument("--price-out", type=float, default=0.0, help="dollars per million completion tokens")
    agent.add_argument("--seed", type=int, default=0, help="seed of the random-search agent")
    agent.add_argument("--max-experiments", type=int, default=None, help="experiments after the baseline")
    agent.add_argument("--max-hours", type=float, default=None, help="wall-clock limit of this invocation")
    agent.add_argument("--max-api-tokens", type=int, default=None, help="API tokens over the whole run")
    _add_run_settings(agent)
    agent.set_defaults(func=_agent)
    league = sub.add_parser("league", help="agents × tasks with equal budgets, ranked on held-out data")
    league.add_argument("--agents", required=True, help="agents.toml (see autoresearch_bench/league.py)")
    league.add_argument("--tasks", default="all", help="'all' or comma-separated task names")
    league.add_argument("--tasks-dir", default="tasks", help="folder holding the tasks (default tasks/)")
    league.add_argument("--experiments", type=int, required=True, help="experiments per agent and task")
    league.add_argument("--heldout-seeds", type=int, default=5, help="seeds of the held-out scoring (default 5)")
    league.add_argument("--name", default="league", help="league name (branches, records); rerun to resume")
    league.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where the held-out runs go: local (--slots at once, a free GPU each where there are "
        "several) or ray (one GPU each); autoresearch_bench/executor.py",
    )
    league.add_argument(
        "--slots",
        type=int,
        default=None,
        help="(agent, task) loops at once, each pinned to its own GPU, and local held-out runs "
        "at once (default 1: one after the other)",
    )
    _add_command_options(league, "every command agent")
    _add_run_settings(league)
    league.set_defaults(func=_league)
    comp = sub.add_parser("compare", help="the same runs from two results files, group by group, paired by seed")
    comp.add_argument("a", help="results.jsonl of side A (e.g. the H100's)")
    comp.add_argument("b", help="results.jsonl of side B; the table shows B against A")
    comp.add_argument(
        "--min-effect",
        type=float,
        default=None,
        help="smallest difference that counts (default: the task profile's min_effect)",
    )
    comp.add_argument(
        "--candidates",
        nargs=2,
        metavar=("A_NAME", "B_NAME"),
        help="compare A's runs of one candidate with B's of another (A and B may be one file)",
    )
    comp.add_argument("--tasks-dir", default="tasks", help="where the tasks' task.toml files are (default tasks/)")
    comp.add_argument("--format", default="simple", help="tabulate table format, e.g. github for Markdown")
    comp.set_defaults(func=_compare)
    sim = sub.add_parser("simulate", help="the decision rules at a given or stored noise: no-op verdicts, power, runs")
    sim.add_argument("--task", required=True, help="task folder: its direction, floor and profiles' noise tables")
    sim.add_argument("--profile", default="auto", help="task profile (default: auto)")
    sim.add_argument("--tokens", type=int, default=None, help="fixed-token mode: the noise of N tokens")
    sim.add_argument("--budget", type=float, default=None, help="time mode: the noise of this budget (s)")
    sim.add_argument("--baseline", default=None, help="a stored baseline file whose measured noise comes first")
    sim.add_argument("--seed-std", type=float, default=None, help="given seed-to-seed std (before any stored one)")
    sim.add_argument("--pair-std", type=float, default=None, help="given std of a seed's rerun difference")
    sim.add_argument("--floor", type=float, default=None, help="override the task's practical floor")
    sim.add_argument("--min-effect", type=float, default=None, help="override the thresholds (still floored)")
    sim.add_argument(
        "--effects",
        default=None,
        help="true improvements to simulate, comma-separated (default: the paired threshold and twice it)",
    )
    sim.add_argument("--gate-seeds", type=int, default=3, help="seeds of the gate's fixed-seed rows (default 3)")
    sim.add_argument("--seeds", type=int, default=1, help="the agent's screening seeds (default 1)")
    sim.add_argument("--confirm-seeds", type=int, default=3, help="the agent's confirmation seeds (default 3)")
    sim.add_argument("--heldout-seeds", type=int, default=5, help="the league's held-out seeds (default 5)")
    sim.add_argument("--trials", type=int, default=2000, help="trials per row and effect (default 2000)")
    sim.add_argument("--experiments", type=int, default=20000, help="no-op agent experiments (default 20000)")
    sim.add_argument("--seed", type=int, default=0, help="random seed of the simulation")
    sim.add_argument("--format", default="simple", help="tabulate table format, e.g. github for Markdown")
    sim.set_defaults(func=_simulate)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:  # pytest parses the rest (argparse would take its options for its own)
        return _run(argv[1:])
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():  # SIGTERM unwinds as Ctrl-C does: children killed
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.func(args)
    except (TaskError, data.DataError, AgentError, ExecutorError, CompareError, NotFinite) as e:
        print(f"autoresearch-bench: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
