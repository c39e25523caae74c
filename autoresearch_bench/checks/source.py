"""The source policy: a static linter of the candidate's source (imports, attribute chains, dunders,
patching) and literal_data, the bytes of literal data it holds.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections import Counter
from dataclasses import dataclass, field

from .base import CheckContext, CheckFailed

# ---------------------------------------------------------------------------------------------
# Source policy
# ---------------------------------------------------------------------------------------------

FORBIDDEN_MODULES = frozenset(
    {
        "os",
        "sys",
        "subprocess",
        "socket",
        "ctypes",
        "gc",
        "inspect",
        "builtins",
        "pickle",
        "importlib",
        "autoresearch_bench",
        "marshal",
        "runpy",
        "shutil",
        "pathlib",
        "io",
        "tempfile",
        "glob",
        "signal",
        "multiprocessing",
        "threading",
        "_thread",
        "urllib",
        "http",
        "code",
        "codeop",
        "posix",
        "_posixsubprocess",
        "_imp",
        "_frozen_importlib",
        "_frozen_importlib_external",
    }
)  # and C modules beneath
# Other names under which torch and the stdlib keep forbidden modules (enum.bltns is builtins, torch.cuda.tunable.mp
# is multiprocessing, ...); tests/test_source_policy.py walks every module reachable from the allowed ones for more.
FORBIDDEN_MODULE_ALIASES = frozenset(
    {"bltns", "mp", "python_multiprocessing", "bootstrap", "bootstrap_external", "wintypes"}
)
# An attribute with a forbidden module's name (leading underscores aside: collections._sys) is flagged whatever
# the object, as torch.sys, typing.sys, contextlib.os and F.torch.os all reach the interpreter or the system.
FORBIDDEN_MODULE_ATTRS = frozenset({m.lstrip("_") for m in FORBIDDEN_MODULES} | FORBIDDEN_MODULE_ALIASES)
# Frames, tracebacks and code objects: a frame's f_back.f_locals are the harness's variables.
INTROSPECTION_ATTRS = frozenset(
    {
        "_getframe",
        "_current_frames",
        "currentframe",
        "settrace",
        "setprofile",
        "gettrace",
        "getprofile",
        "exc_info",
        "f_back",
        "f_locals",
        "f_globals",
        "f_builtins",
        "f_code",
        "f_trace",
        "tb_frame",
        "tb_next",
        "gi_frame",
        "gi_code",
        "cr_frame",
        "cr_code",
        "ag_frame",
        "ag_code",
        "co_code",
        "co_consts",
        "with_traceback",
        "walk_stack",
        "walk_tb",
    }
)
# ctypes' loaders and raw memory, and file or code routes, under the names torch and its dependencies re-export
# them (red team: `from torch._inductor.codecache import CDLL` gave libc's syscall(); torch.xpu.byref,
# sympy's mpmath exec_, numpy's _datasource._open, torch.UntypedStorage.from_file read the candidate's own file).
NATIVE_AND_FILE_ATTRS = frozenset(
    {
        "CDLL",
        "cdll",
        "PyDLL",
        "pydll",
        "LibraryLoader",
        "CFUNCTYPE",
        "PYFUNCTYPE",
        "CFuncPtr",
        "dlopen",
        "find_library",
        "byref",
        "pointer",
        "POINTER",
        "addressof",
        "string_at",
        "wstring_at",
        "memmove",
        "memset",
        "c_void_p",
        "c_char_p",
        "from_file",
        "exec_",
        "_open",
        "_builtin_open",
        "bltn_open",
        "import_module",
        "create_connection",
        "urlopen",
    }
)
# typing evaluates string annotations and forward references with eval(), singledispatch's register too.
CODE_FROM_STRING_ATTRS = frozenset(
    {"get_type_hints", "get_annotations", "_eval_type", "_evaluate", "singledispatch", "singledispatchmethod"}
)
# Builtins forbidden wherever the name means the builtin (a local variable `compile` is fine).
FORBIDDEN_NAMES = frozenset({"__import__", "eval", "exec", "compile", "open", "globals", "locals", "breakpoint"})
# Builtins allowed only as direct calls the scan can check, with the arguments they need.
CHECKED_CALLS = {
    **dict.fromkeys(("getattr", "setattr", "delattr", "hasattr"), "the object and name as arguments"),
    "vars": "one object as argument",
}
# Attributes that read or write files, load native code, or hook torch's operator dispatch.
FORBIDDEN_PATHS = (
    "torch.load",
    "torch.save",
    "torch.serialization",
    "torch.jit.load",
    "torch.jit.save",
    "torch.package",
    "torch.from_file",
    "torch.hub",
    "torch.library",
    "torch.ops",
    "torch.overrides",
    "torch._C",
    "torch.utils.cpp_extension",
    "torch.utils._python_dispatch",
    "torch.multiprocessing",
    "numpy.load",
    "numpy.save",
    "numpy.fromfile",
    "numpy.memmap",
    "numpy.ctypeslib",
)
SETTABLE_PATHS = ("torch.backends", "torch._dynamo.config", "torch._inductor.config")  # settings, not code
ALLOWED_DUNDER_ATTRS = frozenset(
    {
        "__init__",
        "__name__",
        "__qualname__",
        "__doc__",
        "__class__",
        "__module__",
        "__call__",
        "__len__",
        "__repr__",
        "__str__",
        "__iter__",
        "__next__",
        "__enter__",
        "__exit__",
        "__post_init__",
    }
)
ALLOWED_DUNDER_NAMES = frozenset({"__name__", "__doc__", "__all__", "__slots__"})
TORCH_HOOKS = frozenset({"__torch_function__", "__torch_dispatch__"})  # would intercept the harness's ops


def is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _under(path: str, prefixes) -> bool:
    return any(path == p or path.startswith(p + ".") for p in prefixes)


def forbidden_attribute(name: str) -> str | None:
    """Why reading or writing an attribute of this name is forbidden on any object; None if it is not."""
    if is_dunder(name):
        return None if name in ALLOWED_DUNDER_ATTRS else f"access to dunder attribute {name!r} is forbidden"
    if name.lstrip("_") in FORBIDDEN_MODULE_ATTRS:
        why = "it names a module that reaches the interpreter or the system"
    elif name in INTROSPECTION_ATTRS:
        why = "frame, traceback and code introspection"
    elif name in CODE_FROM_STRING_ATTRS:
        why = "it evaluates strings as code"
    elif name in NATIVE_AND_FILE_ATTRS:
        why = "native code, raw memory, files or imports by another name"
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
    kind: str  # "module", "class" or "function" (lambdas and comprehensions too)
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
        self.bindings = Counter()  # bindings of each name in every scope, global declarations too
        self.unstable = set()  # module names deleted at module level or declared global
        self.module_binding = {}  # name -> first top-level statement that always binds it
        for i, stmt in enumerate(tree.body):
            self._walk([stmt], self.module, i)
            for name in _always_binds(stmt):
                self.module_binding.setdefault(name, i)
        self.constants = {
            s.targets[0].id: s.value.value
            for s in tree.body
            if isinstance(s, ast.Assign)
            and len(s.targets) == 1
            and isinstance(s.targets[0], ast.Name)
            and isinstance(s.value, ast.Constant)
            and isinstance(s.value.value, str)
            and self.bindings[s.targets[0].id] == 1
        }

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
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "getattr"
                and node.args
            ):
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
            self.flag(
                node,
                f"assignment to an attribute of imported module {self.root(obj)!r} "
                f"(.{attr}) — monkeypatching torch or the harness is forbidden",
            )

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
                self.flag(
                    node,
                    f"import of {node.module}.{alias.name} is forbidden (file access, native code or dispatch hooks)",
                )

    def visit_Name(self, node: ast.Name) -> None:
        builtin = (
            isinstance(node.ctx, ast.Load)
            and (node.id in FORBIDDEN_NAMES or node.id in CHECKED_CALLS)
            and self.scopes.reads_builtin(node)
        )
        if builtin and node.id in FORBIDDEN_NAMES:
            self.flag(node, f"use of the builtin {node.id}() is forbidden")
        elif builtin and id(node) not in self.direct_calls:
            self.flag(node, f"{node.id} used other than as a direct call with {CHECKED_CALLS[node.id]}")
        elif is_dunder(node.id) and node.id not in ALLOWED_DUNDER_NAMES:
            self.flag(node, f"use of {node.id} is forbidden")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.check_attr(node, node.value, node.attr, store=not isinstance(node.ctx, ast.Load))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func, args = node.func, node.args
        if (
            isinstance(func, ast.Name)
            and func.id in CHECKED_CALLS
            and self.scopes.reads_builtin(func)
            and len(args) >= (1 if func.id == "vars" else 2)
            and not any(isinstance(a, ast.Starred) for a in args)
        ):
            self.direct_calls.add(id(func))
            if func.id == "vars":
                if self.root(args[0]):
                    self.flag(
                        node,
                        f"vars() of imported module {self.root(args[0])!r} is forbidden "
                        f"(its namespace holds what attribute access may not reach)",
                    )
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
    tuple, set or dict of constants only, nested or signed, counted as its source text; and of each
    comment and each line's trailing whitespace, text that code can read back from its own file."""

    def constant_only(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.UnaryOp):
            return isinstance(node.operand, ast.Constant)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return all(map(constant_only, node.elts))
        return (
            isinstance(node, ast.Dict)
            and all(k is not None and constant_only(k) for k in node.keys)
            and all(map(constant_only, node.values))
        )

    found, todo = [], [ast.parse(source)]
    while todo:
        node = todo.pop()
        flag = isinstance(node, ast.Constant) and any(node.value is v for v in (None, True, False))  # 1 == True
        if constant_only(node) and not flag:
            found.append((len((ast.get_source_segment(source, node) or "").encode()), node.lineno))
        else:
            todo.extend(ast.iter_child_nodes(node))
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found.append((len(token.string.encode()), token.start[0]))
    for number, line in enumerate(source.splitlines(), 1):
        if trailing := len(line) - len(line.rstrip(" \t\f")):
            found.append((trailing, number))
    return found


def check_literal_data(ctx: CheckContext) -> str:
    try:
        found = literal_data(ctx.source)
    except SyntaxError as e:
        raise CheckFailed(f"literal_data: line {e.lineno}: syntax error: {e.msg}") from None
    total, limit = sum(n for n, _ in found), ctx.max_literal_bytes
    if total > limit:
        size, line = max(found)
        raise CheckFailed(
            f"literal_data: the source holds {total:,} bytes of literal data (constants, tables of "
            f"constants, comments) > the task's limit of {limit:,} (max_literal_bytes in [limits]); the largest, "
            f"{size:,} bytes, starts at line {line}: a table in the source can carry answers that the "
            f"model should learn"
        )
    return f"{total:,} bytes of literal data, within {limit:,}"


STATIC = ("source_policy", "literal_data")  # checks of the source alone: they run when the import fails too
