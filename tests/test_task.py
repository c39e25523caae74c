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


def test_an_unknown_profile_lists_the_known_ones(tiny_task):
    with pytest.raises(TaskError, match="no profile 'h100'; choose one of cpu, gpu"):
        tiny_task.profile("h100")
