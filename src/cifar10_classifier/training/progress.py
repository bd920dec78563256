"""Training progress for a person: one line per epoch, and a live bar within the epoch on a terminal."""

from __future__ import annotations

import os
import sys
import time


class Progress:
    """One line per epoch; a live bar within the epoch when attached to a terminal; quiet unless rank 0."""

    def __init__(self, enabled: bool, total_epochs: int):
        self.enabled = enabled
        self.live = enabled and sys.stderr.isatty() and not os.environ.get("CI")
        self.total_epochs = total_epochs

    def batch(self, epoch: int, done: int, total: int, started: float) -> None:
        if not self.live:
            return
        elapsed = time.perf_counter() - started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        width = 30
        filled = int(width * done / max(1, total))
        print(
            f"\repoch {epoch:>3} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
            f"{rate:,.0f} img/s eta {eta:4.0f}s",
            end="",
            file=sys.stderr,
            flush=True,
        )

    def epoch(self, row: dict, eta_seconds: float) -> None:
        if not self.enabled:
            return
        if self.live:
            print("\r\033[K", end="", file=sys.stderr)
        val = (
            f" val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.4f}"
            if row.get("val_loss") is not None
            else ""
        )
        print(
            f"epoch {row['epoch']:>3}/{self.total_epochs} train_loss {row['train_loss']:.4f} "
            f"train_acc {row['train_accuracy']:.4f}{val} lr {row['lr']:.3g} {row['images_per_second']:,.0f} img/s "
            f"elapsed {row['elapsed_seconds']:.0f}s eta {eta_seconds:.0f}s",
            flush=True,
        )
