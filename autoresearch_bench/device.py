"""The GPU a run trains on: its peak FLOP/s (for MFU) and the execution settings that fit it.

- `detect()` reads the visible CUDA device (name, total and free memory, compute capability,
  whether triton is importable); None without one. Everything else here takes a `DeviceInfo`, so
  tests fake any GPU on a CPU machine.
- `peak_flops(name)`: dense bf16/fp16 tensor-core peak of a known device (table below, one
  datasheet per row), None for any other: MFU is then "unknown", never a number against the
  wrong peak. MFU is counted as autoresearch counts it: flops_per_token × tokens/s ÷ peak, where
  flops_per_token is the model's 6·N (matmul weights) + attention estimate.
- `choose_settings(cfg, device, ...)`: what the candidate should run with on this device, passed
  to it as `ctx.settings` and recorded as `RunRecord.extra["settings"]`:
      device_batch_size, grad_accum  the largest device batch that fits the free memory (of runs
                                     that share the GPU, each plans for its share of the total less
                                     the profile's scoring_memory_gb: started together, each sees the
                                     others' memory still free, and one's scoring overlaps the
                                     others' training) and
                                     divides the total batch (cfg's total_batch_size // seq_len
                                     rows, else cfg's device_batch_size), never above cfg's
                                     device_batch_size; device_batch_size × grad_accum = total rows,
                                     so the optimization is the same on every device
      dtype                          bfloat16 (capability >= 8.0), float16 (older: the candidate
                                     scales the loss, loss_scaling = True), float32 on CPU
      attention                      flex (torch.compile possible and capability >= 8.0) or sdpa
      compile                        whether torch.compile can work here (triton, capability >= 7.0)
      device, peak_flops, free_memory_gb, memory_estimate_gb
  Memory per row is not probed (a probe costs a compile and minutes): the profile states it as
  `memory_per_row_gb` (peak GB per row of the device batch at the profile's seq_len, measured on a
  reference run) plus `memory_overhead_gb` (weights, optimizer state, CUDA context). A profile
  without `memory_per_row_gb` keeps cfg's device batch. 1 GB = 1e9 bytes, as peak_mem_gb.
"""

from __future__ import annotations

import importlib.util
import math
import re
from dataclasses import dataclass
from typing import Any

# Share of the free memory a run may plan for; the rest absorbs allocator fragmentation and the
# compiler's workspace, which the per-row figure of a reference run does not show.
MEMORY_HEADROOM = 0.9


class SettingsError(Exception):
    """The device cannot run the profile at all; the message says what to change."""


@dataclass(frozen=True)
class DeviceInfo:
    name: str  # torch.cuda.get_device_name(), e.g. "NVIDIA H100 80GB HBM3"
    total_memory_gb: float
    free_memory_gb: float | None  # None: not read (picking a profile does not need it)
    capability: tuple[int, int]  # (major, minor), e.g. (9, 0) for Hopper
    triton: bool = True  # triton importable: torch.compile and FlexAttention can run


def detect(index: int = 0, read_free: bool = True) -> DeviceInfo | None:
    """The visible CUDA device `index`, or None when there is none. Reading the free memory creates
    a CUDA context (about 0.5 GB of GPU memory for the life of the process): the pytest process,
    which only picks the profile, passes read_free=False; the training process reads it."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(index)
    free = torch.cuda.mem_get_info(index)[0] / 1e9 if read_free else None
    return DeviceInfo(
        name=props.name,
        total_memory_gb=props.total_memory / 1e9,
        free_memory_gb=free,
        capability=(props.major, props.minor),
        triton=importlib.util.find_spec("triton") is not None,
    )


# Dense (no sparsity) tensor-core peak FLOP/s in bf16 with fp32 accumulation (fp16 for devices
# without bf16), i.e. the precision the candidate trains in. Patterns must match the whole
# normalized name (see normalize): "A10" never matches an A100 or an A10G, nor "L4" an L40S.
PEAK_FLOPS: list[tuple[str, float]] = [
    # H100 SXM5, bf16: 1,979 TFLOPS with sparsity; H100 datasheet (nvidia.com/en-us/data-center/h100)
    (r"H100( SXM5?)?( \d+GB)?( HBM3E?)?", 989.5e12),
    # H100 PCIe, bf16: 1,513 TFLOPS with sparsity; H100 datasheet
    (r"H100 PCIE( \d+GB)?", 756.5e12),
    # H100 NVL, bf16: 1,671 TFLOPS with sparsity; H100 datasheet
    (r"H100 NVL", 835.5e12),
    # H200 SXM, bf16: 1,979 TFLOPS with sparsity; H200 datasheet (nvidia.com/en-us/data-center/h200)
    (r"H200( SXM)?( \d+GB)?( HBM3E)?", 989.5e12),
    # H200 NVL, bf16: 1,671 TFLOPS with sparsity; H200 datasheet
    (r"H200 NVL", 835.5e12),
    # A100 40 GB and 80 GB, SXM4 and PCIe, bf16: 312 TFLOPS dense; A100 datasheet (nvidia.com/en-us/data-center/a100)
    (r"A100( SXM4| PCIE)?( \d+GB)?( PCIE)?", 312e12),
    # L40S, bf16: 362.05 TFLOPS dense (733 with sparsity); L40S datasheet (nvidia.com/en-us/data-center/l40s)
    (r"L40S", 362.05e12),
    # L40, bf16: 181.05 TFLOPS dense; L40 datasheet (nvidia.com/en-us/data-center/l40)
    (r"L40", 181.05e12),
    # L4, bf16: 242 TFLOPS with sparsity; L4 datasheet (nvidia.com/en-us/data-center/l4)
    (r"L4", 121e12),
    # A10, bf16: 125 TFLOPS dense (250 with sparsity); A10 datasheet (nvidia.com/en-us/data-center/products/a10-gpu)
    (r"A10", 125e12),
    # GeForce RTX 4090, bf16 with fp32 accumulate: 165.2 TFLOPS dense; NVIDIA Ada GPU architecture whitepaper,
    # appendix A
    (r"RTX 4090", 165.2e12),
    # GeForce RTX 3090, bf16 with fp32 accumulate: 71 TFLOPS dense; NVIDIA Ampere GA102 GPU architecture
    # whitepaper, table 9
    (r"RTX 3090", 71e12),
    # V100 SXM2, fp16 (no bf16): 125 TFLOPS tensor performance; V100 datasheet (nvidia.com/en-us/data-center/v100)
    (r"V100( SXM2)?( \d+GB)?", 125e12),
    # V100 PCIe, fp16: 112 TFLOPS tensor performance; V100 datasheet
    (r"V100 PCIE( \d+GB)?", 112e12),
    # T4, fp16: 65 TFLOPS mixed precision; T4 datasheet (nvidia.com/en-us/data-center/tesla-t4)
    (r"T4", 65e12),
]
_VENDOR_WORDS = re.compile(r"\b(NVIDIA|GEFORCE|TESLA)\b")


def normalize(name: str) -> str:
    """Upper case, vendor and brand words dropped, '-' and '_' as spaces, single spaces:
    "NVIDIA A100-SXM4-40GB" → "A100 SXM4 40GB", "NVIDIA GeForce RTX 4090" → "RTX 4090"."""
    return " ".join(_VENDOR_WORDS.sub(" ", re.sub(r"[-_]", " ", name.upper())).split())


def name_matches(name: str, words: str) -> bool:
    """Whether `words` occur as whole words in the device name, both normalized: "RTX 4090" and
    "h100" match "NVIDIA GeForce RTX 4090" and "NVIDIA H100 80GB HBM3"; "A10" does not match an A100."""
    return f" {normalize(words)} " in f" {normalize(name)} "


def peak_flops(name: str) -> float | None:
    """Dense bf16/fp16 peak FLOP/s of the device with this name, None when it is not in PEAK_FLOPS."""
    key = normalize(name)
    return next((peak for pattern, peak in PEAK_FLOPS if re.fullmatch(pattern, key)), None)


def mfu(flops_per_token: float, tokens_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilization in percent; None when the device's peak is unknown."""
    return None if not peak else 100 * flops_per_token * tokens_per_s / peak


def fmt_mfu(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f}%"


def fit_batch(total_rows: int, max_rows: int, rows_that_fit: int) -> tuple[int, int]:
    """(device batch, accumulation steps): the largest divisor of total_rows that is at most
    max_rows and rows_that_fit, and total_rows // it. rows_that_fit must be >= 1."""
    limit = min(max_rows, rows_that_fit, total_rows)
    device_batch = next(d for d in range(limit, 0, -1) if total_rows % d == 0)
    return device_batch, total_rows // device_batch


def choose_settings(
    cfg: dict[str, Any],
    device: DeviceInfo | None,
    memory_per_row_gb: float | None = None,
    memory_overhead_gb: float = 0.0,
    sharing: int = 1,
    scoring_memory_gb: float = 0.0,
) -> dict[str, Any]:
    """The execution settings for cfg (a profile's model_config()) on device (None: CPU); see the
    module docstring. sharing: how many runs use this GPU at once. Raises SettingsError when not
    even one row fits."""
    if device is None:
        settings: dict[str, Any] = {
            "device": "cpu",
            "dtype": "float32",
            "loss_scaling": False,
            "attention": "sdpa",
            "compile": False,
            "peak_flops": None,
        }
    else:
        compiles = device.triton and device.capability >= (7, 0)
        bf16 = device.capability >= (8, 0)
        settings = {
            "device": device.name,
            "dtype": "bfloat16" if bf16 else "float16",
            "loss_scaling": not bf16,
            "attention": "flex" if compiles and bf16 else "sdpa",
            "compile": compiles,
            "peak_flops": peak_flops(device.name),
            "free_memory_gb": round(device.free_memory_gb, 2),
        }
    if "device_batch_size" not in cfg:
        return settings
    max_rows = int(cfg["device_batch_size"])
    total_rows = int(cfg["total_batch_size"]) // int(cfg["seq_len"]) if "total_batch_size" in cfg else max_rows
    if total_rows < 1:
        raise SettingsError(
            f"total_batch_size {cfg['total_batch_size']} is less than one row of seq_len "
            f"{cfg['seq_len']}; raise total_batch_size in the profile's config"
        )
    rows_that_fit = max_rows
    if device is not None and memory_per_row_gb:
        share = device.total_memory_gb / sharing - scoring_memory_gb if sharing > 1 else math.inf
        available = max(0.0, min(device.free_memory_gb, share))
        usable = available * MEMORY_HEADROOM - memory_overhead_gb
        rows_that_fit = int(usable // memory_per_row_gb)
        if rows_that_fit < 1:
            need = memory_overhead_gb + memory_per_row_gb
            shared = f" (its share of {sharing} runs at once: fewer --ar-slots)" if sharing > 1 else " free"
            raise SettingsError(
                f"{device.name} has {available:.1f} GB{shared} ({MEMORY_HEADROOM:.0%} usable), but one "
                f"row of this profile needs {need:.1f} GB ({memory_per_row_gb} GB per row + {memory_overhead_gb} "
                f"GB fixed); lower seq_len or the model size in a profile for this GPU (README: 'A profile for "
                f"your GPU'), or pass --ar-profile cpu"
            )
    device_batch, accum = fit_batch(total_rows, max_rows, rows_that_fit)
    settings.update(device_batch_size=device_batch, grad_accum=accum)
    if device is not None and memory_per_row_gb:
        settings["memory_estimate_gb"] = round(memory_overhead_gb + device_batch * memory_per_row_gb, 2)
    return settings


def mfu_cell(extras: list[dict]) -> str:
    """Summary-table cell from the `extra` dicts of a candidate's finished runs: their mean MFU,
    "unknown" when the GPU's peak is not in PEAK_FLOPS (or the candidate logged none), "-" on CPU."""
    gpu = [e for e in extras if e.get("settings", {}).get("device", "cpu") != "cpu"]
    values = [e.get("mfu") for e in gpu]
    if not values:
        return "-"
    return "unknown" if None in values else fmt_mfu(sum(values) / len(values))
