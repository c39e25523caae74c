"""Correctness and anti-cheat checks on a candidate, run in a child process that imported it (a package,
one job a module: base, the shared context and tolerances; source, the source-policy linter and
literal_data; models, building and running models as evaluation does; structural, causality and
batch independence on any model; suite, the named checks and CHECKS; tamper, tamper detection).

Every check has the signature `check(ctx: CheckContext) -> str`: it returns a short detail on
success and raises CheckFailed on violation, with a one-line message that starts with the check's
name ("causality: logits at position 12 changed when ... — the model sees the future"). A detail
that starts with "warning: " passed with a quality concern, not a violation.
`CHECKS` maps the names used in task.toml's `checks` list to them:

    source_policy          the candidate file imports only the task's allowed modules and uses no
                           construct that lets it reach the harness (the builtins eval/exec/open,
                           os/sys/... through any attribute chain, frames and tracebacks, patching
                           attributes of imported modules, dunders like __globals__)
    literal_data           the source holds at most the task's max_literal_bytes ([limits], default
                           16384) of literal data: constants, and lists, tuples, sets and dicts of
                           constants, counted as their source text, docstrings, comments and
                           trailing whitespace included (code can read its own file); a table in
                           the source (the answers of modular_add, validation text) is a channel for
                           what the model should learn, and no probe of the model can see it
    logits_shape           forward(idx[B, T]) returns a plain floating tensor [B, T, vocab]
    finite                 logits are finite in train and eval mode
    initial_loss           cross-entropy on random tokens at init is not below ln(vocab) − 1 nat,
                           which needs the target (a leak); far above it passes with a warning
    causality              logits at positions ≤ t do not move when tokens > t change
                           (hypothesis search over B, T, t and the perturbation; train and eval mode)
    batch_independence     a row's logits do not depend on the other rows of its batch
    eval_train_consistency eval mode computes the function that train mode trains
    overfit_batch          ≤ 30 AdamW steps memorise a small batch that needs the input tokens
    param_limit            parameter count ≤ the task's max_params
    deterministic_eval     the same batch gives the same logits again, after another batch

Checks build the model with torch.manual_seed(ctx.seed). The structural ones (causality, batch
independence, eval/train consistency) run on the model as built *and* on a copy whose weights are
perturbed, because autoresearch-style inits zero the output projections: at init a leak behind them
does not reach the logits. `causality_on` and `batch_independence_on` take any model, so the
harness also runs them on the *trained* model. All forwards of the eval-mode variants run exactly
as evaluation does: model.eval(), torch.no_grad(), bf16 autocast on CUDA.

`snapshot_critical()` / `verify_untampered(snapshot)` detect a candidate that replaces torch's or
the harness's functions (torch.allclose, F.cross_entropy, Tensor.__eq__, this module's checks...):
the child snapshots before importing the candidate and verifies after each check or evaluation;
a change is reported as "tamper: <name> was replaced ...".
The source policy is a static screen against straightforward subversion, not a proof: functions of
forbidden modules that other modules re-export under other names (tarfile.bltn_open is io.open) and
modules passed around in local variables are beyond it. The sandbox (sandbox.py) is the boundary;
the tamper snapshot and the probes on the trained model are the backstop.
"""

from .base import (
    INITIAL_LOSS_TOL,
    MAX_T,
    OVERFIT_CYCLE,
    OVERFIT_LR,
    OVERFIT_ROWS,
    OVERFIT_STEPS,
    OVERFIT_TARGET,
    PERTURBATIONS,
    TOL_FP32,
    TOL_LOW,
    CheckContext,
    CheckFailed,
)
from .source import (
    ALLOWED_DUNDER_ATTRS,
    ALLOWED_DUNDER_NAMES,
    CHECKED_CALLS,
    CODE_FROM_STRING_ATTRS,
    FORBIDDEN_MODULE_ALIASES,
    FORBIDDEN_MODULE_ATTRS,
    FORBIDDEN_MODULES,
    FORBIDDEN_NAMES,
    FORBIDDEN_PATHS,
    INTROSPECTION_ATTRS,
    SETTABLE_PATHS,
    STATIC,
    TORCH_HOOKS,
    check_literal_data,
    check_source_policy,
    forbidden_attribute,
    literal_data,
    source_problems,
)
from .structural import batch_independence_on, causality_on
from .suite import (
    CHECKS,
    check_batch_independence,
    check_causality,
    check_deterministic_eval,
    check_eval_train_consistency,
    check_finite,
    check_initial_loss,
    check_logits_shape,
    check_overfit_batch,
    check_param_limit,
)
from .tamper import snapshot_critical, verify_untampered

__all__ = [
    "INITIAL_LOSS_TOL",
    "MAX_T",
    "OVERFIT_CYCLE",
    "OVERFIT_LR",
    "OVERFIT_ROWS",
    "OVERFIT_STEPS",
    "OVERFIT_TARGET",
    "PERTURBATIONS",
    "TOL_FP32",
    "TOL_LOW",
    "CheckContext",
    "CheckFailed",
    "ALLOWED_DUNDER_ATTRS",
    "ALLOWED_DUNDER_NAMES",
    "CHECKED_CALLS",
    "CODE_FROM_STRING_ATTRS",
    "FORBIDDEN_MODULE_ALIASES",
    "FORBIDDEN_MODULE_ATTRS",
    "FORBIDDEN_MODULES",
    "FORBIDDEN_NAMES",
    "FORBIDDEN_PATHS",
    "INTROSPECTION_ATTRS",
    "SETTABLE_PATHS",
    "STATIC",
    "TORCH_HOOKS",
    "check_literal_data",
    "check_source_policy",
    "forbidden_attribute",
    "literal_data",
    "source_problems",
    "batch_independence_on",
    "causality_on",
    "CHECKS",
    "check_batch_independence",
    "check_causality",
    "check_deterministic_eval",
    "check_eval_train_consistency",
    "check_finite",
    "check_initial_loss",
    "check_logits_shape",
    "check_overfit_batch",
    "check_param_limit",
    "snapshot_critical",
    "verify_untampered",
]
