"""Helpers every benchmark shares: the machine record and writing JSON + markdown atomically."""

from __future__ import annotations

import json
import time
from pathlib import Path

from cifar10_classifier.atomic import atomic_write_text
from cifar10_classifier.machine import machine_info

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def write_results(name: str, payload: dict, markdown_lines: list[str]) -> None:
    payload = {"machine": machine_info(), "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **payload}
    atomic_write_text(RESULTS / f"{name}.json", json.dumps(payload, indent=2) + "\n")
    machine = payload["machine"]
    header = [
        f"# {name}",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, "
        f"SIMD {' '.join(machine.get('simd', []))}; torch {machine.get('torch', '-')}, "
        f"onnxruntime {machine.get('onnxruntime', '-')}. Measured {payload['measured']}.",
        "",
    ]
    atomic_write_text(RESULTS / f"{name}.md", "\n".join(header + markdown_lines) + "\n")
    print("\n".join(markdown_lines))
