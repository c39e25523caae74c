"""Tamper detection: identities of the callables the checks and the evaluation rely on, snapshotted
before the candidate is imported and verified after each check.
"""

from __future__ import annotations

import builtins
import math
import sys

import torch
import torch.nn.functional as F

from .base import CheckFailed
from .source import is_dunder
from .suite import CHECKS

# ---------------------------------------------------------------------------------------------
# Tamper detection
# ---------------------------------------------------------------------------------------------

_MISSING = object()
_CHECKS_PACKAGE = __name__.rpartition(".")[0]  # autoresearch_bench.checks
# torch.manual_seed is left out: importing torch._dynamo (torch.compile) legitimately wraps it.
_CRITICAL = {
    "torch": (
        "allclose",
        "equal",
        "isfinite",
        "isnan",
        "isinf",
        "randint",
        "randperm",
        "rand",
        "no_grad",
        "autocast",
        "set_grad_enabled",
        "load",
        "save",
        "from_numpy",
        "tensor",
        "arange",
        "zeros",
        "ones_like",
        "cat",
        "roll",
        "flip",
        "where",
        "log",
        "exp",
        "Generator",
    ),
    "torch.nn.functional": ("cross_entropy", "log_softmax", "softmax", "nll_loss"),
    "torch.Tensor": (
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__sub__",
        "__add__",
        "__mul__",
        "__truediv__",
        "__neg__",
        "__getitem__",
        "__setitem__",
        "__bool__",
        "__float__",
        "abs",
        "max",
        "min",
        "amax",
        "sum",
        "mean",
        "float",
        "to",
        "view",
        "reshape",
        "flatten",
        "item",
        "all",
        "any",
        "isfinite",
        "tolist",
        "clone",
        "detach",
        "cpu",
        "numel",
        "nonzero",
        "shape",
        "dtype",
        "device",
        "gather",
        "log_softmax",
        "backward",
        "is_floating_point",
    ),
    "torch.nn.Module": (
        "__call__",
        "_call_impl",
        "_wrapped_call_impl",
        "train",
        "eval",
        "parameters",
        "to",
        "load_state_dict",
        "state_dict",
    ),
    "torch.optim.AdamW": ("step", "zero_grad"),
    "builtins": ("sum", "len", "abs", "max", "min", "isinstance", "float", "int", "range", "type", "getattr"),
    "math": ("log", "isfinite", "isnan", "exp"),
}


def _lookup(owner, name: str):
    """The object stored under name, without calling descriptors (classes: along the MRO)."""
    if isinstance(owner, dict):
        return owner.get(name, _MISSING)
    if isinstance(owner, type):
        return next((vars(k)[name] for k in owner.__mro__ if name in vars(k)), _MISSING)
    return getattr(owner, name, _MISSING)


def snapshot_critical() -> dict:
    """Identities of the callables the checks and the evaluation rely on: torch's losses and
    comparisons, Tensor and Module methods, a few builtins, and every function and class (with its
    methods) of each autoresearch_bench module already imported,
    and every name of the checks' package and its modules. Take it before importing a candidate."""
    # torch wraps an optimizer class's step() for profiling the first time one is built: wrap it
    # now, so that an honest candidate's first AdamW does not look like tampering (without building
    # one, which would import torch._dynamo: a second of start-up in every evaluation process)
    torch.optim.AdamW.__new__(torch.optim.AdamW)._patch_step_function()
    owners = {
        "torch": torch,
        "torch.nn.functional": F,
        "torch.Tensor": torch.Tensor,
        "torch.nn.Module": torch.nn.Module,
        "torch.optim.AdamW": torch.optim.AdamW,
        "builtins": builtins,
        "math": math,
    }
    entries = {f"{o}.{name}": (owners[o], name) for o, names in _CRITICAL.items() for name in names}
    entries.update({f"checks.CHECKS[{name!r}]": (CHECKS, name) for name in CHECKS})
    for modname, module in list(sys.modules.items()):
        if not (modname in ("torch", "torch.nn.functional") or modname.split(".")[0] == "autoresearch_bench"):
            continue
        entries[f"sys.modules[{modname!r}]"] = (sys.modules, modname)
        if module is None or modname.split(".")[0] != "autoresearch_bench":
            continue
        for name, obj in vars(module).items():
            if (
                _CHECKS_PACKAGE in (modname, modname.rpartition(".")[0])
                and not is_dunder(name)
                and not isinstance(obj, type(sys))
            ):
                entries[f"{modname}.{name}"] = (module, name)  # the checks' constants (tolerances) and names too
            if callable(obj) and getattr(obj, "__module__", None) == modname:
                entries[f"{modname}.{name}"] = (module, name)
                if isinstance(obj, type):
                    entries.update(
                        {
                            f"{modname}.{name}.{m}": (obj, m)
                            for m, v in vars(obj).items()
                            if callable(v) and not is_dunder(m)
                        }
                    )
    return {key: (owner, name, _lookup(owner, name)) for key, (owner, name) in entries.items()}


def verify_untampered(snapshot: dict) -> None:
    """Raise CheckFailed naming the first critical callable that was replaced or removed."""
    changed = [key for key, (owner, name, obj) in snapshot.items() if _lookup(owner, name) is not obj]
    if changed:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise CheckFailed(
            f"tamper: {changed[0]} was replaced or removed after the candidate was imported{more} "
            f"— candidate code must not patch torch or the harness"
        )
