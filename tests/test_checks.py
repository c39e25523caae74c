"""Specification of autoresearch_bench.checks: each cheat is caught by the check named beside it,
with a message that says what it did, and honest candidates pass every check.

The toy candidates live in tests/cheats/models.py; the source policy has its own specification,
tests/test_source_policy.py.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cheats import models as M

from autoresearch_bench import checks
from autoresearch_bench.checks import CHECKS, CheckContext, CheckFailed
from autoresearch_bench.task import load_task

ROOT = Path(__file__).resolve().parent.parent
HONEST_SOURCE = (ROOT / "tests" / "cheats" / "models.py").read_text()
ALLOWED = ("torch", "math", "time", "dataclasses", "functools")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and do not fight other test processes for cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def context(build_model=M.TinyGPT, seed=0, source=HONEST_SOURCE, max_params=2_000_000, **kw) -> CheckContext:
    return CheckContext(
        build_model=build_model,
        cfg=dict(M.CFG),
        source=source,
        allowed_imports=ALLOWED,
        max_params=max_params,
        seed=seed,
        **kw,
    )


# --- no false positives -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("model", [M.TinyGPT, M.ZeroInitGPT, M.DropoutGPT], ids=lambda m: m.__name__)
@pytest.mark.parametrize("name", list(CHECKS))
def test_honest_model_passes(name, model, seed):
    detail = CHECKS[name](context(model, seed, examples=20))
    assert isinstance(detail, str) and detail


def test_every_check_named_in_a_task_exists():
    for toml in [*ROOT.glob("tasks/*/task.toml"), ROOT / "tests" / "tiny_task" / "task.toml"]:
        task = load_task(toml)
        assert set(task.checks) <= set(CHECKS), (task.name, set(task.checks) - set(CHECKS))


def test_param_limit_without_limit_passes():
    assert CHECKS["param_limit"](context(M.Huge, max_params=None)) == "no limit"


# --- each cheat is caught by its check ----------------------------------------------------------

CHEATS = [
    # model, check that must catch it, substring of the message
    (M.NonCausal, "causality", "the model sees the future"),
    (M.NonCausalInEvalOnly, "causality", "eval mode"),
    (M.CausalOnlyAtBatch1, "causality", "causality: logits at position"),
    (M.CausalOnlyForShortT, "causality", "causality: logits at position"),
    (M.CausalOnlyForEvenT, "causality", "causality: logits at position"),
    (M.HiddenLeak, "causality", "perturbed weights"),
    (M.ReadsNextToken, "causality", "the model sees the future"),
    (M.BatchMeanLeak, "batch_independence", "rows of a batch leak into each other"),
    (M.ReadsNextToken, "initial_loss", "the next token leaks into the logits"),
    (M.ConstantLogits, "overfit_batch", "does not learn from its input"),
    (M.PositionOnly, "overfit_batch", "does not learn from its input"),
    (M.NoParameters, "overfit_batch", "no trainable parameters"),
    (M.LastPositionOnly, "logits_shape", "expected [2, 64, 2048]"),
    (M.NaNLogits, "finite", "NaN"),
    (M.Huge, "param_limit", "> limit 2,000,000"),
    (M.CarriesState, "deterministic_eval", "keeps state between calls"),
    (M.SharperInEval, "eval_train_consistency", "branches on self.training"),
]


@pytest.mark.parametrize("model, check, message", CHEATS, ids=[f"{m.__name__}-{c}" for m, c, _ in CHEATS])
def test_cheat_is_caught(model, check, message):
    with pytest.raises(CheckFailed) as failure:
        CHECKS[check](context(model, examples=20))
    text = str(failure.value)
    assert text.startswith(f"{check}: ") and message in text and "\n" not in text, text


def test_high_initial_loss_passes_with_a_warning():
    """Large logits at init (PyTorch's default init gave 85 nats on char_lm) cost training steps but
    cheat nobody: the check passes, and its detail says what is wrong and what to do."""
    detail = CHECKS["initial_loss"](context(M.Overconfident))
    assert re.fullmatch(
        r"warning: \d+\.\d nats at init on random tokens, far above ln\(vocab\) 7\.62 — large "
        r"initial logits waste training steps; scale the output layer down",
        detail,
    ), detail


def test_leak_behind_zero_init_is_invisible_without_perturbation():
    """Why causality also runs on perturbed weights: at an autoresearch-style init the leak is silent."""
    torch.manual_seed(0)
    checks.causality_on(M.HiddenLeak(M.CFG), vocab=2048, T=64, examples=10, seed=0)


def test_message_names_the_first_leaking_position_and_the_case():
    with pytest.raises(CheckFailed) as failure:
        checks.causality_on(M.NonCausal(M.CFG), vocab=2048, T=64, examples=5, seed=0)
    found = re.search(
        r"position (\d+) changed when tokens after position (\d+) changed .*B=\d, T=\d+, train mode", str(failure.value)
    )
    assert found and int(found[1]) <= int(found[2]), failure.value


def test_helpers_work_on_a_trained_model_and_restore_its_mode():
    model = M.TinyGPT(M.CFG)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(2048, (4, 33))
    for _ in range(3):
        loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.train()
    assert "max |Δ|" in checks.causality_on(model, 2048, 64, examples=5, seed=3)
    assert "max |Δ|" in checks.batch_independence_on(model, 2048, 64, seed=3)
    assert model.training
    model.eval()
    checks.causality_on(model, 2048, 64, examples=5)
    assert not model.training


def test_helpers_catch_cheats_on_any_model():
    with pytest.raises(CheckFailed, match="^causality"):
        checks.causality_on(M.NonCausal(M.CFG), 2048, 64, examples=5)
    with pytest.raises(CheckFailed, match="^batch_independence"):
        checks.batch_independence_on(M.BatchMeanLeak(M.CFG), 2048, 64)


def test_build_model_must_return_a_module():
    with pytest.raises(CheckFailed, match="not a torch.nn.Module"):
        CHECKS["logits_shape"](context(lambda cfg: "a model"))


# --- tamper detection ---------------------------------------------------------------------------

SNAPSHOT_THEN_COMPILE = """
import sys, torch
from autoresearch_bench import checks
from cheats import models as M
snapshot = checks.snapshot_critical()
assert "torch._dynamo" not in sys.modules, "the snapshot imported torch._dynamo: this test would prove nothing"
torch.compile(lambda x: x * 2, backend="eager")(torch.ones(3))  # imports torch._dynamo, which wraps manual_seed
weight = torch.ones(3, requires_grad=True)
opt = torch.optim.AdamW([weight])  # the first optimizer built wraps AdamW.step
weight.sum().backward()
opt.step()
checks.CHECKS["causality"](checks.CheckContext(build_model=M.TinyGPT, cfg=dict(M.CFG), source="", allowed_imports=(),
                                               max_params=None, seed=0, examples=2))
checks.verify_untampered(snapshot)
"""


def test_untouched_snapshot_verifies_even_after_torch_compile_and_a_first_optimizer():
    """In a fresh interpreter, as an evaluation or check process starts: what torch does on its own
    after the snapshot (importing torch._dynamo, wrapping an optimizer's step) is not tampering."""
    run = subprocess.run(
        [sys.executable, "-c", SNAPSHOT_THEN_COMPILE], cwd=ROOT / "tests", capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr


def _fake(*args, **kwargs):
    return True


@pytest.mark.parametrize(
    "owner, name, key",
    [
        (torch, "allclose", "torch.allclose"),
        (F, "cross_entropy", "torch.nn.functional.cross_entropy"),
        (torch.Tensor, "__eq__", "torch.Tensor.__eq__"),
        (checks, "causality_on", "autoresearch_bench.checks.causality_on"),
        (checks, "TOL_FP32", "autoresearch_bench.checks.TOL_FP32"),
        (CHECKS, "causality", "checks.CHECKS['causality']"),
    ],
)
def test_replacing_a_critical_function_is_detected(owner, name, key):
    snapshot = checks.snapshot_critical()
    is_dict = isinstance(owner, dict)
    saved = owner.get(name) if is_dict else vars(owner).get(name)
    try:
        if is_dict:
            owner[name] = _fake
        else:
            setattr(owner, name, _fake)
        with pytest.raises(CheckFailed, match=rf"^tamper: {re.escape(key)} was replaced"):
            checks.verify_untampered(snapshot)
    finally:
        if is_dict:
            owner[name] = saved
        elif saved is None:
            delattr(owner, name)  # inherited from a base class: removing the override restores it
        else:
            setattr(owner, name, saved)
    checks.verify_untampered(snapshot)


# --- the source is not a data channel -----------------------------------------------------------


def test_every_task_s_own_train_py_passes_literal_data():
    for toml in ROOT.glob("tasks/*/task.toml"):
        task = load_task(toml)
        assert "literal_data" in task.checks, task.name
        source = (task.root / task.editable[0]).read_text()
        assert "bytes of literal data, within" in CHECKS["literal_data"](
            context(source=source, max_literal_bytes=task.max_literal_bytes)
        )


@pytest.mark.parametrize("packing", ["one base64 string", "a tuple per residue", "hex in comments"])
def test_a_candidate_that_embeds_the_answer_table_fails_literal_data(packing):
    import base64

    from autoresearch_bench.data import modular_equations

    task = load_task(ROOT / "tasks/modular_add")
    spec = task.profile("cpu").data
    _, val = modular_equations(spec["modulus"], spec["operation"], spec["train_fraction"], spec["seed"])
    answers = val[:, 5].tolist()  # the validation answers, in order: what a cheat would look up
    if packing == "one base64 string":
        table = f"ANSWERS = {base64.b64encode(bytes(answers)).decode()!r}\n"
    elif packing == "a tuple per residue":  # small tables, none large by itself
        table = "".join(f"ANSWERS_{i} = {tuple(answers[i : i + 97])}\n" for i in range(0, len(answers), 97))
    else:  # no constant at all: the model reads its own file back (red team: reads_its_own_comments)
        table = "".join(f"# {bytes(answers[i : i + 64]).hex()}\n" for i in range(0, len(answers), 64))
    cheat = (task.root / "train.py").read_text() + "\n" + table
    with pytest.raises(
        CheckFailed,
        match=r"^literal_data: the source holds [\d,]+ bytes of literal data \(constants, "
        r"tables of constants, comments\) > the task's limit of 4,096 \(max_literal_bytes",
    ):
        CHECKS["literal_data"](context(source=cheat, max_literal_bytes=task.max_literal_bytes))


def test_literal_data_counts_tables_of_constants_as_their_source_text():
    sizes = checks.literal_data('"""doc"""\nX = [1, -2, (3, 4.5)]\nY = {"a": b"\\x00"}\nZ = f(10) if True else None\n')
    assert sorted(sizes) == [(2, 4), (9, 1), (14, 3), (17, 2)]  # None and True are not data


def test_literal_data_counts_comments_and_trailing_whitespace_but_not_indentation():
    sizes = checks.literal_data("def f():\n    return 1  # one\nX = 2 \t\n")
    assert sorted(sizes) == [(1, 2), (1, 3), (2, 3), (5, 2)]  # 1, 2, " \t", "# one"
