"""Load test of `cifar10 serve`: a real server process over loopback, wrk posting multipart uploads.

Scenarios (concurrency 32, 30 s each by default):
  tile-png    a 32x32 PNG tile, the size the model was trained on
  photo-jpeg  a 640x480 JPEG photo, decoded with JPEG draft mode then resized to 32x32

The load generator is wrk (Debian package `wrk`, `apt-get install wrk`), one thread, in its own process on the
same cores as the server: its CPU time is taken from the server, so the numbers are a floor for a server with
the machine to itself. The photo scenario also checks that cheap decoding keeps accuracy: the same test images,
upscaled to 640x480 JPEG photos, are classified with draft-mode decoding and with a full decode.

The peer, in the same invocation on the same cores with the same model and wrk scenarios, is a bare FastAPI +
ONNX Runtime endpoint (bench/peer_serve.py: one session.run per request, no batching, limits or metrics, the same
number of uvicorn workers). Each server runs alone while it is measured, in interleaved rounds (ours, the peer,
ours, ...; --rounds, default 3, each --duration / --rounds seconds a scenario): a shared CPU's speed moves by tens
of percent within minutes, and one slow spell on one side would move a single ours-then-peer comparison. Every
scenario records the rounds' median req/s and p99 (each round's too), `rps_ratio_vs_peer` and both p99s; absolute
figures are context for the machine named beside them.

Writes bench/results/serve_load.json and bench/results/serve_load.md.
    python bench/serve_load.py [--model PATH] [--duration 30] [--workers 2] [--no-peer]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from common import bench_machine
from PIL import Image

from cifar10_classifier import CLASSES
from cifar10_classifier.atomic import atomic_write_text
from cifar10_classifier.cli.serve import register as register_serve
from cifar10_classifier.cli.serve import resolve_settings
from cifar10_classifier.inference import Predictor, bundled_model_path
from cifar10_classifier.preprocess import IMAGE_SIZE, decode_image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
PHOTO_SIZE = (640, 480)
BOUNDARY = "cifar10-bench-boundary-7f3a"

# wrk's Lua: post the same multipart body on every request; at the end print one JSON line we parse.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=%(boundary)s"
local file = io.open("%(body_path)s", "rb")
wrk.body = file:read("*a")
file:close()

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nRESULT {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d, ' ..
    '"errors": {"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_model(folder: Path) -> Path:
    """The test suite's tiny ONNX model, so the bench runs before a real model is bundled."""
    spec = importlib.util.spec_from_file_location("_bench_conftest", ROOT / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_tiny_onnx(folder / "tiny.onnx")


def test_tiles(data: Path, per_class: int) -> list[tuple[bytes, int]]:
    """(JPEG bytes, label) of the first `per_class` test images of each class in the shared archive."""
    wanted = {f"test/{name}/{index:04d}.jpg": label for label, name in enumerate(CLASSES) for index in range(per_class)}
    found: list[tuple[bytes, int]] = []
    with tarfile.open(data, "r:gz") as archive:
        for member in archive:
            label = wanted.get(member.name.removeprefix("./"))
            if label is not None:
                found.append((archive.extractfile(member).read(), label))
                if len(found) == len(wanted):
                    break
    return found


def synthetic_tiles(count: int) -> list[tuple[bytes, int]]:
    rng = np.random.default_rng(0)
    tiles = []
    for index in range(count):
        pixels = rng.integers(0, 256, size=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        tiles.append((encode(Image.fromarray(pixels), "PNG"), index % len(CLASSES)))
    return tiles


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def as_photo(tile: bytes) -> bytes:
    """A 32x32 tile upscaled to a 640x480 JPEG: a photo-sized upload of a known class."""
    image = Image.open(io.BytesIO(tile)).convert("RGB")
    return encode(image.resize(PHOTO_SIZE, Image.Resampling.BICUBIC), "JPEG", quality=90)


def full_decode(data: bytes, predictor: Predictor) -> np.ndarray:
    """The photo decoded at full size (no draft mode), then the same resize: the reference draft mode must match."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    filters = {"box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR, "lanczos": Image.Resampling.LANCZOS}
    resized = image.resize((IMAGE_SIZE, IMAGE_SIZE), filters[predictor.decode_options.resize_filter])
    return np.asarray(resized, dtype=np.uint8)


def photo_accuracy(model: Path, tiles: list[tuple[bytes, int]]) -> dict:
    predictor = Predictor(model)
    labels = np.array([label for _, label in tiles])
    photos = [as_photo(tile) for tile, _ in tiles]

    def accuracy(images: list[np.ndarray]) -> float:
        predicted = predictor.predict_images(np.stack(images)).argmax(axis=1)
        return round(float((predicted == labels).mean()), 4)

    draft_images = [predictor.decode(photo) for photo in photos]
    full_images = [full_decode(photo, predictor) for photo in photos]
    started = time.perf_counter()
    for photo in photos:
        decode_image(photo, predictor.decode_options)
    draft_ms = (time.perf_counter() - started) / len(photos) * 1000
    started = time.perf_counter()
    for photo in photos:
        full_decode(photo, predictor)
    full_ms = (time.perf_counter() - started) / len(photos) * 1000
    draft_pred = predictor.predict_images(np.stack(draft_images)).argmax(axis=1)
    full_pred = predictor.predict_images(np.stack(full_images)).argmax(axis=1)
    return {
        "images": len(tiles),
        "accuracy_tile": accuracy([predictor.decode(tile) for tile, _ in tiles]),
        "accuracy_photo_draft_decode": accuracy(draft_images),
        "accuracy_photo_full_decode": accuracy(full_images),
        "agreement_draft_vs_full": round(float((draft_pred == full_pred).mean()), 4),
        "decode_ms_draft": round(draft_ms, 3),
        "decode_ms_full": round(full_ms, 3),
    }


def multipart_body(filename: str, content_type: str, data: bytes) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def process_tree_rss_mb(pid: int) -> float:
    """Resident memory of the server: the uvicorn supervisor plus its workers."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.is_file():
        pids += [int(child) for child in children.read_text().split()]
    total_kb = 0
    for each in pids:
        status = Path(f"/proc/{each}/status")
        if status.is_file():
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return round(total_kb / 1024, 1)


def start_server(model: Path, port: int, workers: int, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "cifar10_classifier", "serve", "--model", str(model), "--port", str(port)]
    command += ["--workers", str(workers), "--log-level", "warning", *extra]
    return wait_ready(subprocess.Popen(command, cwd=ROOT), f"http://127.0.0.1:{port}/readyz")


def start_peer(model: Path, port: int, workers: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "uvicorn", "peer_serve:app", "--app-dir", str(ROOT / "bench")]
    command += ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    server = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PEER_MODEL": str(model)})
    return wait_ready(server, f"http://127.0.0.1:{port}/openapi.json")


def wait_ready(server: subprocess.Popen, url: str) -> subprocess.Popen:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.terminate()
    raise SystemExit("the server was not ready within 60 s")


def run_wrk(url: str, body_path: Path, duration: float, concurrency: int, threads: int, folder: Path) -> dict:
    script = folder / "post.lua"
    script.write_text(WRK_SCRIPT % {"boundary": BOUNDARY, "body_path": str(body_path)})
    command = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{duration:g}s", "--timeout", "5s", "-s", str(script), url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def scenario(name: str, result: dict, concurrency: int, rss_start: float, rss_end: float) -> dict:
    seconds = result["duration_us"] / 1e6
    return {
        "name": name,
        "concurrency": concurrency,
        "duration_s": round(seconds, 2),
        "requests": result["requests"],
        "requests_per_second": round(result["requests"] / seconds, 1),
        "p50_ms": round(result["p50_us"] / 1000, 2),
        "p99_ms": round(result["p99_us"] / 1000, 2),
        "errors": sum(result["errors"].values()),
        "rss_mb_start": rss_start,
        "rss_mb_end": rss_end,
    }


def markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [
        "# Serving load test",
        "",
        f"{machine['cpu']} ({machine['cores']} cores), {machine['server']}; client: {machine['client']}.",
        f"Model: {machine['model']}. {report.get('rounds', 1)} interleaved rounds (ours, the peer, ...): medians.",
        "",
        "| scenario | concurrency | duration s | requests | req/s | p50 ms | p99 ms | errors | RSS MB start "
        "| RSS MB end |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["scenarios"]:
        lines.append(
            f"| {row['name']} | {row['concurrency']} | {row['duration_s']} | {row['requests']} | "
            f"{row['requests_per_second']} | {row['p50_ms']} | {row['p99_ms']} | {row['errors']} | "
            f"{row['rss_mb_start']} | {row['rss_mb_end']} |"
        )
    if report.get("vs_peer"):
        lines += [
            "",
            f"Peer: {report['peer']['server']}, measured in this run on the same cores and model.",
            "",
            "| scenario | req/s vs peer | ours req/s | peer req/s | ours p99 ms | peer p99 ms | p99 vs peer | "
            "target met | ours req/s by round | peer req/s by round |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|---|",
        ]
        rounds = {
            side: {row["name"]: row.get("rounds", []) for row in rows}
            for side, rows in (("ours", report["scenarios"]), ("peer", report["peer"]["scenarios"]))
        }
        for name, row in report["vs_peer"].items():
            ours_rounds, peer_rounds = (
                ", ".join(f"{entry['requests_per_second']:.0f}" for entry in rounds[side][name])
                for side in ("ours", "peer")
            )
            lines.append(
                f"| {name} | {row['rps_ratio_vs_peer']:.2f}x | {row['requests_per_second']} | "
                f"{row['peer_requests_per_second']} | {row['p99_ms']} | {row['peer_p99_ms']} | "
                f"{row['p99_ratio_vs_peer']:.2f}x | {row['target_met']} | {ours_rounds} | {peer_rounds} |"
            )
        lines.append("")
        lines.append("Target: at least 2x the peer's req/s and at most half its p99, every feature on.")
    check = report.get("photo_accuracy")
    if check:
        lines += [
            "",
            f"Draft-mode decoding, {check['images']} test images as 640x480 JPEG photos: accuracy "
            f"{check['accuracy_photo_draft_decode']:.2%} with draft mode vs {check['accuracy_photo_full_decode']:.2%} "
            f"with a full decode ({check['agreement_draft_vs_full']:.2%} same answers; {check['accuracy_tile']:.2%} "
            f"on the original tiles); decode {check['decode_ms_draft']} ms vs {check['decode_ms_full']} ms.",
        ]
    return "\n".join(lines) + "\n"


def wrk_version() -> str:
    completed = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return (completed.stdout or completed.stderr).split("[")[0].strip() or "wrk"


def server_settings(model: Path, workers: int, extra: list[str]) -> dict:
    """The settings the server will resolve from these flags (and the environment), to record beside the results."""
    parser = argparse.ArgumentParser()
    register_serve(parser.add_subparsers())
    args = parser.parse_args(["serve", "--model", str(model), "--workers", str(workers), *extra])
    settings = resolve_settings(args)
    keys = ("workers", "threads", "max_batch_size", "max_wait_ms", "max_in_flight", "request_timeout_s", "spin")
    return {key: getattr(settings, key) for key in keys}


def load_scenarios(server: subprocess.Popen, port: int, names: list[str], folder: Path, args) -> list[dict]:
    """Every scenario against one running server, which is stopped afterwards (so it takes no CPU from the next)."""
    rows = []
    try:
        url = f"http://127.0.0.1:{port}/predict"
        for name in names:
            body_path = folder / f"{name}.body"
            if args.warmup > 0:
                run_wrk(url, body_path, args.warmup, args.concurrency, args.wrk_threads, folder)
            rss_start = process_tree_rss_mb(server.pid)
            result = run_wrk(url, body_path, args.duration, args.concurrency, args.wrk_threads, folder)
            rows.append(scenario(name, result, args.concurrency, rss_start, process_tree_rss_mb(server.pid)))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return rows


def median_of_rounds(rounds: list[list[dict]]) -> list[dict]:
    """Per scenario, the rounds' median req/s and p99 (each its own median) and their summed requests and errors;
    each round's figures are kept under "rounds"."""
    merged = []
    for index, first in enumerate(rounds[0]):
        rows = [round_rows[index] for round_rows in rounds]
        merged.append(
            {
                **first,
                "duration_s": round(sum(row["duration_s"] for row in rows), 2),
                "requests": sum(row["requests"] for row in rows),
                "requests_per_second": float(np.median([row["requests_per_second"] for row in rows])),
                "p50_ms": float(np.median([row["p50_ms"] for row in rows])),
                "p99_ms": float(np.median([row["p99_ms"] for row in rows])),
                "errors": sum(row["errors"] for row in rows),
                "rss_mb_end": rows[-1]["rss_mb_end"],
                "rounds": [{key: row[key] for key in ("requests_per_second", "p99_ms", "errors")} for row in rows],
            }
        )
    return merged


def compare_with_peer(ours: list[dict], peer: list[dict]) -> dict:
    """Per scenario: our req/s over the peer's and both p99s; the target is >= 2x its req/s at <= half its p99."""
    theirs = {row["name"]: row for row in peer}
    comparison = {}
    for row in ours:
        other = theirs[row["name"]]
        rps_ratio = row["requests_per_second"] / max(other["requests_per_second"], 1e-9)
        p99_ratio = row["p99_ms"] / max(other["p99_ms"], 1e-9)
        comparison[row["name"]] = {
            "rps_ratio_vs_peer": round(rps_ratio, 2),
            "requests_per_second": row["requests_per_second"],
            "peer_requests_per_second": other["requests_per_second"],
            "p99_ms": row["p99_ms"],
            "peer_p99_ms": other["p99_ms"],
            "p99_ratio_vs_peer": round(p99_ratio, 2),
            "errors": row["errors"],
            "peer_errors": other["errors"],
            "target_met": rps_ratio >= 2.0 and p99_ratio <= 0.5 and row["errors"] == 0,
        }
    return comparison


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="ONNX model (default: bundled; else a tiny test model)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="archive of test images for the uploads")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per scenario, over all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of ours and the peer's")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured load first")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="server workers")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (they share the server's cores)")
    parser.add_argument("--scenarios", default="tile-png,photo-jpeg")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `cifar10 serve` flag (repeatable)")
    parser.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True, help="measure the peer too")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")

    with tempfile.TemporaryDirectory(prefix="serve-load-") as temp:
        folder = Path(temp)
        model = args.model or (bundled_model_path() if bundled_model_path().is_file() else tiny_model(folder))
        tiles = test_tiles(args.data, per_class=20) if args.data.is_file() else synthetic_tiles(200)
        tile = next(data for data, label in tiles if label == CLASSES.index("cat"))
        uploads = {
            "tile-png": multipart_body("tile.png", "image/png", encode(Image.open(io.BytesIO(tile)), "PNG")),
            "photo-jpeg": multipart_body("photo.jpg", "image/jpeg", as_photo(tile)),
        }
        predictor = Predictor(model)
        report = {
            "machine": {
                **bench_machine(peak=False),
                "client": f"{wrk_version()} -t{args.wrk_threads} -c{args.concurrency}, same cores as the server",
                "server": f"cifar10 serve, {args.workers} workers, uvicorn httptools + uvloop",
                "model": f"{predictor.name} {predictor.version} ({model.name})",
                "server_settings": server_settings(model, args.workers, args.server_arg),
            },
            "scenarios": [],
        }
        if args.data.is_file():
            report["photo_accuracy"] = photo_accuracy(model, tiles)
        scenarios = args.scenarios.split(",")
        for name in scenarios:
            (folder / f"{name}.body").write_bytes(uploads[name])
        port = free_port()
        round_args = argparse.Namespace(**{**vars(args), "duration": args.duration / args.rounds})
        ours_rounds, peer_rounds = [], []
        for _ in range(args.rounds):
            server = start_server(model, port, args.workers, args.server_arg)
            ours_rounds.append(load_scenarios(server, port, scenarios, folder, round_args))
            if args.peer:
                peer = start_peer(model, port, args.workers)
                peer_rounds.append(load_scenarios(peer, port, scenarios, folder, round_args))
        report["rounds"] = args.rounds
        report["scenarios"] = median_of_rounds(ours_rounds)
        if args.peer:
            report["peer"] = {"server": f"bench/peer_serve.py, {args.workers} uvicorn workers, same model"}
            report["peer"]["scenarios"] = median_of_rounds(peer_rounds)
            report["vs_peer"] = compare_with_peer(report["scenarios"], report["peer"]["scenarios"])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out_dir / "serve_load.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(args.out_dir / "serve_load.md", markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
