"""The agent loop: propose a change to a task's editable file, test it with the task's suite, keep or
discard it, record it; resumable at any point. A package, one job a module:

    spec       what the parts exchange: AgentSpec (from the command's flags), Proposal, Context, Experiment
    replies    a model's reply into a change (a unified diff or a whole file) and git apply
    children   the registry of the loop's child processes, killed together
    proposers  the proposers: an OpenAI-compatible model, a sandboxed command, null, random search, replay
    worktree   the agent's git worktree and branch: made, reset to a kept commit, one commit per experiment
    loop       Settings and AgentLoop: the experiments, the keep rule's stages, the records
    plot       progress.png

    autoresearch-bench agent --task tasks/gpt_pretrain --tag nov26 --model gpt-5

Where things live (REPO = the git repository holding the task):
- the agent works in its own git worktree, REPO/.ar/worktrees/<tag>, on branch `autoresearch/<tag>`,
  so the user's checkout is never touched; the branch holds the baseline and the kept commits only;
- records go to REPO/.ar/agent/<tag>/ (or --out): results.tsv (autoresearch's columns: commit,
  <metric>, memory_gb, status, description), experiments.jsonl (the full Experiment records:
  reason, tokens, cost, seconds), bench.tsv/.jsonl (the harness's per-seed RunRecords),
  logs/<n>.log (pytest's output), progress.png (with the `plot` extra), report.json and report.html
  (report.py, htmlreport.py: every experiment, kept or not, and its runs; rewritten after each).

One experiment: ask the proposer (an OpenAI-compatible model, an external command, or a built-in
reference agent) → apply the change (a unified diff, or a complete file) → reject it unless only the
task's editable files changed → commit → KeepRule, screen then confirm, each stage one
`pytest --autoresearch <task>` run in the worktree: the screen runs the candidate on the screening
seed(s) and compares it, seed by seed, with the best kept commit's stored runs; a change that looks
better there (by the screen threshold) is confirmed on fresh seeds, paired with the best on the same
seeds (its stored runs, the gate's stored baseline of the starting file, or re-measured beside the
candidate when it has none), and kept only when the
paired t-test at alpha says better and |Δ| is at least the paired threshold (the task's rule: the
measured pair noise, the practical floor, or `min_effect`). Otherwise the branch is reset to the
last kept commit. Statuses are autoresearch's: keep, discard (not better, a reply that does not apply,
a failed check, a rule violation) and crash (the run crashed or timed out); crashes and failed checks
cost the screen run only. Experiment 0 is the unchanged baseline on the screening seeds. Each record
says the stage it ended at, the seeds, the per-seed values, the confirmation's p and the device
seconds of its runs.

Machine speed (time mode): each stage's runs carry the machine's speed measured before them (the
session's calibration, calibrate.py). A stage whose speed departs by more than calibrate.TOLERANCE from
the speed at which the best's runs on those seeds were measured ends the experiment as a discard whose
reason says `not comparable`, with the measured change and the advice: the same rule as the session
gate's, so a change is never kept (or judged worse) for a run that merely got more (or fewer) steps.

The agent's sandbox. An external agent command is as untrusted as the code it writes, so it runs in
the candidates' sandbox (sandbox.py) at the same level (--sandbox off | auto | strict): new mount, PID,
IPC and UTS namespaces, as a uid of its own (sandbox.RUN_UIDS) with no capabilities when the harness
is root, else in a user namespace whose capabilities are dropped; the system folders, the Python installation and the
harness's package read-only (its corpus covered); a private /tmp and /dev; the resource limits of a
run, a cap on processes (the process watch, and RLIMIT_NPROC of its uid at the kernel), its own
process group and PID namespace, so no process of it outlives its experiment. Not shown at all: the
data cache (validation and held-out rows), the records (results, ledgers, logs), the user's checkout,
other worktrees, and the rest of its own worktree. Its environment is the children's allow-list plus
the names given with --agent-env (its API key); it keeps the machine's network (its model's API)
unless --agent-offline; --agent-ro shows more paths read-only (its program, its config), which must
be readable by other users when the harness is root. Its task folder: the agent works on a copy of the
worktree's task folder, bound read-write where the folder is (AR_TASK_DIR is the real path), and
when it ends, the harness copies the plain files back (a link, FIFO or device fails the experiment).
A copy rather than a chown of the worktree: it works alike for an unprivileged uid and a user
namespace, the user's worktree never holds files of another uid, nothing of it but plain files in the task folder
reaches the harness (no link to a secret, no git hook), and the editable-surface rule then judges
the change as any other. AR_RESULTS is a copy of results.tsv. Where no namespaces are available
(level auto falls back to off, with a warning) it runs unisolated with the scrubbed environment only.

Robustness: rows are appended atomically (storage.appends.append_lines) only after an experiment ends, and
the branch is reset to the last kept commit on start, so a crash or Ctrl-C at any moment loses at
most the experiment in flight; rerunning the same command resumes. The agent command and the pytest
runs get process groups of their own, killed on Ctrl-C or by AgentLoop.interrupt() from another
thread (a league's loops run in threads, each pinned to one GPU with `gpu=`). API errors and rate limits are
retried with exponential backoff by the openai client itself (`max_retries`); when they persist the
loop stops with a one-line error and nothing recorded is lost.
"""

from .children import Children
from .loop import SPLIT, AgentLoop, Measured, Settings, best_runs_of, speed_departs, time_split
from .plot import write_progress_plot
from .proposers import (
    PROPOSERS,
    SYSTEM_PROMPT,
    CommandProposer,
    NullProposer,
    OpenAIProposer,
    RandomSearchProposer,
    ReplayProposer,
    copy_back,
    float_constants,
    render_prompt,
    replay_changes,
)
from .replies import FENCE, apply_proposal, parse_reply
from .spec import (
    AGENT_NPROC_FACTOR,
    RECENT_ROWS,
    SPEED_ADVICE,
    AgentError,
    AgentSpec,
    Context,
    Experiment,
    Proposal,
    command_spec,
)
from .worktree import AUTHOR, Worktree

__all__ = [
    "Children",
    "SPLIT",
    "AgentLoop",
    "Measured",
    "Settings",
    "best_runs_of",
    "speed_departs",
    "time_split",
    "write_progress_plot",
    "PROPOSERS",
    "SYSTEM_PROMPT",
    "CommandProposer",
    "NullProposer",
    "OpenAIProposer",
    "RandomSearchProposer",
    "ReplayProposer",
    "copy_back",
    "float_constants",
    "render_prompt",
    "replay_changes",
    "FENCE",
    "apply_proposal",
    "parse_reply",
    "AGENT_NPROC_FACTOR",
    "AUTHOR",
    "Worktree",
    "RECENT_ROWS",
    "SPEED_ADVICE",
    "AgentError",
    "AgentSpec",
    "Context",
    "Experiment",
    "Proposal",
    "command_spec",
]
