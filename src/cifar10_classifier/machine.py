"""What machine a figure was measured on: recorded in model cards and every benchmark's JSON."""

from __future__ import annotations

import os
import platform
import sys
from functools import cache


@cache
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool:
    """True where bf16 matmuls run in hardware (AVX512-BF16 or AMX); elsewhere bf16 autocast is far slower."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine_info() -> dict:
    info = {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "simd": sorted(f for f in cpu_flags() if f.startswith(("avx", "amx")) or f in ("fma", "vnni")),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    if "torch" in sys.modules:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info
