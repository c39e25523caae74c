"""Simulations of the decision rules at a given noise: how often they decide when nothing changed,
how often they see a true effect, and what that costs in runs.

    autoresearch-bench simulate --task tasks/gpt_pretrain --profile h100 --tokens 104857600

The model: a run's score is the seed's effect (shared by every file run with that seed; std
sqrt(seed_std² - pair_std² / 2)) minus the change's true improvement plus the run's own noise (std
pair_std / sqrt(2), so that two runs of a seed differ with std pair_std), all normal; lower is better.
Each rule is the harness's own code under the task's rule (stats.Rule: noise, floor, alpha):
- gate: stats.decide_by_seed, the candidate against the base run on the same seeds, paired, with N
  seeds or --ar-seeds auto (stats.Sequential); and unpaired (other seeds: Welch).
- agent: stats.KeepRule, screen then confirm, against a best whose runs are stored per seed.
- league: stats.decide_by_seed of a final file against the baseline on the held-out seeds, paired.
Each row: the share of no-op trials that got a verdict (agent: were kept), per 1000 with a 95% upper
bound (Clopper-Pearson), the share of true improvements called better (kept), and the candidate's
runs per trial (gate: seeds, as many again for a base run side by side; agent: the candidate's runs,
not the best's one-time re-measure on the confirmation seeds; league: held-out seeds per file).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tabulate import tabulate

from . import stats

# A trial: (true improvement, rng) -> (called better, called worse, runs)
Trial = Callable[[float, np.random.Generator], tuple[bool, bool, int]]


@dataclass(frozen=True)
class Figures:
    """One rule's simulated behaviour."""

    name: str
    trials: int
    no_op: float  # share of no-op trials with a verdict, better or worse (agent: kept)
    no_op_upper: float  # its 95% upper bound
    better: dict[float, float]  # true improvement -> share called better (agent: kept)
    runs: dict[float, float]  # true improvement (0 included) -> mean runs per trial


class World:
    """Scores of runs under the noise model."""

    def __init__(self, noise: stats.Noise):
        pair = noise.std(paired=True) or 0.0
        self.run_std = pair / math.sqrt(2)
        self.seed_std = math.sqrt(max(0.0, (noise.seed_std or 0.0) ** 2 - self.run_std**2))

    def seeds(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(0.0, self.seed_std, n)

    def runs(self, seeds: np.ndarray, improvement: float, rng: np.random.Generator) -> list[float]:
        return list(seeds - improvement + rng.normal(0.0, self.run_std, len(seeds)))


def upper_bound(events: int, trials: int, level: float = 0.95) -> float:
    """Clopper-Pearson upper bound of a rate seen `events` times in `trials`."""
    if events >= trials:
        return 1.0
    lo, hi = events / trials, 1.0
    for _ in range(60):  # P(X <= events; p) = 1 - I_p(events + 1, trials - events) falls with p
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 1 - stats.betainc(events + 1, trials - events, mid) > 1 - level else (lo, mid)
    return hi


def _seeded(values: Sequence[float], first: int = 0) -> list[tuple[int, float]]:
    return list(enumerate(values, first))


def gate_trial(world: World, rule: stats.Rule, seeds: int | str, paired: bool = True) -> Trial:
    """One comparison of the gate: N seeds, or --ar-seeds auto; paired by seed, or on other seeds."""
    plan = stats.Sequential()
    most = plan.stop if seeds == "auto" else seeds

    def trial(improvement: float, rng: np.random.Generator) -> tuple[bool, bool, int]:
        base_seeds = world.seeds(most, rng)
        base = world.runs(base_seeds, 0.0, rng)
        cand = world.runs(base_seeds if paired else world.seeds(most, rng), improvement, rng)
        first = 0 if paired else most  # unpaired: the candidate's seeds are others than the base's
        if seeds == "auto":
            for n in range(plan.start, plan.stop + 1):
                d = stats.decide_by_seed(
                    _seeded(cand[:n], first), _seeded(base[:n]), rule, plan.level(n, rule.alpha), last=n == plan.stop
                )
                if not d.open:
                    break
        else:
            n, d = seeds, stats.decide_by_seed(_seeded(cand, first), _seeded(base), rule)
        return d.verdict == "better", d.verdict == "worse", n

    return trial


def agent_trial(world: World, keep: stats.KeepRule) -> Trial:
    """One experiment of the agent loop against a best whose runs are stored per seed."""
    seeds = (*keep.screen_seeds, *keep.confirm_seeds)

    def trial(improvement: float, rng: np.random.Generator) -> tuple[bool, bool, int]:
        effects = world.seeds(max(seeds) + 1, rng)
        best = dict(enumerate(world.runs(effects, 0.0, rng)))
        cand = dict(enumerate(world.runs(effects, improvement, rng)))
        if not keep.screen(cand, best)[0]:
            return False, False, len(keep.screen_seeds)
        return keep.confirm(cand, best).verdict == "better", False, len(seeds)

    return trial


def league_trial(world: World, rule: stats.Rule, heldout_seeds: int) -> Trial:
    """The held-out comparison of one agent's final file with the baseline, paired by seed."""

    def trial(improvement: float, rng: np.random.Generator) -> tuple[bool, bool, int]:
        effects = world.seeds(heldout_seeds, rng)
        d = stats.decide_by_seed(
            _seeded(world.runs(effects, improvement, rng)), _seeded(world.runs(effects, 0.0, rng)), rule
        )
        return d.verdict == "better", d.verdict == "worse", heldout_seeds

    return trial


def run(
    name: str, trial: Trial, improvements: Sequence[float], trials: int, no_op_trials: int, seed: int = 0
) -> Figures:
    """The trial `no_op_trials` times with no change and `trials` times at each improvement."""
    rng = np.random.default_rng(seed)
    runs: dict[float, float] = {}
    better: dict[float, float] = {}
    decided = 0
    for improvement in (0.0, *improvements):
        count = no_op_trials if improvement == 0 else trials
        outcomes = [trial(improvement, rng) for _ in range(count)]
        runs[improvement] = sum(n for _, _, n in outcomes) / count
        if improvement == 0:
            decided = sum(b or w for b, w, _ in outcomes)
        else:
            better[improvement] = sum(b for b, _, _ in outcomes) / count
    return Figures(name, no_op_trials, decided / no_op_trials, upper_bound(decided, no_op_trials), better, runs)


def simulate(
    rule: stats.Rule,
    improvements: Sequence[float],
    gate_seeds: int = 3,
    screen_seeds: int = 1,
    confirm_seeds: int = 3,
    heldout_seeds: int = 5,
    trials: int = 2000,
    experiments: int = 20000,
    seed: int = 0,
) -> list[Figures]:
    """The gate (N seeds and auto, paired; N unpaired), the agent's keep rule and the league's held-out
    comparison under one rule and its noise."""
    world = World(rule.noise)
    keep = stats.KeepRule(rule, tuple(range(screen_seeds)), tuple(range(screen_seeds, screen_seeds + confirm_seeds)))
    plan = stats.Sequential()
    return [
        run(
            f"gate, {gate_seeds} seeds, paired", gate_trial(world, rule, gate_seeds), improvements, trials, trials, seed
        ),
        run(
            f"gate, auto ({plan.start}-{plan.stop} seeds), paired",
            gate_trial(world, rule, "auto"),
            improvements,
            trials,
            trials,
            seed + 1,
        ),
        run(
            f"gate, {gate_seeds} seeds, unpaired",
            gate_trial(world, rule, gate_seeds, paired=False),
            improvements,
            trials,
            trials,
            seed + 2,
        ),
        run(
            f"agent: screen {screen_seeds} + confirm {confirm_seeds}",
            agent_trial(world, keep),
            improvements,
            trials,
            experiments,
            seed + 3,
        ),
        run(
            f"league: {heldout_seeds} held-out seeds, paired",
            league_trial(world, rule, heldout_seeds),
            improvements,
            trials,
            trials,
            seed + 4,
        ),
    ]


def format_figures(rule: stats.Rule, figures: list[Figures], tablefmt: str = "simple") -> str:
    """A header line with the noise and thresholds, then one row per rule."""
    noise = rule.noise
    fmt = lambda x: "-" if x is None else f"{x:.4g}"
    head = (
        f"noise: seed std {fmt(noise.seed_std)}, pair std {fmt(noise.pair_std)}"
        + (f" ({noise.source})" if noise.source else "")
        + f"; floor {rule.floor:g}; alpha {rule.alpha:g}; thresholds: paired {rule.threshold(True):.4f}, "
        f"unpaired {rule.threshold(False):.4f}"
    )
    rows = []
    for f in figures:
        row = {
            "rule": f.name,
            "no-op trials": f.trials,
            "no-op verdicts (agent: keeps)": f"{f.no_op:.4f}",
            "per 1000 (95% upper)": f"{1000 * f.no_op:.2f} (≤ {1000 * f.no_op_upper:.2f})",
        }
        row |= {f"better at {e:g}": f"{p:.3f}" for e, p in f.better.items()}
        row |= {f"runs at {e:g}": f"{r:.2f}" for e, r in f.runs.items()}
        rows.append(row)
    return head + "\n" + tabulate(rows, headers="keys", tablefmt=tablefmt, disable_numparse=True)
