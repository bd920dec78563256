"""Rebuild the bundled model: train the default recipe on the shared archive, export, quantize, and copy the
int8 ONNX file and its card into the package (src/cifar10_classifier/bundled/).

    python scripts/build_bundled_model.py --data ../shared/datasets/cifar10-jpeg.tar.gz [--from-run RUN]

Training is seeded and deterministic on the same machine, so this rebuilds the same model; --from-run reuses a
finished run of the same recipe and seed (e.g. one bench/train_speed.py made) instead of training again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from cifar10_classifier.atomic import atomic_path, atomic_write_text
from cifar10_classifier.export import INT8_NAME, ExportConfig, export_run

BUNDLED = Path(__file__).resolve().parents[1] / "src" / "cifar10_classifier" / "bundled"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--recipe", default="fast")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from-run", type=Path, help="a finished run of the same recipe and seed")
    parser.add_argument("--work", type=Path, default=Path("runs/bundled"))
    args = parser.parse_args()

    run = args.from_run
    if run is None:
        run = args.work / "train"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cifar10_classifier",
                "train",
                "--recipe",
                args.recipe,
                "--data",
                args.data,
                "--seed",
                str(args.seed),
                "--out",
                str(run),
                "--force",
            ],
            check=True,
        )
    card = json.loads((run / "model.json").read_text())
    if card["recipe"] != args.recipe:
        raise SystemExit(f"error: {run} was trained with recipe {card['recipe']!r}, not {args.recipe!r}")
    summary = export_run(run, args.data, ExportConfig(out_dir=args.work / "export"))
    BUNDLED.mkdir(parents=True, exist_ok=True)
    source = Path(summary["int8"])
    with atomic_path(BUNDLED / INT8_NAME) as temp_path:
        shutil.copyfile(source, temp_path)
    atomic_write_text(BUNDLED / source.with_suffix(".json").name, source.with_suffix(".json").read_text())
    print(
        f"bundled {BUNDLED / INT8_NAME}: fp32 ONNX {summary['fp32_accuracy']:.4f}, "
        f"int8 {summary['int8_accuracy']:.4f} test accuracy"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
