"""What makes scores comparable: the machine fingerprint (device kind and model, torch, CUDA and Python
versions, profile; the session adds training mode and budget) and its id, a readable file name that
stored baselines and trusted compile caches are filed under.
"""

from __future__ import annotations

import functools
import platform
import re
from pathlib import Path


@functools.cache
def _machine(device: str) -> tuple[tuple[str, str], ...]:
    import torch

    gpu = device == "cuda" and torch.cuda.is_available()
    return (
        ("device", "cuda" if gpu else "cpu"),
        ("model", torch.cuda.get_device_name() if gpu else _cpu_model()),
        ("torch", torch.__version__.split("+")[0]),
        ("cuda", torch.version.cuda or "none"),
        ("python", platform.python_version()),
    )


def machine_fingerprint(profile_name: str, device: str = "cpu") -> dict:
    """What makes scores comparable: device kind and model, torch, CUDA and Python versions, profile.
    A cuda profile on a machine without a visible GPU reports the CPU it would fall back to."""
    return {**dict(_machine(device)), "profile": profile_name}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


# Marketing words that make CPU names long without telling models apart.
_NOISE = re.compile(r"\(r\)|\(tm\)|\bcpu\b|\bprocessor\b|\b\d+-core\b|@.*$")


def _slug(text: object, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", str(text).lower()).strip("-")[:limit].strip("-") or "unknown"


def fingerprint_id(fp: dict) -> str:
    """A readable, filesystem-safe id, e.g. cpu-amd-epyc-7b13__torch-2.13.0__cuda-none__cpu;
    a fingerprint with a training mode and budget gets them too (…__cpu__time-45). The Python
    version is recorded in the fingerprint but not matched on."""
    model = _NOISE.sub(" ", fp["model"].lower())
    parts = [
        _slug(f"{fp['device']} {model}"),
        f"torch-{_slug(fp['torch'])}",
        f"cuda-{_slug(fp['cuda'])}",
        _slug(fp["profile"]),
    ]
    if "mode" in fp:
        budget = fp["budget"]
        if isinstance(budget, float) and budget.is_integer():
            budget = int(budget)
        parts.append(_slug(f"{fp['mode']}-{budget}"))
    return "__".join(parts)
