"""task.toml: profiles are data, and a broken file is one clear line."""
import pytest

from autoresearch_bench.task import TaskError, default_profile, load_task


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
    text = (tiny_task_dir / "task.toml").read_text() + """
[profiles.cpu_long]
extends = "cpu"
budget_s = 30

[profiles.cpu_long.config]
n_layer = 2
"""
    task = load_task(write(tiny_task_dir, text))
    base, long = task.profile("cpu"), task.profile("cpu_long")
    assert long.budget_s == 30 and long.eval_tokens == base.eval_tokens
    assert long.config == {**base.config, "n_layer": 2}


@pytest.mark.parametrize("text, message", [
    ("[task\nname='x'", "malformed TOML"),
    ("[task]\nname='x'\n", "no [profiles.<name>] table"),
    ("[task]\n[data]\nsource='embedded'\nvocab_size=300\nseq_len=8\n[profiles.cpu]\nbudget_s=1\neval_tokens=8\n",
     "[profiles.cpu] lacks 'device'"),
    ("[task]\n[data]\nsource='embedded'\nvocab_size=300\nseq_len=8\n[profiles.cpu]\ndevice='tpu'\nbudget_s=1\n"
     "eval_tokens=8\n", "device must be 'cpu' or 'cuda'"),
    ("[task]\n[profiles.cpu]\ndevice='cpu'\nbudget_s=1\neval_tokens=8\nbudjet=3\n", "unknown keys ['budjet']"),
    ("[task]\ndirection='up'\n[profiles.cpu]\ndevice='cpu'\n", "direction must be 'lower' or 'higher'"),
    ("[task]\neditable=['model.py']\n", "editable file 'model.py' does not exist"),
])
def test_a_broken_task_file_says_what_to_fix(tiny_task_dir, text, message):
    with pytest.raises(TaskError, match=None) as e:
        load_task(write(tiny_task_dir, text))
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("old, new, message", [
    ("budget_s = 3\nstartup", 'budget_s = "30s"\nstartup', "[profiles.cpu] budget_s must be a number, got '30s'"),
    ("budget_s = 3\nstartup", "budget_s = true\nstartup", "[profiles.cpu] budget_s must be a number, got True"),
    ("eval_tokens = 4096\neval_batch_size", "eval_tokens = 4096.5\neval_batch_size",
     "[profiles.cpu] eval_tokens must be an integer, got 4096.5"),
    ('editable = ["train.py"]', 'editable = "train.py"', "[task] editable must be a list of strings, got 'train.py'"),
    ("seq_len = 64", 'seq_len = "64"', "[data] or [profiles.cpu.data] seq_len must be an integer, got '64'"),
    ("max_params = 500_000", "max_params = 5e5", "[limits] max_params must be an integer, got 500000.0"),
    ("[profiles.cpu.config]", "[profiles.cpu.config_]", "[profiles.cpu] has unknown keys ['config_']"),
])
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
