"""Helpers every benchmark shares: the machine record and writing JSON + markdown atomically."""

from __future__ import annotations

import json
import time
from pathlib import Path

from cifar10_classifier.atomic import atomic_write_text
from cifar10_classifier.machine import choose_precision, machine_info

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def peak_matmul_gflops(dtype_name: str, size: int = 2048, repeats: int = 10, rounds: int = 5) -> float:
    """The best of a few rounds of a square matmul in this dtype: a peak, and on a shared machine one round can
    land on a busy second (a single round once read 87 GFLOP/s on a CPU that reaches ~175)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9)
    return round(best, 1)


def bench_machine(peak: bool = True) -> dict:
    """What a ratio was measured on: the CPU and its SIMD flags, the precision `auto` takes here (and why), and
    the measured matmul peak in fp32 and, where it is the training precision, bf16."""
    info = machine_info()
    precision = choose_precision("auto")
    info["precision"] = precision.to_dict()
    if peak:
        info["peak_matmul_gflops"] = {"fp32": peak_matmul_gflops("fp32")}
        if precision.bf16:
            info["peak_matmul_gflops"]["bf16"] = peak_matmul_gflops("bf16")
    return info


def machine_line(machine: dict) -> str:
    """One markdown line naming the machine a table was measured on."""
    peaks = ", ".join(f"{k} {v} GFLOP/s" for k, v in machine.get("peak_matmul_gflops", {}).items())
    precision = machine.get("precision", {}).get("reason", "-")
    return (
        f"Machine: {machine['cpu']}, {machine['cores']} cores, SIMD {' '.join(machine.get('simd', []))}; "
        f"precision {precision}; matmul peak {peaks or '-'}; torch {machine.get('torch', '-')}, "
        f"onnxruntime {machine.get('onnxruntime', '-')}."
    )


def write_results(name: str, payload: dict, markdown_lines: list[str], machine: dict | None = None) -> None:
    machine = machine or machine_info()
    payload = {"machine": machine, "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **payload}
    atomic_write_text(RESULTS / f"{name}.json", json.dumps(payload, indent=2) + "\n")
    header = [f"# {name}", "", f"{machine_line(machine)} Measured {payload['measured']}.", ""]
    atomic_write_text(RESULTS / f"{name}.md", "\n".join(header + markdown_lines) + "\n")
    print("\n".join(markdown_lines))
