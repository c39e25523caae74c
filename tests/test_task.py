"""task.toml: profiles are data, and a broken file is one clear line."""

from pathlib import Path

import pytest

from autoresearch_bench.task import TaskError, default_profile, load_task, source_defaults


def write(task_dir, text):
    (task_dir / "task.toml").write_text(text)
    return task_dir


def test_the_tiny_task_loads_with_its_profiles(tiny_task):
    assert tiny_task.name == "tiny" and tiny_task.direction == "lower"
    cpu = tiny_task.profile("cpu")
    assert cpu.model_config() == {**cpu.config, "vocab_size": 384, "seq_len": 64}


def test_the_profile_follows_the_hardware(tiny_task):
    assert default_profile(tiny_task, cuda_available=False).name == "cpu"
    assert default_profile(tiny_task, cuda_available=True).name == "gpu"


def test_a_profile_can_extend_another(tiny_task_dir):
    text = (
        (tiny_task_dir / "task.toml").read_text()
        + """
[profiles.cpu_long]
extends = "cpu"
budget_s = 30

[profiles.cpu_long.config]
n_layer = 2
"""
    )
    task = load_task(write(tiny_task_dir, text))
    base, long = task.profile("cpu"), task.profile("cpu_long")
    assert long.budget_s == 30 and long.eval_tokens == base.eval_tokens
    assert long.config == {**base.config, "n_layer": 2}


@pytest.mark.parametrize(
    "text, message",
    [
        ("[task\nname='x'", "malformed TOML"),
        ("[task]\nname='x'\n", "no [profiles.<name>] table"),
        (
            "[task]\n[data]\nsource='embedded'\nvocab_size=300\nseq_len=8\n[profiles.cpu]\nbudget_s=1\neval_tokens=8\n",
            "[profiles.cpu] lacks 'device'",
        ),
        (
            "[task]\n[data]\nsource='embedded'\nvocab_size=300\nseq_len=8\n[profiles.cpu]\ndevice='tpu'\nbudget_s=1\n"
            "eval_tokens=8\n",
            "device must be 'cpu' or 'cuda'",
        ),
        ("[task]\n[profiles.cpu]\ndevice='cpu'\nbudget_s=1\neval_tokens=8\nbudjet=3\n", "unknown keys ['budjet']"),
        ("[task]\ndirection='up'\n[profiles.cpu]\ndevice='cpu'\n", "direction must be 'lower' or 'higher'"),
        ("[task]\neditable=['model.py']\n", "editable file 'model.py' does not exist"),
    ],
)
def test_a_broken_task_file_says_what_to_fix(tiny_task_dir, text, message):
    with pytest.raises(TaskError, match=None) as e:
        load_task(write(tiny_task_dir, text))
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("budget_s = 3\nstartup", 'budget_s = "30s"\nstartup', "[profiles.cpu] budget_s must be a number, got '30s'"),
        ("budget_s = 3\nstartup", "budget_s = true\nstartup", "[profiles.cpu] budget_s must be a number, got True"),
        (
            "eval_tokens = 4096\neval_batch_size",
            "eval_tokens = 4096.5\neval_batch_size",
            "[profiles.cpu] eval_tokens must be an integer, got 4096.5",
        ),
        (
            'editable = ["train.py"]',
            'editable = "train.py"',
            "[task] editable must be a list of strings, got 'train.py'",
        ),
        ("seq_len = 64", 'seq_len = "64"', "[data] or [profiles.cpu.data] seq_len must be an integer, got '64'"),
        ("max_params = 500_000", "max_params = 5e5", "[limits] max_params must be an integer, got 500000.0"),
        ("[profiles.cpu.config]", "[profiles.cpu.config_]", "[profiles.cpu] has unknown keys ['config_']"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_file_the_key_and_the_type(tiny_task_dir, monkeypatch, old, new, message):
    monkeypatch.chdir(tiny_task_dir.parent.parent)  # messages show the path as the user typed it
    text = (tiny_task_dir / "task.toml").read_text()
    assert old in text
    with pytest.raises(TaskError) as e:
        load_task(write(tiny_task_dir, text.replace(old, new, 1)))
    assert str(e.value).startswith(f"tasks/tiny/task.toml: {message}"), str(e.value)
    assert "\n" not in str(e.value)


def test_a_toml_syntax_error_is_one_line_naming_the_file(tiny_task_dir, monkeypatch):
    monkeypatch.chdir(tiny_task_dir.parent.parent)
    with pytest.raises(TaskError) as e:
        load_task(write(tiny_task_dir, "[task]\nname = = 'tiny'\n"))
    assert str(e.value).startswith("tasks/tiny/task.toml: malformed TOML (") and "line 2" in str(e.value)
    assert str(e.value).endswith("fix the syntax") and "\n" not in str(e.value)


def test_an_unknown_profile_lists_the_known_ones(tiny_task):
    with pytest.raises(TaskError, match="no profile 'h100'; choose one of cpu, gpu"):
        tiny_task.profile("h100")


# --- profiles override only what the hardware forces --------------------------------------------

REPO_TASKS = Path(__file__).parent.parent / "tasks"


@pytest.mark.parametrize("name", ["gpt_pretrain", "char_lm", "modular_add"])
def test_gpu_profiles_leave_every_default_of_train_py_to_the_file(name):
    task = load_task(REPO_TASKS / name)
    defaults = source_defaults(task.train_file.read_text())
    for profile in (task.profile(p) for p in ("h100", "gpu", "h100_ref") if p in task.profiles):
        assert not {k: v for k, v in profile.config.items() if defaults.get(k) == v}, profile.name


def test_cpu_profiles_leave_the_optimization_to_the_file():
    for name in ("gpt_pretrain", "char_lm", "modular_add"):
        config = load_task(REPO_TASKS / name).profile("cpu").config
        assert not [k for k in config if "lr" in k or "momentum" in k or "warmup" in k or "warmdown" in k], name


def test_an_edit_that_the_profile_overrides_is_named_and_one_it_leaves_is_not():
    task = load_task(REPO_TASKS / "char_lm")
    reference = task.train_file.read_text()
    edited = reference.replace("n_layer: int = 6", "n_layer: int = 8").replace("lr: float = 1e-3", "lr: float = 2e-3")
    assert edited != reference
    assert task.profile("cpu").dead_edits(edited, reference) == ["n_layer=3 (the file says 8)"]
    assert task.profile("h100").dead_edits(edited, reference) == []  # the GPU profile trains the file's


def test_defaults_are_read_without_running_the_file():
    source = (
        "class Hyper:\n    total: int = 2**19\n    lr: float = -3e-4 * 2\n    name: str = 'SSSL'\n"
        "    call: int = __import__('os').getpid()\n    huge: int = 10**100\n"
    )
    assert source_defaults(source) == {"total": 524288, "lr": -6e-4, "name": "SSSL"}
    assert source_defaults("def broken(:") == {}


def test_check_options_must_name_a_listed_check_and_hold_numbers(tiny_task_dir):
    toml = tiny_task_dir / "task.toml"
    text = toml.read_text()
    toml.write_text(text.replace("[check_options.causality]", "[check_options.finite]"))
    with pytest.raises(TaskError, match=r"\[check_options.finite\] names no check of \[task\] checks"):
        load_task(tiny_task_dir)
    toml.write_text(text.replace("examples = 5", 'examples = "many"'))
    with pytest.raises(TaskError, match=r"\[check_options.causality\] must be a table of numbers"):
        load_task(tiny_task_dir)
    toml.write_text(text)
    assert load_task(tiny_task_dir).check_options == {"causality": {"examples": 5}}
