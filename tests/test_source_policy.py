"""Specification of the source policy (autoresearch_bench.checks.source_problems): what a candidate
file may not contain, and the honest code it must not reject.

Cheats are a few lines appended to the honest tiny candidate, the last of them the one reported;
honest variants are small edits of the real gpt_pretrain and tiny candidates, checked whole. Both use
gpt_pretrain's allowed imports.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from autoresearch_bench.checks import CheckContext, CheckFailed, check_source_policy, source_problems
from autoresearch_bench.task import load_task

ROOT = Path(__file__).resolve().parent.parent
GPT_TASK = load_task(ROOT / "tasks" / "gpt_pretrain" / "task.toml")
IMPORTS = GPT_TASK.imports
GPT = GPT_TASK.train_file.read_text()
TINY = (ROOT / "tests" / "tiny_task" / "train.py").read_text()


def policy_failure(source: str) -> str:
    with pytest.raises(CheckFailed) as failure:
        check_source_policy(
            CheckContext(build_model=None, cfg={}, source=source, allowed_imports=IMPORTS, max_params=None)
        )
    return str(failure.value)


# --- shipped candidates -------------------------------------------------------------------------


def shipped_candidates() -> list:
    """Every candidate the project ships (task train.py files and candidates/), with its task's imports."""
    tasks = [load_task(t) for t in [*ROOT.glob("tasks/*/task.toml"), ROOT / "tests" / "tiny_task" / "task.toml"]]
    return [
        pytest.param(path, task.imports, id=str(path.relative_to(ROOT)))
        for task in tasks
        for path in task.candidate_files()
    ] + [pytest.param(ROOT / "tests" / "cheats" / "models.py", ("torch", "math"), id="tests/cheats/models.py")]


@pytest.mark.parametrize("path, imports", shipped_candidates())
def test_accepts_shipped_candidates(path, imports):
    assert source_problems(path.read_text(), imports) == []


# --- cheats -------------------------------------------------------------------------------------

CHEATS = [
    # lines appended to the tiny candidate, substring of the reason given for the last one
    # imports
    ("import os", "import of 'os' is forbidden"),
    ("import sys", "import of 'sys' is forbidden"),
    ("import subprocess", "import of 'subprocess' is forbidden"),
    ("from os import path", "import of 'os' is forbidden"),
    ("from autoresearch_bench import checks", "import of 'autoresearch_bench' is forbidden"),
    ("import autoresearch_bench.evaluate as ev", "import of 'autoresearch_bench.evaluate' is forbidden"),
    ("import importlib", "import of 'importlib' is forbidden"),
    ("import numpy", "import of 'numpy' is not allowed (allowed: torch"),
    ("from . import helpers", "relative import"),
    ("from typing import sys", "attribute 'sys' is forbidden (it names a module"),
    ("from torch.utils.cpp_extension import load_inline", "torch.utils.cpp_extension"),
    # forbidden modules through any attribute chain of an allowed one
    ("modules = torch.sys.modules", "attribute 'sys' is forbidden (it names a module"),
    ("import typing\nsys = typing.sys", "attribute 'sys' is forbidden"),
    ("import contextlib\nenviron = contextlib.os.environ", "attribute 'os' is forbidden"),
    ("import functools\nsys = functools.sys", "attribute 'sys' is forbidden"),
    ("import collections.abc\nsys = collections.abc.sys", "attribute 'sys' is forbidden"),
    ("import collections\nsys = collections._sys", "attribute '_sys' is forbidden"),
    ("F.torch.os.system('true')", "attribute 'os' is forbidden"),
    ("import functools\nsys = getattr(functools, 'sys')", "attribute 'sys' is forbidden"),
    ("match torch:\n    case object(sys=found): pass", "attribute 'sys' is forbidden"),
    ("namespace = torch.__dict__", "dunder attribute '__dict__'"),
    ("namespace = vars(torch)", "vars() of imported module 'torch'"),
    # frames, tracebacks, code objects
    ("import typing as t\nframe = t.sys._getframe(1)", "attribute '_getframe' is forbidden (frame, traceback"),
    ("code = (lambda: 0).__code__", "dunder attribute '__code__'"),
    ("def peek(error):\n    return error.__traceback__.tb_frame.f_back.f_locals", "(frame, traceback and code"),
    ("def peek(tb):\n    return tb.tb_frame.f_back.f_globals", "(frame, traceback and code introspection)"),
    ("steps = (i for i in range(3))\ncaller = steps.gi_frame.f_back", "(frame, traceback and code introspection)"),
    # strings that become code
    ("import typing\nhints = typing.get_type_hints(build_model)", "'get_type_hints' is forbidden (it evaluates"),
    ("import functools\nby_type = functools.singledispatch(print)", "'singledispatch' is forbidden (it evaluates"),
    ("mod = __import__('o' + 's')", "__import__() is forbidden"),
    ("eval('1 + 1')", "eval() is forbidden"),
    ("exec('x = 1')", "exec() is forbidden"),
    ("code = compile('x = 1', 'f', 'exec')", "the builtin compile() is forbidden"),
    # the builtins, wherever the name is not a binding of the candidate's own
    ("data = open('/data/val.bin', 'rb').read()", "the builtin open() is forbidden"),
    ("def peek():\n    return open('/data/val.bin').read()", "the builtin open() is forbidden"),
    ("open = open", "the builtin open() is forbidden"),
    ("def read(path, open=open): return open(path).read()", "the builtin open() is forbidden"),
    ("if False:\n    open = print\ndata = open('/data/val.bin')", "the builtin open() is forbidden"),
    ("open = print\ndel open\ndata = open('/data/val.bin')", "the builtin open() is forbidden"),
    ("data = [open(path) for path in ['/data/val.bin']]", "the builtin open() is forbidden"),
    ("g = globals()", "globals() is forbidden"),
    ("here = locals()", "locals() is forbidden"),
    ("here = vars()", "vars used other than as a direct call with one object as argument"),
    ("b = __builtins__", "__builtins__ is forbidden"),
    # monkeypatching torch, computed attribute names, file access, dispatch hooks
    ("torch.nn.functional.cross_entropy = lambda *a, **k: torch.zeros(())", "imported module 'torch'"),
    ("F.cross_entropy = lambda *a, **k: torch.zeros(())", "imported module 'torch.nn.functional'"),
    ("torch.allclose = lambda *a, **k: True", "(.allclose) — monkeypatching"),
    ("del torch.equal", "(.equal) — monkeypatching"),
    ("torch.Tensor.__eq__ = lambda a, b: True", "dunder attribute '__eq__'"),
    ("setattr(torch, 'allclose', lambda *a: True)", "imported module 'torch'"),
    ("NAME = 'allclose'\nsetattr(torch, NAME, lambda *a: True)", "(.allclose) — monkeypatching"),
    ("setattr(F, 'cross' + '_entropy', len)", "setattr() with a computed name"),
    ("def act(name):\n    return getattr(torch, name)", "getattr() with a computed name on imported module 'torch'"),
    ("NAME = 'gelu'\nNAME = 'load'\nload = getattr(torch, NAME)", "getattr() with a computed name"),
    ("setattr(*[F, 'cross_entropy', len])", "setattr used other than as a direct call"),
    ("patch = setattr", "setattr used other than as a direct call"),
    ("g = F.cross_entropy.__globals__", "dunder attribute '__globals__'"),
    ("g = getattr(F.cross_entropy, '__globals__')", "dunder attribute '__globals__'"),
    ("subs = object.__subclasses__()", "dunder attribute '__subclasses__'"),
    ("state = torch.load('/data/model.pt')", "torch.load is forbidden"),
    # the red team's routes to libc and to the candidate's own file (tests/cheats/REDTEAM.md)
    ("from torch._inductor.codecache import CDLL, c_void_p", "attribute 'CDLL' is forbidden (native code"),
    ("import torch._inductor.codecache as cc\nlibc = cc.CDLL(None)", "attribute 'CDLL' is forbidden"),
    ("raw = torch.UntypedStorage.from_file('/scratch/candidate.py')", "attribute 'from_file' is forbidden"),
    ("from torch.xpu import byref", "attribute 'byref' is forbidden"),
    ("NAME = 'load'\nstate = getattr(torch, NAME)('/data/model.pt')", "torch.load is forbidden"),
    ("state = torch.serialization.load('/data/model.pt')", "use of torch.serialization is forbidden"),
    (
        "def __torch_function__(cls, func, types, args=(), kwargs=None): pass",
        "defining __torch_function__ is forbidden",
    ),
]


@pytest.mark.parametrize("snippet, reason", CHEATS, ids=[s for s, _ in CHEATS])
def test_rejects(snippet, reason):
    source = TINY + "\n" + snippet + "\n"
    text = policy_failure(source)
    assert text.startswith(f"source_policy: line {source.count(chr(10))}: "), text
    assert reason in text and "\n" not in text, text


# --- where a name means the builtin -----------------------------------------------------------


@pytest.mark.parametrize(
    "source, lines",
    [
        ("def peek():\n    return open('/data/val.bin').read()\nopen = print\n", [2]),  # peek may run before
        ("open = print\ndef peek():\n    return open('/data/val.bin').read()\n", []),
        (
            "open = print\ndef reset():\n    global open\n    del open\ndef peek():\n    return open('x')\n",
            [6],
        ),  # unbound
        ("def peek():\n    open = print\n    def inner():\n        return open('x')\n    return inner\n", []),
        ("def peek():\n    global open\n    open = print\n    return open('x')\n", [4]),
        ("class Peek:\n    def read(self, open=print):\n        return open('x')\n", []),
        ("class Peek:\n    open = print\n    def read(self):\n        return open('x')\n", [4]),  # methods skip it
    ],
)
def test_a_builtin_is_shadowed_only_by_a_binding_that_always_runs_first(source, lines):
    """The reads of `open` flagged: a function's own or enclosing local shadows the builtin, a
    module-level binding only for code defined after it; class attributes never do."""
    problems = source_problems(source, IMPORTS)
    assert [line for line, text in problems if "builtin open()" in text] == lines, problems


def test_reports_syntax_errors_and_counts_the_rest():
    assert source_problems("def f(:\n", IMPORTS)[0][1].startswith("syntax error")
    assert " (and 2 more)" in policy_failure("import os\nimport sys\nopen('x')\n")


# --- forbidden modules under other names ------------------------------------------------------

FIND_UNFLAGGED_MODULES = """
import sys, types
import torch, torch.nn.functional, torch.nn.attention.flex_attention, torch._dynamo, torch._inductor.config
from autoresearch_bench.checks.source import FORBIDDEN_MODULES, FORBIDDEN_PATHS, _under, forbidden_attribute
allowed = sys.argv[1:]
for name in allowed:
    __import__(name)
importable = [m for name, m in list(sys.modules.items()) if name.split(".")[0] in allowed and m is not None
              and not any(map(forbidden_attribute, name.split(".")[1:]))
              and not _under(name, FORBIDDEN_PATHS)]
seen, todo = {id(m) for m in importable}, [(m, m.__name__) for m in importable]
while todo:
    module, path = todo.pop()
    for attr, value in list(vars(module).items()):
        if not isinstance(value, types.ModuleType) or forbidden_attribute(attr):
            continue
        if value.__name__.split(".")[0] in FORBIDDEN_MODULES:
            print(f"{path}.{attr} is {value.__name__}")
        elif id(value) not in seen:
            seen.add(id(value))
            todo.append((value, f"{path}.{attr}"))
"""


def test_no_forbidden_module_is_reachable_under_an_unflagged_attribute_name():
    """A walk of every module a candidate can import or reach through attributes (torch._dynamo too,
    which torch.compile imports): each attribute holding a forbidden module has a flagged name."""
    run = subprocess.run(
        [sys.executable, "-c", FIND_UNFLAGGED_MODULES, *IMPORTS], capture_output=True, text=True, cwd=ROOT
    )
    assert run.returncode == 0 and run.stdout == "", run.stdout + run.stderr


# --- honest variants ----------------------------------------------------------------------------

HONEST_VARIANTS = {
    # name: (candidate, [(text of the real file, its replacement)])
    "sgd_with_nesterov": (
        TINY,
        [
            (
                'torch.optim.AdamW(model.parameters(), lr=ctx.cfg["lr"])',
                'torch.optim.SGD(model.parameters(), lr=ctx.cfg["lr"], momentum=0.9, nesterov=True)',
            )
        ],
    ),
    "custom_init": (
        TINY,
        [
            (
                "        nn.init.normal_(self.head.weight, std=0.02 / math.sqrt(d))\n",
                "        self.apply(init_weights)\n",
            ),
            (
                "class TinyGPT(nn.Module):",
                "def init_weights(module):\n"
                "    if isinstance(module, (nn.Linear, nn.Embedding)):\n"
                "        nn.init.trunc_normal_(module.weight, std=0.02)\n"
                "    if isinstance(module, nn.Linear) and module.bias is not None:\n"
                "        nn.init.zeros_(module.bias)\n\n\n"
                "class TinyGPT(nn.Module):",
            ),
        ],
    ),
    "activation_named_by_a_module_constant": (
        GPT,
        [
            ("VE_GATE_CHANNELS = 32", 'ACTIVATION = "gelu"\nVE_GATE_CHANNELS = 32'),
            ("F.relu(self.c_fc(x)).square()", "getattr(F, ACTIVATION)(self.c_fc(x)).square()"),
        ],
    ),
    "cosine_schedule": (
        GPT,
        [
            (
                "    cooldown = (1.0 - progress) / hp.warmdown_ratio\n"
                "    return cooldown + (1 - cooldown) * hp.final_lr_frac\n",
                "    cosine = 0.5 * (1 + math.cos(math.pi * progress))\n"
                "    return hp.final_lr_frac + (1 - hp.final_lr_frac) * cosine\n",
            )
        ],
    ),
    "tied_weights": (
        TINY,
        [
            (
                '        self.head = nn.Linear(d, cfg["vocab_size"], bias=False)\n',
                '        self.head = nn.Linear(d, cfg["vocab_size"], bias=False)\n'
                "        self.head.weight = self.tok.weight\n",
            )
        ],
    ),
    "label_smoothing": (TINY, [("y.flatten())", "y.flatten(), label_smoothing=0.1)")]),
    "grad_clipping": (
        TINY,
        [
            (
                "        loss.backward()\n",
                "        loss.backward()\n        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n",
            )
        ],
    ),
    "hand_written_sgd_step": (
        TINY,
        [
            ('    opt = torch.optim.AdamW(model.parameters(), lr=ctx.cfg["lr"])\n', ""),
            (
                "        opt.zero_grad(set_to_none=True)\n        loss.backward()\n        opt.step()\n",
                "        model.zero_grad(set_to_none=True)\n"
                "        loss.backward()\n"
                "        with torch.no_grad():\n"
                "            for p in model.parameters():\n"
                '                p.add_(p.grad, alpha=-ctx.cfg["lr"])\n',
            ),
        ],
    ),
    "itertools_cycle": (
        TINY,
        [
            ("import math\n", "import itertools\nimport math\n"),
            ("    for step, (x, y)", "    log_now = itertools.cycle([True] + [False] * 9)\n    for step, (x, y)"),
            (
                "        ctx.log(step=step, loss=loss.item())\n",
                "        if next(log_now):\n            ctx.log(step=step, loss=loss.item())\n",
            ),
        ],
    ),
    "functools_partial": (
        TINY,
        [
            ("import math\n", "import functools\nimport math\n"),
            (
                "    for step, (x, y)",
                "    criterion = functools.partial(F.cross_entropy, ignore_index=-1)\n    for step, (x, y)",
            ),
            ("loss = F.cross_entropy(", "loss = criterion("),
        ],
    ),
    "functools_lru_cache": (
        TINY,
        [
            ("import math\n", "import functools\nimport math\n"),
            (
                "class TinyGPT(nn.Module):",
                "@functools.lru_cache(maxsize=8)\n"
                "def positions(T, device):\n"
                "    return torch.arange(T, device=device)\n\n\n"
                "class TinyGPT(nn.Module):",
            ),
            (
                "self.pos(torch.arange(idx.shape[1], device=idx.device))",
                "self.pos(positions(idx.shape[1], idx.device))",
            ),
        ],
    ),
    "dataclass_config_printed_with_vars": (
        GPT,
        [("    hp = Hyper.from_cfg(ctx.cfg)\n", "    hp = Hyper.from_cfg(ctx.cfg)\n    print(vars(hp))\n")],
    ),
    "local_named_compile": (
        GPT,
        [
            (
                '    compiled = cuda and hp.compile and settings["compile"]\n',
                '    compile = cuda and hp.compile and settings["compile"]\n    compiled = compile\n',
            )
        ],
    ),
    "module_flag_named_compile": (
        TINY,
        [
            ("import torch.nn.functional as F\n", "import torch.nn.functional as F\n\ncompile = False\n"),
            ("    opt = torch.optim", "    if compile:\n        model = torch.compile(model)\n    opt = torch.optim"),
        ],
    ),
    "parameters_named_input_and_type": (
        GPT,
        [
            (
                "def norm(x):\n"
                "    # parameter-free RMSNorm everywhere (embeddings, pre-block, QK, final)\n"
                "    return F.rms_norm(x, (x.size(-1),))",
                "def norm(input, type=None):\n"
                "    input = input if type is None else input.to(type)\n"
                "    return F.rms_norm(input, (input.size(-1),))",
            )
        ],
    ),
    "parameter_named_eval": (
        TINY,
        [
            (
                "def train(ctx):",
                "def report(ctx, step, loss, eval=False):\n"
                '    ctx.log(step=step, loss=loss.item(), split="val" if eval else "train")\n\n\n'
                "def train(ctx):",
            ),
            ("        ctx.log(step=step, loss=loss.item())\n", "        report(ctx, step, loss)\n"),
        ],
    ),
    "collections_deque": (
        TINY,
        [
            ("import math\n", "import collections\nimport math\n"),
            ("    for step, (x, y)", "    recent = collections.deque(maxlen=20)\n    for step, (x, y)"),
            (
                "        ctx.log(step=step, loss=loss.item())\n",
                "        recent.append(loss.item())\n        ctx.log(step=step, loss=sum(recent) / len(recent))\n",
            ),
        ],
    ),
    "typing_named_tuple": (
        TINY,
        [
            ("import math\n", "import math\nimport typing\n"),
            (
                "def build_model(cfg):",
                "class Batch(typing.NamedTuple):\n    x: torch.Tensor\n    y: torch.Tensor\n\n\ndef build_model(cfg):",
            ),
            (
                '    for step, (x, y) in enumerate(ctx.batches(ctx.cfg["batch_size"])):\n'
                "        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())\n",
                '    for step, pair in enumerate(ctx.batches(ctx.cfg["batch_size"])):\n'
                "        batch = Batch(*pair)\n"
                "        loss = F.cross_entropy(model(batch.x).flatten(0, 1), batch.y.flatten())\n",
            ),
        ],
    ),
    "settings_and_idioms": (
        TINY,
        [
            (
                "def build_model(cfg):",
                "torch.backends.cuda.matmul.allow_tf32 = True\n"
                "torch._inductor.config.coordinate_descent_tuning = True\n\n\n"
                "class Config:\n"
                "    def __init__(self, **kw):\n"
                "        super().__init__()\n"
                "        for key, value in kw.items():\n"
                "            setattr(self, key, value)\n"
                '        self.name = self.__class__.__name__ + str(getattr(self, "n_embd", 0))\n\n\n'
                "def build_model(cfg):",
            ),
            (
                "    return model\n",
                '    return model\n\n\nif __name__ == "__main__":\n    print(build_model.__name__)\n',
            ),
        ],
    ),
}


@pytest.mark.parametrize("name", list(HONEST_VARIANTS))
def test_accepts_honest_variant(name):
    source, edits = HONEST_VARIANTS[name]
    for old, new in edits:
        assert source.count(old) == 1, f"the real candidate changed: {old!r}"
        source = source.replace(old, new)
    compile(source, name, "exec")  # the edited file is valid Python
    assert source_problems(source, IMPORTS) == []
