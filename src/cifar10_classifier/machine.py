"""What machine this is: its CPU features, the precision training takes on it, and the record of both that
model cards and every benchmark's JSON carry. Torch-free: the serving half uses it too."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any, Literal, get_args

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
# Decides what `auto` means for every run that does not pin a precision in its recipe.
PRECISION_ENV = "CIFAR10_PRECISION"
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


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


def native_bf16_flags(flags: Iterable[str] | None = None) -> list[str]:
    """The CPU flags that make bf16 matmuls run in hardware (AMX, AVX512-BF16); none: bf16 is emulated, and slow."""
    present = set(cpu_flags() if flags is None else flags)
    return [flag for flag in NATIVE_BF16_FLAGS if flag in present]


def cpu_has_native_bf16() -> bool:
    return bool(native_bf16_flags())


@dataclass(frozen=True)
class PrecisionChoice:
    """What a run computes in, and why: recorded in its config.json and card (e.g. "auto -> bf16: avx512_bf16")."""

    requested: str
    used: Literal["fp32", "bf16"]
    reason: str

    @property
    def bf16(self) -> bool:
        return self.used == "bf16"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_precision(value: str, source: str) -> str:
    if value not in PRECISIONS:
        raise ValueError(f"{source} must be one of {', '.join(PRECISIONS)}, not {value!r}")
    return value


def choose_precision(
    requested: str = "auto",
    device_type: str = "cpu",
    *,
    environ: Mapping[str, str] | None = None,
    flags: Iterable[str] | None = None,
) -> PrecisionChoice:
    """A recipe's `precision` -> the one used. fp32 or bf16 is kept as asked. `auto` follows $CIFAR10_PRECISION
    when set, else takes bf16 autocast on CUDA and on CPUs with native bf16: without it autocast runs ~20x slower
    than fp32 (measured on an AVX2-only EPYC)."""
    check_precision(requested, "precision")
    if requested != "auto":
        return PrecisionChoice(requested, requested, f"{requested}: the recipe asks for it")  # type: ignore[arg-type]
    forced = (os.environ if environ is None else environ).get(PRECISION_ENV, "").strip().lower()
    if forced and check_precision(forced, f"${PRECISION_ENV}") != "auto":
        return PrecisionChoice("auto", forced, f"auto -> {forced}: {PRECISION_ENV}={forced}")  # type: ignore[arg-type]
    if device_type == "cuda":
        return PrecisionChoice("auto", "bf16", "auto -> bf16: CUDA")
    native = native_bf16_flags(flags)
    if native:
        return PrecisionChoice("auto", "bf16", f"auto -> bf16: {' '.join(native)}")
    return PrecisionChoice("auto", "fp32", "auto -> fp32: this CPU has no native bf16 (no avx512_bf16 or amx_bf16)")


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def simd_flags(flags: Iterable[str] | None = None) -> list[str]:
    """The vector and matrix extensions a speed figure depends on (avx2, avx512*, amx*, fma, vnni)."""
    present = cpu_flags() if flags is None else flags
    return sorted(f for f in present if f.startswith(("avx", "amx")) or f in ("fma", "vnni"))


def machine_info() -> dict[str, Any]:
    info = {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "simd": simd_flags(),
        "native_bf16": native_bf16_flags(),
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
