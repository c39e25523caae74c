"""Correctness and anti-cheat checks on a candidate, run in a child process that imported it.

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
                           constants, counted as their source text, docstrings included; a table in
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
modules passed around in local variables are beyond it. The runtime guards (path audit hook, tamper
snapshot, probes on the trained model) are the backstop.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import copy
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

MAX_T = 64              # longest sequence the checks use (they must be fast on CPU)
PERTURBATIONS = ("all", "some", "next")  # which tokens after t causality replaces
# |Δlogits| allowed: atol + rtol·max|logits|. fp32 on CPU gives exact zeros for masked positions
# and ~1e-6 for a row computed in a different batch; bf16 / CUDA autocast rounds far more coarsely.
TOL_FP32, TOL_LOW = (1e-4, 1e-5), (3e-2, 1e-2)
# Initial loss: on uniformly random targets no model that cannot see the target beats ln(vocab) in
# expectation (Jensen), so a loss well below it means the target leaks into the logits; a loss
# more than a nat above it means large logits at init, which cost training steps but cheat nobody
# (a warning). 1 nat is far outside the sampling noise of 4×64 tokens near uniform.
INITIAL_LOSS_TOL = 1.0
# Overfit: 4 rows walk one random cycle of 16 tokens from different offsets, so at every position
# the 4 targets differ and a model that ignores the token values cannot beat ln 4 nats; the next
# token is a function of the current one, which any model that reads its input learns in a few
# steps (honest toy GPTs reach < 0.05 nats in 30 steps at this learning rate).
OVERFIT_STEPS, OVERFIT_LR, OVERFIT_ROWS, OVERFIT_CYCLE = 30, 3e-3, 4, 16
OVERFIT_TARGET = 0.5 * math.log(OVERFIT_ROWS)


class CheckFailed(AssertionError):
    """A rule was broken; the message is one line: '<check name>: <what happened> — <what it means>'."""


@dataclass
class CheckContext:
    build_model: Callable[[dict], torch.nn.Module] | None
    cfg: dict
    source: str
    allowed_imports: tuple[str, ...]
    max_params: int | None
    seed: int = 0
    max_literal_bytes: int = 16384
    examples: int = 20   # hypothesis examples per model and mode (causality)
    device: str = "cpu"
    built: dict = field(default_factory=dict, repr=False)  # (seed, perturbed) → the model first built: see _build

    @property
    def vocab(self) -> int:
        return int(self.cfg["vocab_size"])

    @property
    def T(self) -> int:
        return min(int(self.cfg["seq_len"]), MAX_T)


# ---------------------------------------------------------------------------------------------
# Source policy
# ---------------------------------------------------------------------------------------------

FORBIDDEN_MODULES = frozenset({
    "os", "sys", "subprocess", "socket", "ctypes", "gc", "inspect", "builtins", "pickle", "importlib",
    "autoresearch_bench", "marshal", "runpy", "shutil", "pathlib", "io", "tempfile", "glob", "signal",
    "multiprocessing", "threading", "_thread", "urllib", "http", "code", "codeop",
    "posix", "_posixsubprocess", "_imp", "_frozen_importlib", "_frozen_importlib_external"})  # and C modules beneath
# Other names under which torch and the stdlib keep forbidden modules (enum.bltns is builtins, torch.cuda.tunable.mp
# is multiprocessing, ...); tests/test_source_policy.py walks every module reachable from the allowed ones for more.
FORBIDDEN_MODULE_ALIASES = frozenset({"bltns", "mp", "python_multiprocessing", "bootstrap", "bootstrap_external",
                                      "wintypes"})
# An attribute with a forbidden module's name (leading underscores aside: collections._sys) is flagged whatever
# the object, as torch.sys, typing.sys, contextlib.os and F.torch.os all reach the interpreter or the system.
FORBIDDEN_MODULE_ATTRS = frozenset({m.lstrip("_") for m in FORBIDDEN_MODULES} | FORBIDDEN_MODULE_ALIASES)
# Frames, tracebacks and code objects: a frame's f_back.f_locals are the harness's variables.
INTROSPECTION_ATTRS = frozenset({
    "_getframe", "_current_frames", "currentframe", "settrace", "setprofile", "gettrace", "getprofile", "exc_info",
    "f_back", "f_locals", "f_globals", "f_builtins", "f_code", "f_trace", "tb_frame", "tb_next", "gi_frame",
    "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code", "co_code", "co_consts", "with_traceback",
    "walk_stack", "walk_tb"})
# typing evaluates string annotations and forward references with eval(), singledispatch's register too.
CODE_FROM_STRING_ATTRS = frozenset({"get_type_hints", "get_annotations", "_eval_type", "_evaluate",
                                    "singledispatch", "singledispatchmethod"})
# Builtins forbidden wherever the name means the builtin (a local variable `compile` is fine).
FORBIDDEN_NAMES = frozenset({"__import__", "eval", "exec", "compile", "open", "globals", "locals", "breakpoint"})
# Builtins allowed only as direct calls the scan can check, with the arguments they need.
CHECKED_CALLS = {**dict.fromkeys(("getattr", "setattr", "delattr", "hasattr"), "the object and name as arguments"),
                 "vars": "one object as argument"}
# Attributes that read or write files, load native code, or hook torch's operator dispatch.
FORBIDDEN_PATHS = ("torch.load", "torch.save", "torch.serialization", "torch.jit.load", "torch.jit.save",
                   "torch.package", "torch.from_file", "torch.hub", "torch.library", "torch.ops", "torch.overrides",
                   "torch._C", "torch.utils.cpp_extension", "torch.utils._python_dispatch", "torch.multiprocessing",
                   "numpy.load", "numpy.save", "numpy.fromfile", "numpy.memmap", "numpy.ctypeslib")
SETTABLE_PATHS = ("torch.backends", "torch._dynamo.config", "torch._inductor.config")  # settings, not code
ALLOWED_DUNDER_ATTRS = frozenset({"__init__", "__name__", "__qualname__", "__doc__", "__class__", "__module__",
                                  "__call__", "__len__", "__repr__", "__str__", "__iter__", "__next__",
                                  "__enter__", "__exit__", "__post_init__"})
ALLOWED_DUNDER_NAMES = frozenset({"__name__", "__doc__", "__all__", "__slots__"})
TORCH_HOOKS = frozenset({"__torch_function__", "__torch_dispatch__"})  # would intercept the harness's ops


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _under(path: str, prefixes) -> bool:
    return any(path == p or path.startswith(p + ".") for p in prefixes)


def forbidden_attribute(name: str) -> str | None:
    """Why reading or writing an attribute of this name is forbidden on any object; None if it is not."""
    if _is_dunder(name):
        return None if name in ALLOWED_DUNDER_ATTRS else f"access to dunder attribute {name!r} is forbidden"
    if name.lstrip("_") in FORBIDDEN_MODULE_ATTRS:
        why = "it names a module that reaches the interpreter or the system"
    elif name in INTROSPECTION_ATTRS:
        why = "frame, traceback and code introspection"
    elif name in CODE_FROM_STRING_ATTRS:
        why = "it evaluates strings as code"
    else:
        return None
    return f"access to attribute {name!r} is forbidden ({why})"


_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_SCOPE_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, *_COMPREHENSIONS)


def _scope_parts(node: ast.AST) -> tuple[list, list, list[str]]:
    """(what a scope node evaluates in its own scope, what in the enclosing one, the parameters it binds)."""
    type_params = getattr(node, "type_params", [])  # Python 3.12: `def f[T: bound]`, evaluated outside
    if isinstance(node, ast.ClassDef):
        return node.body, [*node.decorator_list, *node.bases, *(k.value for k in node.keywords), *type_params], []
    if isinstance(node, _COMPREHENSIONS):
        first, *rest = node.generators
        results = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        return [*results, first.target, *first.ifs, *rest], [first.iter], []
    a = node.args
    params = [*a.posonlyargs, *a.args, *filter(None, [a.vararg]), *a.kwonlyargs, *filter(None, [a.kwarg])]
    outer = [*a.defaults, *filter(None, a.kw_defaults), *(p.annotation for p in params if p.annotation)]
    names = [p.arg for p in params]
    if isinstance(node, ast.Lambda):
        return [node.body], outer, names
    return node.body, [*node.decorator_list, *outer, *filter(None, [node.returns]), *type_params], names


def _bound_by(node: ast.AST) -> list[str]:
    """Names a statement or pattern binds other than through a Name target."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [a.asname or a.name.split(".")[0] for a in node.names]
    if isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)):
        return [node.name] if node.name else []
    return [node.rest] if isinstance(node, ast.MatchMapping) and node.rest else []


def _always_binds(stmt: ast.stmt) -> list[str]:
    """Names a top-level statement certainly binds once it has run."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
    return _bound_by(stmt) if isinstance(stmt, (ast.Import, ast.ImportFrom)) else []


@dataclass
class _Scope:
    kind: str                    # "module", "class" or "function" (lambdas and comprehensions too)
    parent: _Scope | None
    bound: set = field(default_factory=set)
    declared_global: set = field(default_factory=set)
    declared_nonlocal: set = field(default_factory=set)


class _Scopes:
    """Python's name resolution, statically, for the names that matter: whether a Load of `compile`
    may reach the builtin, and which module-level names are string constants."""

    def __init__(self, tree: ast.Module):
        self.module = _Scope("module", None)
        self.scope_of, self.statement_of = {}, {}  # id(Name) -> its scope, the index of its top-level statement
        self.bindings = Counter()                  # bindings of each name in every scope, global declarations too
        self.unstable = set()                      # module names deleted at module level or declared global
        self.module_binding = {}                   # name -> first top-level statement that always binds it
        for i, stmt in enumerate(tree.body):
            self._walk([stmt], self.module, i)
            for name in _always_binds(stmt):
                self.module_binding.setdefault(name, i)
        self.constants = {s.targets[0].id: s.value.value for s in tree.body
                          if isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)
                          and isinstance(s.value, ast.Constant) and isinstance(s.value.value, str)
                          and self.bindings[s.targets[0].id] == 1}

    def _bind(self, scope: _Scope, name: str) -> None:
        scope.bound.add(name)
        self.bindings[name] += 1

    def _walk(self, nodes: list, scope: _Scope, statement: int) -> None:
        todo = list(nodes)
        while todo:
            node = todo.pop()
            if isinstance(node, _SCOPE_NODES):
                inner, outer, params = _scope_parts(node)
                todo.extend(outer)
                if hasattr(node, "name"):
                    self._bind(scope, node.name)
                child = _Scope("class" if isinstance(node, ast.ClassDef) else "function", scope)
                for param in params:
                    self._bind(child, param)
                self._walk(inner, child, statement)
                continue
            todo.extend(ast.iter_child_nodes(node))
            if isinstance(node, ast.Name):
                self.scope_of[id(node)], self.statement_of[id(node)] = scope, statement
                if not isinstance(node.ctx, ast.Load):
                    self._bind(scope, node.id)
                if isinstance(node.ctx, ast.Del) and scope is self.module:
                    self.unstable.add(node.id)
            elif isinstance(node, ast.Global):
                scope.declared_global.update(node.names)
                self.unstable.update(node.names)
                self.bindings.update(node.names)
            elif isinstance(node, ast.Nonlocal):
                scope.declared_nonlocal.update(node.names)
            else:
                for name in _bound_by(node):
                    self._bind(scope, name)

    def reads_builtin(self, node: ast.Name) -> bool:
        """Whether this Load of a name may read the builtin: no function scope it resolves to binds the
        name, nor a top-level statement that always runs before the code of the Load can (class bodies'
        and conditional bindings do not count: the builtin shows through where they did not run)."""
        name, first = node.id, self.scope_of[id(node)]
        scope = first
        while scope is not self.module and name not in scope.declared_global:
            if scope.kind == "function" and name in scope.bound - scope.declared_nonlocal:
                return False
            if scope is first and scope.kind == "class" and name in scope.bound:
                break  # a class body reads its own names from its dict, then globals and builtins
            scope = scope.parent
        binding = self.module_binding.get(name)
        return binding is None or binding >= self.statement_of[id(node)] or name in self.unstable

    def string_value(self, node: ast.AST) -> str | None:
        """The string an expression always is: a literal, or a module constant bound once to one."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        return self.constants.get(node.id) if isinstance(node, ast.Name) else None


class _SourceScan(ast.NodeVisitor):
    """Collects (line, problem) pairs; `aliases` maps local names bound by imports to dotted paths."""

    def __init__(self, allowed: tuple[str, ...], aliases: dict[str, str], scopes: _Scopes):
        self.allowed, self.aliases, self.scopes, self.problems = allowed, aliases, scopes, []
        self.direct_calls: set[int] = set()  # ids of CHECKED_CALLS names that were checked as calls

    def flag(self, node: ast.AST, text: str) -> None:
        self.problems.append((getattr(node, "lineno", 0), text))

    def root(self, node: ast.AST) -> str | None:
        """The imported module an expression is an attribute of (through ., [] and getattr), if any."""
        while True:
            if isinstance(node, (ast.Attribute, ast.Subscript)):
                node = node.value
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                    and node.args:
                node = node.args[0]
            else:
                return self.aliases.get(node.id) if isinstance(node, ast.Name) else None

    def dotted(self, node: ast.AST) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in self.aliases:
            return ".".join([self.aliases[node.id], *reversed(parts)])
        return None

    def check_module(self, node: ast.AST, module: str) -> None:
        top, *parts = module.split(".")
        if top in FORBIDDEN_MODULES:
            self.flag(node, f"import of {module!r} is forbidden (it can reach the harness or the system)")
        elif top != "__future__" and top not in self.allowed:
            self.flag(node, f"import of {module!r} is not allowed (allowed: {', '.join(self.allowed)})")
        elif reason := next(filter(None, map(forbidden_attribute, parts)), None):
            self.flag(node, reason)
        elif _under(module, FORBIDDEN_PATHS):
            self.flag(node, f"import of {module!r} is forbidden (file access, native code or dispatch hooks)")

    def check_attr(self, node: ast.AST, obj: ast.AST, attr: str, store: bool) -> None:
        if reason := forbidden_attribute(attr):
            self.flag(node, reason)
            return
        path = f"{self.dotted(obj)}.{attr}" if self.dotted(obj) else None
        if path and _under(path, FORBIDDEN_PATHS):
            self.flag(node, f"use of {path} is forbidden (file access, native code or dispatch hooks)")
        elif store and self.root(obj) and not (path and _under(path, SETTABLE_PATHS)):
            self.flag(node, f"assignment to an attribute of imported module {self.root(obj)!r} "
                            f"(.{attr}) — monkeypatching torch or the harness is forbidden")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.check_module(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.flag(node, "relative import is forbidden")
            return
        self.check_module(node, node.module)
        for alias in node.names:
            if alias.name == "*":
                self.flag(node, f"'from {node.module} import *' is forbidden (name the imports)")
            elif reason := forbidden_attribute(alias.name):
                self.flag(node, reason)
            elif _under(f"{node.module}.{alias.name}", FORBIDDEN_PATHS):
                self.flag(node, f"import of {node.module}.{alias.name} is forbidden "
                                f"(file access, native code or dispatch hooks)")

    def visit_Name(self, node: ast.Name) -> None:
        builtin = isinstance(node.ctx, ast.Load) and (node.id in FORBIDDEN_NAMES or node.id in CHECKED_CALLS) \
            and self.scopes.reads_builtin(node)
        if builtin and node.id in FORBIDDEN_NAMES:
            self.flag(node, f"use of the builtin {node.id}() is forbidden")
        elif builtin and id(node) not in self.direct_calls:
            self.flag(node, f"{node.id} used other than as a direct call with {CHECKED_CALLS[node.id]}")
        elif _is_dunder(node.id) and node.id not in ALLOWED_DUNDER_NAMES:
            self.flag(node, f"use of {node.id} is forbidden")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.check_attr(node, node.value, node.attr, store=not isinstance(node.ctx, ast.Load))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func, args = node.func, node.args
        if isinstance(func, ast.Name) and func.id in CHECKED_CALLS and self.scopes.reads_builtin(func) \
                and len(args) >= (1 if func.id == "vars" else 2) and not any(isinstance(a, ast.Starred) for a in args):
            self.direct_calls.add(id(func))
            if func.id == "vars":
                if self.root(args[0]):
                    self.flag(node, f"vars() of imported module {self.root(args[0])!r} is forbidden "
                                    f"(its namespace holds what attribute access may not reach)")
            elif (name := self.scopes.string_value(args[1])) is not None:
                self.check_attr(node, args[0], name, store=func.id in ("setattr", "delattr"))
            elif self.root(args[0]):
                self.flag(node, f"{func.id}() with a computed name on imported module {self.root(args[0])!r}")
        self.generic_visit(node)

    def visit_MatchClass(self, node: ast.MatchClass) -> None:
        for attr in node.kwd_attrs:  # `case object(sys=found)` reads the attribute sys
            if reason := forbidden_attribute(attr):
                self.flag(node, reason)
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name in TORCH_HOOKS:
            self.flag(node, f"defining {node.name} is forbidden (it would intercept the harness's tensor ops)")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef


def source_problems(source: str, allowed_imports: tuple[str, ...]) -> list[tuple[int, str]]:
    """Every source-policy violation as (line, description), in line order."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        return [(e.lineno or 0, f"syntax error: {e.msg}")]
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    scan = _SourceScan(tuple(allowed_imports), aliases, _Scopes(tree))
    scan.visit(tree)
    return sorted(scan.problems)


def check_source_policy(ctx: CheckContext) -> str:
    problems = source_problems(ctx.source, ctx.allowed_imports)
    if problems:
        (line, text), more = problems[0], len(problems) - 1
        raise CheckFailed(f"source_policy: line {line}: {text}" + (f" (and {more} more)" if more else ""))
    return f"imports within {', '.join(ctx.allowed_imports)}; no forbidden constructs"


def literal_data(source: str) -> list[tuple[int, int]]:
    """(bytes, line) of each literal of the source: a constant (None, True, False aside), or a list,
    tuple, set or dict of constants only, nested or signed, counted as its source text."""
    def constant_only(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.UnaryOp):
            return isinstance(node.operand, ast.Constant)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return all(map(constant_only, node.elts))
        return isinstance(node, ast.Dict) and all(k is not None and constant_only(k) for k in node.keys) \
            and all(map(constant_only, node.values))

    found, todo = [], [ast.parse(source)]
    while todo:
        node = todo.pop()
        if constant_only(node) and not (isinstance(node, ast.Constant) and node.value in (None, True, False)):
            found.append((len((ast.get_source_segment(source, node) or "").encode()), node.lineno))
        else:
            todo.extend(ast.iter_child_nodes(node))
    return found


def check_literal_data(ctx: CheckContext) -> str:
    try:
        found = literal_data(ctx.source)
    except SyntaxError as e:
        raise CheckFailed(f"literal_data: line {e.lineno}: syntax error: {e.msg}") from None
    total, limit = sum(n for n, _ in found), ctx.max_literal_bytes
    if total > limit:
        size, line = max(found)
        raise CheckFailed(f"literal_data: the source holds {total:,} bytes of literal data (constants and tables of "
                          f"constants) > the task's limit of {limit:,} (max_literal_bytes in [limits]); the largest, "
                          f"{size:,} bytes, starts at line {line}: a table in the source can carry answers that the "
                          f"model should learn")
    return f"{total:,} bytes of literal data, within {limit:,}"


STATIC = ("source_policy", "literal_data")  # checks of the source alone: they run when the import fails too


# ---------------------------------------------------------------------------------------------
# Model helpers
# ---------------------------------------------------------------------------------------------

def _build(ctx: CheckContext, perturbed: bool = False) -> torch.nn.Module:
    """build_model(cfg) under ctx.seed, on ctx.device; perturbed: every parameter gets noise of
    default-init size, so zero-initialised paths (output projections, gates) carry signal. The first
    model built for a seed is kept in ctx.built and each later check gets a copy of it (as the
    scorer's processes, each check sees a first build; building a 50M-parameter model on a CPU costs
    about a second); a model that cannot be copied is built anew."""
    key = (ctx.seed, perturbed)
    if key in ctx.built:
        model, rng = ctx.built[key]
        torch.set_rng_state(rng)  # the random state a fresh build leaves, for what the check draws next
        return copy.deepcopy(model)
    model = _build_new(ctx, perturbed)
    with contextlib.suppress(Exception):
        ctx.built[key] = copy.deepcopy(model), torch.get_rng_state()
    return model


def _build_new(ctx: CheckContext, perturbed: bool) -> torch.nn.Module:
    torch.manual_seed(ctx.seed)
    model = ctx.build_model(dict(ctx.cfg))
    if not isinstance(model, torch.nn.Module):
        raise CheckFailed(f"logits_shape: build_model returned {type(model).__name__}, not a torch.nn.Module")
    model = model.to(ctx.device)
    if perturbed:
        g = torch.Generator().manual_seed(ctx.seed + 1)
        with torch.no_grad():
            for p in model.parameters():
                if p.is_floating_point():
                    scale = 1 / math.sqrt(p[0].numel()) if p.dim() >= 2 else 0.1
                    p.add_(scale * torch.randn(p.shape, generator=g).to(p.device, p.dtype))
    return model


def _models(ctx: CheckContext):
    yield "as built", _build(ctx)
    yield "with perturbed weights", _build(ctx, perturbed=True)


def _tokens(vocab: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randint(vocab, shape, generator=torch.Generator().manual_seed(seed))


def _forward(model: torch.nn.Module, idx: torch.Tensor, vocab: int, training: bool,
             noise_seed: int | None = 0) -> torch.Tensor:
    """Validated logits (shape, plain tensor, finite) in the given mode under no_grad, as evaluation
    computes them. With noise_seed the RNG is reseeded first (and restored after), so dropout draws
    the same masks for the same shapes."""
    device = next(model.parameters(), idx).device
    idx = idx.to(device)
    was = model.training
    model.train(training)
    try:
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"), \
                torch.random.fork_rng(devices=[device] if device.type == "cuda" else [],
                                      device_type=device.type, enabled=noise_seed is not None):
            if noise_seed is not None:
                torch.manual_seed(noise_seed)
            logits = model(idx)
    finally:
        model.train(was)
    _check_logits(logits, idx, vocab)
    finite = torch.isfinite(logits)
    if not finite.all():
        nan = int(torch.isnan(logits).sum())
        raise CheckFailed(f"finite: {_mode_name(training)} logits hold {nan} NaN and {int((~finite).sum()) - nan} "
                          f"inf values on random tokens")
    return logits


def _check_logits(logits, idx: torch.Tensor, vocab: int) -> None:
    want = (*idx.shape, vocab)
    if type(logits) is not torch.Tensor:
        raise CheckFailed(f"logits_shape: forward returned {type(logits).__name__}, not a plain torch.Tensor")
    if tuple(logits.shape) != want:
        raise CheckFailed(f"logits_shape: forward(idx{list(idx.shape)}) returned {list(logits.shape)}, "
                          f"expected {list(want)}")
    if not logits.is_floating_point():
        raise CheckFailed(f"logits_shape: logits have dtype {logits.dtype}, expected a floating dtype")


def _tolerance(ref: torch.Tensor) -> float:
    low = ref.dtype in (torch.float16, torch.bfloat16) or ref.device.type == "cuda"
    atol, rtol = TOL_LOW if low else TOL_FP32
    return atol + rtol * ref.float().abs().max().item()


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def _mode_name(training: bool) -> str:
    return "train mode (no_grad)" if training else "eval mode"


# ---------------------------------------------------------------------------------------------
# Structural checks, on any model (built or trained)
# ---------------------------------------------------------------------------------------------

def _causality_search(model, vocab: int, T: int, examples: int, seed: int, training: bool, label: str) -> float:
    # imported here: the training and evaluation processes import this module but never search
    from hypothesis import HealthCheck, Phase, Verbosity, example, given, settings
    from hypothesis import strategies as st

    worst = 0.0
    cases = st.integers(2, T).flatmap(lambda n: st.tuples(
        st.integers(1, 3), st.just(n), st.integers(0, n - 2), st.sampled_from(PERTURBATIONS),
        st.integers(0, 2 ** 16)))

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              phases=(Phase.explicit, Phase.generate), report_multiple_bugs=False,
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet)
    @given(cases)
    @example((2, T, (T - 1) // 2, "all", 0))
    @example((3, T, 0, "next", 1))
    def probe(case):
        nonlocal worst
        B, n, t, how, s = case
        g = torch.Generator().manual_seed(seed * 1_000_003 + s)
        x = torch.randint(vocab, (B, n), generator=g)
        later = x[:, t + 1:]
        replaced = (later + torch.randint(1, vocab, later.shape, generator=g)) % vocab  # always differs
        if how == "all":
            mask = torch.ones_like(later, dtype=torch.bool)
        elif how == "next":
            mask = torch.zeros_like(later, dtype=torch.bool)
            mask[:, 0] = True
        else:
            mask = torch.rand(later.shape, generator=g) < 0.5
            mask[:, -1] = True
        y = x.clone()
        y[:, t + 1:] = torch.where(mask, replaced, later)
        a = _forward(model, x, vocab, training)[:, :t + 1]
        b = _forward(model, y, vocab, training)[:, :t + 1]
        per_pos = (a.float() - b.float()).abs().amax(dim=(0, 2))
        tol = _tolerance(a)
        bad = (per_pos > tol).nonzero()
        if len(bad):
            p = int(bad[0])
            raise CheckFailed(
                f"causality: logits at position {p} changed when tokens after position {t} changed "
                f"(max |Δ| {per_pos[p].item():.1e} > {tol:.1e}; {how} later tokens replaced, B={B}, T={n}, "
                f"{_mode_name(training)}, model {label}) — the model sees the future")
        worst = max(worst, per_pos.max().item())

    probe()
    return worst


def causality_on(model: torch.nn.Module, vocab: int, T: int, examples: int = 20, seed: int = 0,
                 label: str = "trained") -> str:
    """Hypothesis search (B ≤ 3, 2 ≤ T' ≤ T, position t, which later tokens change) in train mode
    under no_grad with equal dropout masks, then in eval mode; raises CheckFailed on a leak."""
    worst = max(_causality_search(model, vocab, T, examples, seed, training, label) for training in (True, False))
    return f"{examples} examples × train/eval mode, T ≤ {T}: max |Δ| {worst:.1e}"


def batch_independence_on(model: torch.nn.Module, vocab: int, T: int, seed: int = 0,
                          label: str = "trained") -> str:
    """Row logits in eval mode are the same alone (B=1), among other random rows (B=6) and with
    the batch permuted, as in a batch of 4; raises CheckFailed when rows leak into each other."""
    x = _tokens(vocab, (4, T), seed)
    full = _forward(model, x, vocab, training=False)
    tol = _tolerance(full)
    others = torch.cat([x[:1], _tokens(vocab, (5, T), seed + 1)])
    perm = torch.tensor([3, 0, 2, 1])
    trials = [
        ("row 0 computed alone", _forward(model, x[:1], vocab, False), full[:1]),
        ("row 3 computed alone", _forward(model, x[3:], vocab, False), full[3:]),
        ("row 0 among 5 other random rows", _forward(model, others, vocab, False)[:1], full[:1]),
        ("the batch permuted", _forward(model, x[perm], vocab, False), full[perm]),
    ]
    worst = 0.0
    for what, got, want in trials:
        diff = _max_diff(got, want)
        if not diff <= tol:
            raise CheckFailed(f"batch_independence: logits changed with {what} instead of in a batch of 4 "
                              f"(max |Δ| {diff:.1e} > {tol:.1e}, eval mode, model {label}) — rows of a batch "
                              f"leak into each other")
        worst = max(worst, diff)
    return f"alone, among other rows, permuted: max |Δ| {worst:.1e}"


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------

def check_logits_shape(ctx: CheckContext) -> str:
    model = _build(ctx)
    for T in (ctx.T, ctx.T // 2 + 1):
        _forward(model, _tokens(ctx.vocab, (2, T), ctx.seed), ctx.vocab, training=False)
    return f"[2, T, {ctx.vocab}] floating logits for T = {ctx.T} and {ctx.T // 2 + 1}"


def check_finite(ctx: CheckContext) -> str:
    model = _build(ctx)
    x = _tokens(ctx.vocab, (2, ctx.T), ctx.seed)
    for training in (True, False):
        _forward(model, x, ctx.vocab, training)  # raises on NaN or inf
    return "finite logits in train and eval mode"


def check_initial_loss(ctx: CheckContext) -> str:
    model = _build(ctx)
    x = _tokens(ctx.vocab, (4, ctx.T), ctx.seed)
    logits = _forward(model, x, ctx.vocab, training=False)
    targets = x[:, 1:].reshape(-1).to(logits.device)
    loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, ctx.vocab), targets).item()
    uniform = math.log(ctx.vocab)
    if loss < uniform - INITIAL_LOSS_TOL:
        raise CheckFailed(f"initial_loss: {loss:.2f} nats on uniformly random tokens < ln(vocab) {uniform:.2f} "
                          f"− {INITIAL_LOSS_TOL}, which no model that cannot see the target can reach — "
                          f"the next token leaks into the logits")
    if loss > uniform + INITIAL_LOSS_TOL:
        return (f"warning: {loss:.1f} nats at init on random tokens, far above ln(vocab) {uniform:.2f} — large "
                f"initial logits waste training steps; scale the output layer down")
    return f"{loss:.3f} nats at init vs ln(vocab) {uniform:.3f}"


def check_causality(ctx: CheckContext) -> str:
    details = [causality_on(model, ctx.vocab, ctx.T, ctx.examples, ctx.seed, label)
               for label, model in _models(ctx)]
    return f"{details[0]} (as built and with perturbed weights)"


def check_batch_independence(ctx: CheckContext) -> str:
    details = [batch_independence_on(model, ctx.vocab, ctx.T, ctx.seed, label) for label, model in _models(ctx)]
    return f"{details[0]} (as built and with perturbed weights)"


def check_eval_train_consistency(ctx: CheckContext) -> str:
    """Eval mode must compute the function train mode trains, up to training noise. Train-mode
    logits (no_grad) are compared with eval-mode logits; if they differ while two train-mode
    forwards with different RNG seeds agree, the model branches on self.training deterministically
    (the scored model is not the trained one) and fails. Differing train-mode forwards mean
    dropout-like noise, which passes: causality then holds in both modes by the causality check.
    Models with mode-dependent layers besides dropout (BatchNorm) fail this check by design; tasks
    that allow them leave it out of their list."""
    x = _tokens(ctx.vocab, (2, ctx.T), ctx.seed)
    noisy = []
    for label, model in _models(ctx):
        evaluated = _forward(model, x, ctx.vocab, training=False)
        trained = _forward(model, x, ctx.vocab, training=True, noise_seed=1)
        tol = _tolerance(trained)
        diff = _max_diff(evaluated, trained)
        if diff <= tol:
            continue
        if _max_diff(trained, _forward(model, x, ctx.vocab, training=True, noise_seed=2)) <= tol:
            raise CheckFailed(f"eval_train_consistency: eval-mode logits differ from train-mode logits "
                              f"(max |Δ| {diff:.1e} > {tol:.1e}, model {label}) although train mode is "
                              f"deterministic — the model branches on self.training, so the scored "
                              f"function is not the trained one")
        noisy.append(label)
    return ("train mode is random (dropout); eval mode is its noise-free version" if noisy
            else "eval and train mode agree")


def check_overfit_batch(ctx: CheckContext) -> str:
    model = _build(ctx)
    n = min(int(ctx.cfg["seq_len"]), 32)
    g = torch.Generator().manual_seed(ctx.seed)
    cycle = torch.randperm(ctx.vocab, generator=g)[:OVERFIT_CYCLE]
    starts = torch.arange(OVERFIT_ROWS) * (OVERFIT_CYCLE // OVERFIT_ROWS)
    rows = cycle[(starts[:, None] + torch.arange(n + 1)) % OVERFIT_CYCLE]
    x, y = rows[:, :-1], rows[:, 1:]

    def loss_of(logits):
        return F.cross_entropy(logits.float().reshape(-1, ctx.vocab), y.reshape(-1).to(logits.device))

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise CheckFailed("overfit_batch: the model has no trainable parameters — it cannot learn")
    initial = loss_of(_forward(model, x, ctx.vocab, training=False)).item()
    opt = torch.optim.AdamW(params, lr=OVERFIT_LR, weight_decay=0.0)
    model.train()
    for _ in range(OVERFIT_STEPS):
        logits = model(x.to(params[0].device))
        _check_logits(logits, x, ctx.vocab)
        opt.zero_grad(set_to_none=True)
        loss_of(logits).backward()
        opt.step()
    final = loss_of(_forward(model, x, ctx.vocab, training=False)).item()
    if not (final < OVERFIT_TARGET and final < 0.7 * initial):
        raise CheckFailed(
            f"overfit_batch: loss {initial:.2f} → {final:.2f} nats after {OVERFIT_STEPS} AdamW steps on one "
            f"repeated batch; needs < {OVERFIT_TARGET:.2f} (half of what a model ignoring its input tokens "
            f"can reach) — the model does not learn from its input")
    return f"loss {initial:.2f} → {final:.3f} nats in {OVERFIT_STEPS} steps"


def check_param_limit(ctx: CheckContext) -> str:
    if ctx.max_params is None:
        return "no limit"
    params = sum(p.numel() for p in _build(ctx).parameters())
    if params > ctx.max_params:
        raise CheckFailed(f"param_limit: {params:,} parameters > limit {ctx.max_params:,}")
    return f"{params:,} ≤ {ctx.max_params:,} parameters"


def check_deterministic_eval(ctx: CheckContext) -> str:
    model = _build(ctx)
    x = _tokens(ctx.vocab, (2, ctx.T), ctx.seed)
    first = _forward(model, x, ctx.vocab, training=False, noise_seed=None)
    _forward(model, _tokens(ctx.vocab, (2, ctx.T), ctx.seed + 1), ctx.vocab, training=False, noise_seed=None)
    again = _forward(model, x, ctx.vocab, training=False, noise_seed=None)
    diff, tol = _max_diff(first, again), _tolerance(first)
    if not diff <= tol:
        raise CheckFailed(f"deterministic_eval: the same batch gave different eval-mode logits after another "
                          f"batch (max |Δ| {diff:.1e} > {tol:.1e}) — the model keeps state between calls or "
                          f"is random in eval mode")
    return f"same logits on repeat (max |Δ| {diff:.1e})"


CHECKS: dict[str, Callable[[CheckContext], str]] = {
    "source_policy": check_source_policy,
    "literal_data": check_literal_data,
    "logits_shape": check_logits_shape,
    "finite": check_finite,
    "initial_loss": check_initial_loss,
    "causality": check_causality,
    "batch_independence": check_batch_independence,
    "eval_train_consistency": check_eval_train_consistency,
    "overfit_batch": check_overfit_batch,
    "param_limit": check_param_limit,
    "deterministic_eval": check_deterministic_eval,
}


# ---------------------------------------------------------------------------------------------
# Tamper detection
# ---------------------------------------------------------------------------------------------

_MISSING = object()
# torch.manual_seed is left out: importing torch._dynamo (torch.compile) legitimately wraps it.
_CRITICAL = {
    "torch": ("allclose", "equal", "isfinite", "isnan", "isinf", "randint", "randperm", "rand", "no_grad",
              "autocast", "set_grad_enabled", "load", "save", "from_numpy", "tensor", "arange", "zeros",
              "ones_like", "cat", "roll", "flip", "where", "log", "exp", "Generator"),
    "torch.nn.functional": ("cross_entropy", "log_softmax", "softmax", "nll_loss"),
    "torch.Tensor": ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__sub__", "__add__",
                     "__mul__", "__truediv__", "__neg__", "__getitem__", "__setitem__", "__bool__",
                     "__float__", "abs", "max", "min", "amax", "sum", "mean", "float", "to", "view",
                     "reshape", "flatten", "item", "all", "any", "isfinite", "tolist", "clone", "detach",
                     "cpu", "numel", "nonzero", "shape", "dtype", "device", "gather",
                     "log_softmax", "backward", "is_floating_point"),
    "torch.nn.Module": ("__call__", "_call_impl", "_wrapped_call_impl", "train", "eval", "parameters",
                        "to", "load_state_dict", "state_dict"),
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
    methods) of each autoresearch_bench module already imported. Take it before importing a candidate."""
    # torch wraps an optimizer class's step() for profiling the first time one is built: wrap it
    # now, so that an honest candidate's first AdamW does not look like tampering (without building
    # one, which would import torch._dynamo: a second of start-up in every evaluation process)
    torch.optim.AdamW.__new__(torch.optim.AdamW)._patch_step_function()
    owners = {"torch": torch, "torch.nn.functional": F, "torch.Tensor": torch.Tensor,
              "torch.nn.Module": torch.nn.Module, "torch.optim.AdamW": torch.optim.AdamW,
              "builtins": builtins, "math": math}
    entries = {f"{o}.{name}": (owners[o], name) for o, names in _CRITICAL.items() for name in names}
    entries.update({f"checks.CHECKS[{name!r}]": (CHECKS, name) for name in CHECKS})
    for modname, module in list(sys.modules.items()):
        if not (modname in ("torch", "torch.nn.functional") or modname.split(".")[0] == "autoresearch_bench"):
            continue
        entries[f"sys.modules[{modname!r}]"] = (sys.modules, modname)
        if module is None or modname.split(".")[0] != "autoresearch_bench":
            continue
        for name, obj in vars(module).items():
            if modname == __name__ and not _is_dunder(name) and not isinstance(obj, type(sys)):
                entries[f"{modname}.{name}"] = (module, name)  # this module's constants (tolerances) too
            if callable(obj) and getattr(obj, "__module__", None) == modname:
                entries[f"{modname}.{name}"] = (module, name)
                if isinstance(obj, type):
                    entries.update({f"{modname}.{name}.{m}": (obj, m) for m, v in vars(obj).items()
                                    if callable(v) and not _is_dunder(m)})
    return {key: (owner, name, _lookup(owner, name)) for key, (owner, name) in entries.items()}


def verify_untampered(snapshot: dict) -> None:
    """Raise CheckFailed naming the first critical callable that was replaced or removed."""
    changed = [key for key, (owner, name, obj) in snapshot.items() if _lookup(owner, name) is not obj]
    if changed:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise CheckFailed(f"tamper: {changed[0]} was replaced or removed after the candidate was imported{more} "
                          f"— candidate code must not patch torch or the harness")
