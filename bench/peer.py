"""The training peer: airbench94_muon, ported to the CPU in ../shared/peers/airbench/ (run, never copied here).

    python bench/peer.py --epochs 2,4,8 [--data ARCHIVE] [--out bench/results/peer_airbench.json]

Runs the peer once per epoch count, in this process's machine and cores, and writes every point with the machine
it ran on. Benchmarks either run the peer themselves (train_speed.py --peer, the default) or reuse such a file
(--peer-result FILE), which they accept only when it was measured on the same CPU model the same UTC day.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import DEFAULT_DATA, RESULTS, bench_machine

from cifar10_classifier.atomic import atomic_write_text

PEER_DIR = Path(__file__).resolve().parents[2] / "shared" / "peers" / "airbench"
PEER_NAME = "airbench94_muon"


class PeerError(SystemExit):
    """The peer could not be run or reused; the message says why."""


def run_peer(epochs: int, data: str, seeds: int = 1, peer_dir: Path = PEER_DIR) -> dict:
    """One run of the peer's run.py -> its JSON line (accuracy with TTA, seconds of training + TTA evaluation)."""
    script = peer_dir / "run.py"
    if not script.is_file():
        raise PeerError(f"the peer is not at {script}: it lives in shared/peers/airbench beside the project")
    command = [sys.executable, str(script), "--data", str(data), "--epochs", str(epochs), "--seeds", str(seeds)]
    print(f"$ {' '.join(command)}", flush=True)
    lines: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:  # the peer's own table, as it comes
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
    if process.returncode:
        raise PeerError(f"the peer exited with code {process.returncode}")
    result = json.loads(next(line for line in reversed(lines) if line.startswith("{")))
    result["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return result


def run_peers(epoch_counts: list[int], data: str) -> dict:
    """Every epoch count, most expensive first, with the machine -> the payload a --peer-result file holds."""
    points = [run_peer(epochs, data) for epochs in sorted(epoch_counts, reverse=True)]
    return {"machine": bench_machine(), "peer": PEER_NAME, "points": sorted(points, key=lambda p: p["epochs"])}


def load_peer_result(path: Path, epoch_counts: list[int]) -> dict:
    """A peer file made on this CPU model today, holding every epoch count asked for; anything else is refused."""
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise PeerError(f"cannot read the peer result {path}: {error}") from error
    here, there = bench_machine(peak=False), payload.get("machine", {})
    if there.get("cpu") != here["cpu"] or there.get("simd") != here["simd"]:
        raise PeerError(
            f"the peer result {path} was measured on {there.get('cpu')!r} ({' '.join(there.get('simd', []))}), "
            f"not this {here['cpu']!r}: run the peer here (drop --peer-result)"
        )
    today = time.strftime("%Y-%m-%d", time.gmtime())
    stale = [p["epochs"] for p in payload.get("points", []) if not p.get("measured", "").startswith(today)]
    if stale:
        raise PeerError(f"the peer result {path} holds runs from another day (epochs {stale}): run the peer again")
    have = {p["epochs"] for p in payload.get("points", [])}
    missing = sorted(set(epoch_counts) - have)
    if missing:
        raise PeerError(f"the peer result {path} has no run at {missing} epochs (it has {sorted(have)})")
    payload["reused_from"] = str(path)
    return payload


def parse_epochs(text: str) -> list[int]:
    return sorted({int(item) for item in text.split(",") if item.strip()})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--epochs", default="2,4,8", help="comma-separated epoch counts")
    parser.add_argument("--out", type=Path, default=RESULTS / "peer_airbench.json")
    args = parser.parse_args()
    payload = run_peers(parse_epochs(args.epochs), args.data)
    atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")
    for point in payload["points"]:
        print(f"{PEER_NAME} {point['epochs']} epochs: {point['test_accuracy_tta']:.2%} in {point['train_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
