"""The fixed task suite: byte and modular data, scored positions, metrics and directions, --ar-tasks."""

import csv
import importlib.util
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from autoresearch_bench import data
from autoresearch_bench.candidate import Candidate
from autoresearch_bench.context import TrainContext
from autoresearch_bench.data import DataError, eval_rows_and_mask, eval_split, modular_equations, prepare
from autoresearch_bench.device import choose_settings
from autoresearch_bench.protocol import ScorerSpec
from autoresearch_bench.scorer import Violation, score
from autoresearch_bench.session import CandidateResult
from autoresearch_bench.table import summary_rows
from autoresearch_bench.task import METRICS, TaskError, find_tasks, load_task

TASKS = Path(__file__).parent.parent / "tasks"
QUIET = dict(log=lambda m: None)
MODULAR = {"source": "modular", "modulus": 13, "operation": "+", "train_fraction": 0.5, "vocab_size": 16, "seq_len": 5}


def test_the_suite_has_three_tasks_of_different_kinds_each_with_cpu_and_gpu_profiles():
    tasks = {t.name: t for t in find_tasks(TASKS)}
    assert {"gpt_pretrain", "char_lm", "modular_add"} <= set(tasks)
    assert {(t.metric, t.direction) for t in tasks.values()} >= {("val_bpb", "lower"), ("val_accuracy", "higher")}
    for task in tasks.values():
        assert {p.device for p in task.profiles.values()} == {"cpu", "cuda"}, task.name
    assert tasks["char_lm"].profile("cpu").budget_s <= 30 and tasks["modular_add"].profile("cpu").budget_s <= 20


@pytest.mark.parametrize(
    "op, f",
    [
        ("+", lambda a, b, p: (a + b) % p),
        ("-", lambda a, b, p: (a - b) % p),
        ("*", lambda a, b, p: a * b % p),
        ("/", lambda a, b, p: a * pow(b, -1, p) % p),
    ],
)
def test_modular_equations_cover_every_pair_once_and_split_by_seed(op, f):
    train, val = modular_equations(13, op, 0.3, seed=0)
    rows = np.concatenate([train, val])
    pairs = {(a, b) for _, a, _, b, _, _ in rows.tolist()}
    assert len(pairs) == len(rows) == 13 * (12 if op == "/" else 13)
    assert all(c == f(a, b, 13) and (bos, o, eq) == (15, 13, 14) for bos, a, o, b, eq, c in rows.tolist())
    assert len(train) == round(0.3 * len(rows))
    again, _ = modular_equations(13, op, 0.3, seed=0)
    other, _ = modular_equations(13, op, 0.3, seed=1)
    assert np.array_equal(train, again) and not np.array_equal(train, other)


def test_modular_source_prepares_token_files_and_a_decoding_tokenizer():
    prepared = prepare(MODULAR, "suite_modular", **QUIET)
    assert prepared.vocab_size == 16 and prepared.bos_id == 15
    tokens = np.load(prepared.train_tokens)
    assert len(tokens) == 6 * round(0.5 * 169) and prepared.n_val_tokens == 6 * (169 - round(0.5 * 169))
    text = data.load_tokenizer(prepared.tokenizer_dir).decode(tokens[:6].tolist())
    a, b, c = (int(n) for n in text.removeprefix("<|bos|>").replace("+", "=").split("="))
    assert (a + b) % 13 == c


@pytest.mark.parametrize(
    "change, message",
    [
        ({"vocab_size": 20}, "set vocab_size = 16"),
        ({"operation": "/", "modulus": 12, "vocab_size": 15}, "needs a prime modulus"),
        ({"operation": "^"}, "operation must be one of"),
        ({"train_fraction": 1.0}, "train_fraction must be between 0 and 1"),
        ({"tokenizer": "bytes"}, "unknown [data] keys ['tokenizer']"),
        ({"score": "last"}, "score must be one of tokens, answers"),
    ],
)
def test_bad_modular_settings_say_what_to_do(change, message):
    with pytest.raises(DataError) as e:
        prepare({**MODULAR, **change}, "suite_modular", **QUIET)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_answers_mask_scores_only_the_last_token_of_each_document():
    prepared = prepare(MODULAR, "suite_modular", **QUIET)
    rows, answers = eval_rows_and_mask(prepared.val_tokens, 40, 5, score="answers")
    assert rows.shape == (8, 6) and (rows[:, 0] == 15).all()
    assert answers.tolist() == [[False, False, False, False, True]] * 8
    _, tokens = eval_rows_and_mask(prepared.val_tokens, 40, 5)
    assert tokens.all()  # no BOS among the targets of one-equation rows


def test_tokens_mask_leaves_out_bos_targets_of_packed_documents(tmp_path):
    path = tmp_path / "t.npy"
    data.tokens.save_tokens(path, [np.array([9, 1, 2, 9, 3, 9, 4, 5, 6], dtype=np.uint16)], np.array([0, 3, 5, 9]))
    rows, tokens = eval_rows_and_mask(path, 8, 8)
    _, answers = eval_rows_and_mask(path, 8, 8, score="answers")
    targets = rows[0, 1:]
    assert targets[tokens[0]].tolist() == [t for t in targets.tolist() if t != 9]
    assert targets[answers[0]].tolist() == [6, 2, 3]  # each document's last token (best fit: longest first)


def test_byte_tokenizer_is_the_identity_on_utf8_bytes_and_max_train_chars_keeps_validation():
    spec = {"source": "embedded", "tokenizer": "bytes", "vocab_size": 257, "seq_len": 64}
    small = prepare({**spec, "max_train_chars": 200_000}, "suite_bytes", **QUIET)
    full = prepare(spec, "suite_bytes", **QUIET)
    enc = data.load_tokenizer(small.tokenizer_dir)
    text = "In the beginning — ü 你好\n"
    assert enc.encode_ordinary(text) == list(text.encode()) and small.bos_id == 256 and enc.n_vocab == 257
    assert data.token_bytes(small.tokenizer_dir).tolist() == [1] * 256 + [0]
    assert 200_000 <= small.n_train_tokens < 230_000 < full.n_train_tokens  # + the chapter that crosses
    assert np.array_equal(np.load(small.val_tokens), np.load(full.val_tokens))
    with pytest.raises(DataError, match="set vocab_size = 257"):
        prepare({**spec, "vocab_size": 300}, "suite_bytes", **QUIET)


ORACLE = """
import torch

P, VOCAB, WRONG = {p}, {vocab}, {wrong}

class AddOracle(torch.nn.Module):
    \"\"\"Causal by construction: only the last position ('=') reads a and b, and predicts a + b mod p.\"\"\"
    def forward(self, idx):
        logits = torch.zeros(*idx.shape, VOCAB)
        if idx.shape[1] == 5:
            answer = (idx[:, 1] + idx[:, 3] + int(WRONG)) % P
            logits[torch.arange(len(idx)), 4, answer] = 10.0
        return logits

class Peek(AddOracle):
    def forward(self, idx):  # every row's logits scaled by the batch's sum of b: not batch independent
        return super().forward(idx) * (1 + idx[:, 3].sum().float() / 1000)

class Uniform(torch.nn.Module):
    def forward(self, idx):
        return torch.zeros(*idx.shape, VOCAB)

def build_model(cfg):
    return {model}()

def train(ctx):
    return build_model(ctx.cfg)
"""


def scored(tmp_path, prepared, metric, score_mode, seq_len, model="AddOracle", p=13, wrong=False) -> dict:
    """The scorer's result for a candidate whose build_model gives `model` (no weights to train)."""
    candidate = tmp_path / f"{model}_{wrong}.py"
    candidate.write_text(ORACLE.format(p=p, vocab=prepared.vocab_size, wrong=wrong, model=model))
    torch.save({}, tmp_path / "model.pt")
    models = tmp_path / f"models_{model}_{wrong}_{metric}"
    models.mkdir()
    spec = ScorerSpec(
        candidate=str(candidate),
        cfg={"vocab_size": prepared.vocab_size, "seq_len": seq_len},
        device="cpu",
        seed=0,
        rows=str(eval_split(prepared, 200, seq_len, score=score_mode)),
        tokenizer_dir=str(prepared.tokenizer_dir),
        eval_batch_size=8,
        eval_split="val",
        metric=metric,
        max_params=None,
        sandbox_level="off",
        sandbox_prefix=(),
        sandbox_uid=None,
        tmp=str(models),
        threads=1,
    )
    return score(spec, lambda: str(tmp_path / "model.pt"))


@pytest.mark.parametrize("wrong", [False, True])
def test_val_accuracy_and_val_loss_score_only_the_answer(tmp_path, wrong):
    prepared = prepare(MODULAR, "suite_modular", **QUIET)
    result = scored(tmp_path, prepared, "val_accuracy", "answers", 5, wrong=wrong)
    assert result["scored_tokens"] == 40 and result["value"] == result["val_accuracy"] == (0.0 if wrong else 1.0)
    assert result["val_loss"] == pytest.approx(
        10 + np.log(1 + 15 * np.exp(-10)) if wrong else np.log(1 + 15 * np.exp(-10)), rel=1e-4
    )
    assert "val_bpb" not in result and result["causality_diff"] == 0.0
    assert scored(tmp_path, prepared, "val_loss", "answers", 5, wrong=wrong)["value"] == result["val_loss"]


def test_val_bpb_of_a_uniform_byte_model_is_log2_257(tmp_path):
    prepared = prepare(
        {"source": "embedded", "tokenizer": "bytes", "vocab_size": 257, "max_train_chars": 200_000},
        "suite_bytes",
        **QUIET,
    )
    result = scored(tmp_path, prepared, "val_bpb", "tokens", 32, model="Uniform")
    assert result["value"] == pytest.approx(np.log2(257)) and result["val_loss"] == pytest.approx(np.log(257))


def test_the_probes_catch_a_model_that_reads_the_answer_of_another_row(tmp_path):
    prepared = prepare(MODULAR, "suite_modular", **QUIET)
    with pytest.raises(Violation, match="batch independence|causality"):
        scored(tmp_path, prepared, "val_accuracy", "answers", 5, model="Peek")


@pytest.mark.parametrize(
    "task, message",
    [
        ("metric='val_ppl'", "unknown metric 'val_ppl'; set [task] metric to one of val_bpb, val_loss, val_accuracy"),
        ("metric='val_accuracy'\ndirection='lower'", 'val_accuracy is better when higher; set direction = "higher"'),
        ("metric='val_bpb'", 'source "modular" has no bytes to score val_bpb on'),
    ],
)
def test_a_task_with_a_bad_metric_says_what_to_do(tmp_path, task, message):
    folder = Path(shutil.copytree(TASKS / "modular_add", tmp_path / "m"))
    text = (folder / "task.toml").read_text().replace('metric = "val_accuracy"\ndirection = "higher"', task)
    (folder / "task.toml").write_text(text)
    with pytest.raises(TaskError) as e:
        load_task(folder)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_direction_defaults_to_the_metrics_own(tmp_path):
    folder = Path(shutil.copytree(TASKS / "modular_add", tmp_path / "m"))
    text = (folder / "task.toml").read_text().replace('direction = "higher"\n', "")
    (folder / "task.toml").write_text(text)
    assert load_task(folder).direction == "higher" == METRICS["val_accuracy"]


def test_summary_puts_each_tasks_metric_in_its_own_aligned_column():
    results = [
        CandidateResult(t, t.profile("cpu"), Candidate("train", t.train_file))
        for t in (load_task(TASKS / "char_lm"), load_task(TASKS / "modular_add"))
    ]
    rows = summary_rows(results)
    assert list(rows[0]) == list(rows[1])
    assert list(rows[0])[4:6] == ["val_bpb", "val_accuracy"]


def test_ar_tasks_selects_tasks_by_name(pytester):
    for name in ("gpt_pretrain", "char_lm", "modular_add"):
        shutil.copytree(TASKS / name, pytester.path / "tasks" / name)
    run = pytester.runpytest_subprocess(
        "tasks", "--collect-only", "-q", "--ar-tasks", "char_lm,modular_add", "-p", "no:cacheprovider"
    )
    ids = [l for l in run.stdout.lines if "::" in l]
    assert {l.split("/")[1] for l in ids} == {"char_lm", "modular_add"}
    assert any("test_benchmark[train]" in l for l in ids)


def test_the_whole_suite_runs_end_to_end_on_the_cpu_profiles(pytester):
    """Every task's checks, training and scoring, in fixed-token mode so that it takes seconds."""
    for name in ("gpt_pretrain", "char_lm", "modular_add"):
        shutil.copytree(TASKS / name, pytester.path / "tasks" / name)
    # scoring gpt_pretrain's 131,072 cpu evaluation tokens would take most of this test's time: an eighth
    toml = pytester.path / "tasks" / "gpt_pretrain" / "task.toml"
    assert toml.read_text().count("eval_tokens = 131072\n") == 1
    toml.write_text(toml.read_text().replace("eval_tokens = 131072\n", "eval_tokens = 16384\n"))
    run = pytester.runpytest_subprocess(
        "--autoresearch", "tasks", "--ar-profile", "cpu", "--ar-tokens", "8192", "-p", "no:cacheprovider"
    )
    outcomes = run.parseoutcomes()
    assert outcomes.get("failed", 0) == outcomes.get("errors", 0) == outcomes.get("skipped", 0) == 0, run.stdout.str()
    with open(pytester.path / "results.tsv") as f:
        rows = {r["task"]: r for r in csv.DictReader(f, delimiter="\t")}
    assert {t: (r["metric"], r["status"]) for t, r in rows.items()} == {
        "gpt_pretrain": ("val_bpb", "ok"),
        "char_lm": ("val_bpb", "ok"),
        "modular_add": ("val_accuracy", "ok"),
    }
    assert all(0 < int(r["tokens"]) <= 8192 for r in rows.values())  # whole batches, none past the budget
    assert 0 <= float(rows["modular_add"]["val_bpb"]) <= 1 < float(rows["char_lm"]["val_bpb"])
    run.stdout.fnmatch_lines(
        ["*task*candidate*val_bpb*val_accuracy*", "char_lm*train*", "gpt_pretrain*train*", "modular_add*train*"]
    )  # one table, tasks in name order


# --- settings reach gpt_pretrain's train.py -------------------------------------------------------


def test_gpt_pretrain_accumulates_the_device_batch_it_is_given():
    """gpt_pretrain's train.py on CPU with a device batch half the configured one: micro-batches of
    that size, twice as many per step, the same tokens per optimizer step."""
    spec = importlib.util.spec_from_file_location("gpt_train_acc", TASKS / "gpt_pretrain" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    gpt = load_task(TASKS / "gpt_pretrain")
    cfg = {**gpt.profile("cpu").model_config(), "depth": 1}  # one layer: the loop is under test, not the model
    half = cfg["device_batch_size"] // 2
    log, max_tokens = io.StringIO(), 2 * cfg["total_batch_size"]

    class RandomBatches:
        """The feeder's side of ctx, in process: random rows, counted, none past max_tokens."""

        t0, tokens, streams, sizes = 0.0, 0, 0, []

        def new_stream(self):
            self.streams += 1
            return self.streams

        def fetch(self, stream, rows):
            self.sizes.append(rows.shape[0])
            if self.tokens >= max_tokens:
                return False
            rows[:] = torch.randint(0, cfg["vocab_size"], rows.shape).numpy()
            self.tokens += rows.shape[0] * (rows.shape[1] - 1)
            return True

    settings = {**choose_settings(cfg, None), "device_batch_size": half}
    batches = RandomBatches()
    ctx = TrainContext(
        device="cpu",
        seed=0,
        cfg=cfg,
        budget_s=1e9,
        max_tokens=max_tokens,
        client=batches,
        progress_out=log,
        settings=settings,
    )
    module.train(ctx)
    steps = [json.loads(line) for line in log.getvalue().splitlines()]
    assert set(batches.sizes) == {half} and batches.streams == 1
    assert [s["step"] for s in steps] == [0, 1] and ctx.tokens == 2 * cfg["total_batch_size"]
    assert all("mfu" not in s for s in steps)  # no peak on CPU: no MFU number
