"""Any GPU, comparable scores: peak FLOP/s by device, memory-fitted settings, profile auto-selection.

Devices are faked (DeviceInfo), so all of it runs on a CPU machine.
"""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from autoresearch_bench import device
from autoresearch_bench.device import DeviceInfo, SettingsError, choose_settings, fit_batch
from autoresearch_bench.task import TaskError, default_profile, load_task

GPT = Path(__file__).parent.parent / "tasks" / "gpt_pretrain"

H100 = DeviceInfo("NVIDIA H100 80GB HBM3", total_memory_gb=85.0, free_memory_gb=84.5, capability=(9, 0))
H200 = DeviceInfo("NVIDIA H200", total_memory_gb=150.0, free_memory_gb=149.5, capability=(9, 0))
RTX4090 = DeviceInfo("NVIDIA GeForce RTX 4090", total_memory_gb=25.3, free_memory_gb=24.9, capability=(8, 9))
V100 = DeviceInfo("Tesla V100-SXM2-16GB", total_memory_gb=17.0, free_memory_gb=16.5, capability=(7, 0))


@pytest.fixture(scope="module")
def gpt():
    return load_task(GPT)


# The batch defaults of gpt_pretrain's reference train.py (its Hyper), as source_defaults reads them from
# the file: constants here, so that the harness's tests do not change with the file agents rewrite.
REFERENCE_BATCHES = {"total_batch_size": 2**19, "device_batch_size": 128}


def settings_for(task, dev):
    """As the training process chooses them: the file's batch defaults under the profile's config."""
    profile = default_profile(task, cuda_available=dev is not None, device=dev)
    cfg = {**REFERENCE_BATCHES, **profile.model_config()}
    return profile, choose_settings(cfg, dev, profile.memory_per_row_gb, profile.memory_overhead_gb)


# --- peak FLOP/s and MFU -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "NVIDIA H100 80GB HBM3",
        "NVIDIA H100 PCIe",
        "NVIDIA H100 NVL",
        "NVIDIA H200",
        "NVIDIA A100-SXM4-40GB",
        "NVIDIA A100-SXM4-80GB",
        "NVIDIA A100-PCIE-40GB",
        "NVIDIA A100 80GB PCIe",
        "NVIDIA L40S",
        "NVIDIA L4",
        "NVIDIA GeForce RTX 4090",
        "NVIDIA GeForce RTX 3090",
        "NVIDIA A10",
        "Tesla V100-SXM2-16GB",
        "Tesla T4",
    ],
)
def test_every_listed_device_has_a_peak(name):
    assert device.peak_flops(name) > 1e13


@pytest.mark.parametrize(
    "a, b",
    [
        ("NVIDIA A10", "NVIDIA A100-SXM4-40GB"),
        ("NVIDIA L4", "NVIDIA L40S"),
        ("NVIDIA L40", "NVIDIA L40S"),
        ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe"),
        ("NVIDIA GeForce RTX 3090", "NVIDIA GeForce RTX 4090"),
    ],
)
def test_similar_names_are_different_devices(a, b):
    assert device.peak_flops(a) != device.peak_flops(b)


def test_spellings_of_one_chip_share_a_peak():
    a100 = {
        device.peak_flops(n)
        for n in (
            "NVIDIA A100-SXM4-40GB",
            "NVIDIA A100-SXM4-80GB",
            "NVIDIA A100-PCIE-40GB",
            "NVIDIA A100 80GB PCIe",
            "nvidia a100_sxm4_80gb",
        )
    }
    assert len(a100) == 1
    assert device.peak_flops("NVIDIA H200") == device.peak_flops("NVIDIA H100 80GB HBM3")  # same tensor cores


@pytest.mark.parametrize(
    "name",
    [
        "NVIDIA A10G",
        "NVIDIA GeForce RTX 4090 Laptop GPU",
        "NVIDIA GeForce RTX 3090 Ti",
        "NVIDIA B200",
        "AMD Instinct MI300X",
        "",
    ],
)
def test_an_unknown_device_has_unknown_mfu(name):
    peak = device.peak_flops(name)
    assert peak is None
    assert device.mfu(1e9, 1e6, peak) is None and device.fmt_mfu(device.mfu(1e9, 1e6, peak)) == "unknown"


# FLOPs per token of gpt_pretrain's reference model on the h100 profile (depth 8, 50.3M parameters), as
# its train.py counts them (6 per matmul weight + attention, as upstream): the number the measured run
# below logged. A constant, so that the harness's tests do not depend on the file agents rewrite.
REFERENCE_FLOPS_PER_TOKEN = 239_078_400


def test_mfu_on_the_h100_matches_the_measured_run():
    """BENCHMARKS.md: ≈ 36% MFU at the steady 347 ms step of 2^19 tokens, as autoresearch counts it."""
    value = device.mfu(REFERENCE_FLOPS_PER_TOKEN, 2**19 / 0.347, device.peak_flops(H100.name))
    assert 35 < value < 37 and device.fmt_mfu(value) == f"{value:.1f}%"


def test_the_summary_shows_mfu_only_where_it_is_known():
    on = lambda name, mfu: {"settings": choose_settings({}, DeviceInfo(name, 80, 80, (9, 0))), "mfu": mfu}
    assert device.mfu_cell([on(H100.name, 30.0), on(H100.name, 40.0)]) == "35.0%"
    assert device.mfu_cell([on("NVIDIA B200", None)]) == "unknown"
    assert device.mfu_cell([{"settings": choose_settings({}, None), "mfu": None}]) == "-"  # CPU: not applicable
    assert device.mfu_cell([]) == "-"


# --- settings ------------------------------------------------------------------------------------


def test_an_h100_runs_exactly_the_reference_settings(gpt):
    profile, s = settings_for(gpt, H100)
    cfg = {**REFERENCE_BATCHES, **profile.model_config()}
    assert profile.name == "h100"
    assert s["device_batch_size"] == cfg["device_batch_size"]  # the reference batch is kept
    assert s["device_batch_size"] * s["grad_accum"] * cfg["seq_len"] == cfg["total_batch_size"]
    assert (s["dtype"], s["loss_scaling"], s["attention"], s["compile"]) == ("bfloat16", False, "flex", True)
    assert s["memory_estimate_gb"] <= H100.free_memory_gb * device.MEMORY_HEADROOM


def test_a_24_gb_card_accumulates_smaller_batches_to_the_same_total(gpt):
    profile, s = settings_for(gpt, RTX4090)
    _, ref = settings_for(gpt, H100)
    assert s["device_batch_size"] < ref["device_batch_size"] and s["grad_accum"] > ref["grad_accum"]
    assert s["device_batch_size"] * s["grad_accum"] == ref["device_batch_size"] * ref["grad_accum"]
    assert s["memory_estimate_gb"] <= RTX4090.free_memory_gb * device.MEMORY_HEADROOM
    assert s["dtype"] == "bfloat16" and s["peak_flops"] < ref["peak_flops"]


def test_runs_sharing_a_gpu_each_fit_their_share_of_its_memory(gpt):
    # measured on the H200: three runs started at once each saw ~139 GB free, planned 128 rows (47 GB)
    # and the third ran out of memory; then, at a third of the card each, one's scoring overlapped the
    # others' training and ran out. Each plans for its share less what its scoring takes.
    profile = default_profile(gpt, cuda_available=True, device=H200)
    cfg = {**REFERENCE_BATCHES, **profile.model_config()}
    per_row, fixed, scoring = profile.memory_per_row_gb, profile.memory_overhead_gb, profile.scoring_memory_gb
    fit = lambda sharing: choose_settings(cfg, H200, per_row, fixed, sharing, scoring)
    alone, three = fit(1), fit(3)
    assert alone["device_batch_size"] == 128 and scoring > 0
    assert three["device_batch_size"] < 128
    assert 3 * (three["memory_estimate_gb"] + scoring) <= H200.total_memory_gb
    assert three["device_batch_size"] * three["grad_accum"] == alone["device_batch_size"] * alone["grad_accum"]
    with pytest.raises(SettingsError, match="its share of 1000 runs at once: fewer --ar-slots"):
        fit(1000)


def test_an_old_card_trains_in_fp16_with_loss_scaling_and_sdpa(gpt):
    _, s = settings_for(gpt, V100)
    assert (s["dtype"], s["loss_scaling"], s["attention"]) == ("float16", True, "sdpa")


def test_without_triton_nothing_is_compiled(gpt):
    no_triton = DeviceInfo(**{**H100.__dict__, "triton": False})
    _, s = settings_for(gpt, no_triton)
    assert not s["compile"] and s["attention"] == "sdpa" and s["dtype"] == "bfloat16"


def test_the_cpu_profile_runs_as_configured(gpt):
    profile, s = settings_for(gpt, None)
    assert profile.name == "cpu"
    assert (s["device_batch_size"], s["grad_accum"]) == (profile.config["device_batch_size"], 1)
    assert (s["dtype"], s["loss_scaling"], s["compile"], s["peak_flops"]) == ("float32", False, False, None)


def test_a_card_too_small_for_one_row_says_what_to_change(gpt):
    tiny = DeviceInfo("NVIDIA GeForce GT 1030", total_memory_gb=2.1, free_memory_gb=1.9, capability=(6, 1))
    with pytest.raises(SettingsError) as e:
        settings_for(gpt, tiny)
    message = str(e.value)
    assert "\n" not in message and "GT 1030" in message
    assert "seq_len" in message and "--ar-profile cpu" in message


@hsettings(max_examples=150, deadline=None)
@given(
    free=st.floats(0.5, 200),
    per_row=st.floats(0.001, 5),
    overhead=st.floats(0, 10),
    total_rows=st.integers(1, 4096),
    max_rows=st.integers(1, 512),
)
def test_the_batch_fits_and_keeps_the_total(free, per_row, overhead, total_rows, max_rows):
    seq_len = 64
    cfg = {"seq_len": seq_len, "device_batch_size": max_rows, "total_batch_size": total_rows * seq_len}
    dev = DeviceInfo("NVIDIA L4", total_memory_gb=free, free_memory_gb=free, capability=(8, 9))
    usable = free * device.MEMORY_HEADROOM
    try:
        s = choose_settings(cfg, dev, per_row, overhead)
    except SettingsError:
        assert overhead + per_row > usable
        return
    b = s["device_batch_size"]
    assert b * s["grad_accum"] == total_rows and b <= max_rows
    assert overhead + b * per_row <= usable + 1e-9
    # the largest such batch: no bigger divisor of the total fits the memory and the cap
    assert not any(total_rows % d == 0 and overhead + d * per_row <= usable for d in range(b + 1, max_rows + 1))


def test_fit_batch_prefers_the_largest_divisor():
    assert fit_batch(total_rows=256, max_rows=128, rows_that_fit=56) == (32, 8)
    assert fit_batch(total_rows=12, max_rows=12, rows_that_fit=5) == (4, 3)


# --- profile auto-selection ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "dev, expected", [(H100, "h100"), (H200, "h100"), (RTX4090, "gpu"), (V100, "gpu"), (None, "cpu")]
)
def test_auto_picks_the_profile_that_names_the_gpu(gpt, dev, expected):
    assert default_profile(gpt, cuda_available=dev is not None, device=dev).name == expected


def add_profiles(task_dir, text):
    toml = task_dir / "task.toml"
    toml.write_text(toml.read_text() + text)
    return load_task(task_dir)


MY_4090 = """
[profiles.my4090]
extends = "gpu"
match = ["RTX 4090"]
min_memory_gb = 20
"""


def test_a_user_profile_for_one_gpu_is_picked_for_it_alone(tiny_task_dir):
    task = add_profiles(tiny_task_dir, MY_4090)
    assert default_profile(task, True, RTX4090).name == "my4090"
    assert default_profile(task, True, H100).name == "gpu"  # generic, since my4090 names another GPU
    small_4090 = DeviceInfo(**{**RTX4090.__dict__, "total_memory_gb": 16.0})
    assert default_profile(task, True, small_4090).name == "gpu"  # below min_memory_gb


def test_match_takes_whole_words_of_the_name(tiny_task_dir):
    task = add_profiles(tiny_task_dir, '\n[profiles.a10]\nextends = "gpu"\nmatch = ["a10"]\n')
    a10 = DeviceInfo("NVIDIA A10", total_memory_gb=24.0, free_memory_gb=23.5, capability=(8, 6))
    a100 = DeviceInfo("NVIDIA A100-SXM4-40GB", total_memory_gb=42.0, free_memory_gb=41.5, capability=(8, 0))
    assert default_profile(task, True, a10).name == "a10"
    assert default_profile(task, True, a100).name == "gpu"


def test_a_gpu_that_no_cuda_profile_suits_falls_back_to_cpu(tiny_task_dir):
    task = add_profiles(tiny_task_dir, MY_4090)
    task = type(task)(**{**task.__dict__, "profiles": {k: v for k, v in task.profiles.items() if k != "gpu"}})
    assert default_profile(task, True, H100).name == "cpu"
    assert default_profile(task, True, None).name == "cpu"  # unreadable GPU: generic profiles only


def test_without_a_cpu_profile_the_error_names_the_gpu(tiny_task_dir):
    task = add_profiles(tiny_task_dir, MY_4090)
    task = type(task)(**{**task.__dict__, "profiles": {"my4090": task.profiles["my4090"]}})
    with pytest.raises(TaskError) as e:
        default_profile(task, True, H100)
    assert "H100" in str(e.value) and "--ar-profile" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("value", ['"H100"', "[1]", '[""]'])
def test_a_bad_match_says_what_to_write(tiny_task_dir, value):
    with pytest.raises(TaskError, match=r"match must be a list of words of device names"):
        add_profiles(tiny_task_dir, f'\n[profiles.bad]\nextends = "gpu"\nmatch = {value}\n')
